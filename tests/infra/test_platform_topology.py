"""A platform team's own regions: the components built from the public API for a topology of theirs.

Frankfurt (EU, strict residency) and Montreal (Canada) are regions this repository does not deploy. The program
below is what such a team writes: no stack file, no config reader, no module of `infra/` edited or patched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest

from contract.topology import EU_OUTLYING_COUNTRIES, EUROPEAN_UNION, Jurisdiction, Region, Topology
from infra import offline
from infra.cluster import Cluster, ClusterArgs
from infra.config import NodePoolConfig, PoolSize
from infra.dns import GeoDns, GeoDnsArgs
from infra.endpoints import RegionalEndpoint
from infra.kms import RegionKey, RegionKeyArgs
from infra.model_store import ModelStore, ModelStoreArgs
from infra.node_pools import CPU_AMI_TYPE, GPU_AMI_TYPE, GPU_TAINT, PoolSpec
from infra.replication import ModelReplication, ModelReplicationArgs, RegionalStore

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "210987654321"
PROJECT = "acme-speech"
FRANKFURT = Region(
    key="frankfurt", aws_region="eu-central-1", jurisdiction="eu", timezone="Europe/Berlin",
    continents=("EU", "AF"), cloudflare_regions=("WEU", "EEU", "NAF", "SAF", "ME"), failover=("montreal",),
    countries=EU_OUTLYING_COUNTRIES,
)  # fmt: skip
MONTREAL = Region(
    key="montreal", aws_region="ca-central-1", jurisdiction="ca", timezone="America/Toronto",
    continents=("NA", "SA", "AN", "AS", "OC"), cloudflare_regions=("WNAM", "ENAM", "NSAM", "SSAM", "NEAS", "SEAS",
    "SAS", "OC"), failover=("frankfurt",),
)  # fmt: skip
TOPOLOGY = Topology(
    regions=(FRANKFURT, MONTREAL),
    jurisdictions=(EUROPEAN_UNION, Jurisdiction(code="ca", name="Canada (PIPEDA)", is_strict_residency=False)),
    default_region="montreal",
)
POOLS = (
    PoolSpec(
        role="gpu", ami_type=GPU_AMI_TYPE, capacity_type="ON_DEMAND",
        pool=NodePoolConfig(("g6.2xlarge",), PoolSize(1, 2, 6)), disk_size_gib=100,
        labels={"speech.io/pool": "gpu"}, taints=(GPU_TAINT,),
    ),
    PoolSpec(
        role="cpu", ami_type=CPU_AMI_TYPE, capacity_type="ON_DEMAND",
        pool=NodePoolConfig(("m7i.large",), PoolSize(2, 2, 4)), disk_size_gib=50, labels={"speech.io/pool": "cpu"},
    ),
)  # fmt: skip


def platform_program() -> None:
    """Key, model store and (in Montreal) a cluster per region, replication between the stores; DNS over endpoints
    the team runs itself."""
    stores = {}
    for region in TOPOLOGY.regions:
        key = RegionKey(
            f"{region.key}-key", RegionKeyArgs(topology=TOPOLOGY, region=region, project=PROJECT, account_id=ACCOUNT)
        )
        store = ModelStore(
            f"{region.key}-store",
            ModelStoreArgs(
                topology=TOPOLOGY,
                region=region,
                project=PROJECT,
                account_id=ACCOUNT,
                kms_key_arn=key.key_arn,
                s3_vpc_endpoint_id=f"vpce-{region.key}",
            ),
        )
        stores[region.key] = RegionalStore(region, store.bucket_name, key.key_arn)
    ModelReplication(
        "acme-replication", ModelReplicationArgs(topology=TOPOLOGY, project=PROJECT, account_id=ACCOUNT, stores=stores)
    )
    Cluster(
        "montreal-cluster",
        ClusterArgs(
            region=MONTREAL,
            cluster_name="acme-montreal",
            kubernetes_version="1.34",
            pools=POOLS,
            subnet_ids=["subnet-a", "subnet-b"],
            kms_key_arn=f"arn:aws:kms:ca-central-1:{ACCOUNT}:key/montreal",
        ),
    )
    endpoints = {
        r.key: RegionalEndpoint(
            region=r,
            hostname=f"{r.key}.speech.acme.example",
            health_check_id=f"hc-{r.key}",
            load_balancer_dns_name=f"lb-{r.key}.elb.{r.aws_region}.amazonaws.com",
            load_balancer_zone_id="ZLBZONE",
            cloudflare_pool_id=None,
        )
        for r in TOPOLOGY.regions
    }
    dns = GeoDns(
        "acme-dns",
        GeoDnsArgs(topology=TOPOLOGY, domain="speech.acme.example", hosted_zone_id="ZACME", endpoints=endpoints),
    )
    pulumi.export("routing", dns.routing)


@pytest.fixture(scope="module")
def graph() -> offline.Graph:
    return offline.run_program("acme", platform_program, config={})


def _policy(graph: offline.Graph, name: str) -> dict:
    return json.loads(graph.named(name).inputs["policy"])


def test_eu_users_are_answered_only_by_the_eu_region_even_though_it_fails_over_to_montreal(graph):
    routing = graph.exports["routing"]
    assert routing["continent-EU"] == ["frankfurt"]
    for country in EU_OUTLYING_COUNTRIES:
        assert routing[f"country-{country}"] == ["frankfurt"], country
    assert routing["continent-AF"] == ["frankfurt", "montreal"], "unrestricted users still fail over"
    assert routing["default"] == ["montreal", "frankfurt"]
    eu_records = [
        r
        for r in graph.of_type("aws:route53/record:Record")
        if r.inputs.get("setIdentifier", "").startswith("frankfurt-") and r.inputs["name"].startswith("frankfurt.chain")
    ]
    assert eu_records, "the EU chain has its own records"
    for record in eu_records:
        assert {a["name"] for a in record.inputs["aliases"]} == {"lb-frankfurt.elb.eu-central-1.amazonaws.com"}


def test_no_store_replicates_across_the_eu_boundary_and_the_eu_store_admits_only_frankfurts_roles(graph):
    assert not graph.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig"), (
        "EU models stay in the EU, and Montreal's do not enter the EU store"
    )
    (fence,) = [
        s for s in _policy(graph, "frankfurt-store-policy")["Statement"] if s["Sid"] == "DenyDataToOtherPrincipals"
    ]
    admitted = fence["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    assert sorted(a.rsplit("/", 1)[1] for a in admitted) == [f"{PROJECT}-publisher-eu", f"{PROJECT}-serving-frankfurt"]
    (vpce,) = [
        s for s in _policy(graph, "frankfurt-store-policy")["Statement"] if s["Sid"] == "DenyDataOutsideTheVpcEndpoint"
    ]
    assert vpce["Condition"]["StringNotEquals"] == {"aws:SourceVpce": "vpce-frankfurt"}


def test_every_regional_resource_lives_in_its_own_aws_region_with_its_jurisdiction_tag(graph):
    for resource in graph.resources:
        region = resource.inputs.get("region")
        if region is None:
            continue
        home = TOPOLOGY.region_for_aws(region)
        tags = resource.inputs.get("tags") or {}
        if "speech.io/jurisdiction" in tags:
            assert tags["speech.io/jurisdiction"] == home.jurisdiction, resource.name


def test_the_cluster_is_built_from_the_pool_specs_and_version_it_was_given(graph):
    (cluster,) = graph.of_type("aws:eks/cluster:Cluster")
    assert (cluster.inputs["region"], cluster.inputs["version"], cluster.inputs["name"]) == (
        "ca-central-1",
        "1.34",
        "acme-montreal",
    )
    groups = {g.name: g.inputs for g in graph.of_type("aws:eks/nodeGroup:NodeGroup")}
    assert sorted(groups) == ["montreal-cluster-cpu-group", "montreal-cluster-gpu-group"]
    gpu = groups["montreal-cluster-gpu-group"]
    assert gpu["instanceTypes"] == ["g6.2xlarge"]
    assert gpu["scalingConfig"] == {"minSize": 1, "desiredSize": 2, "maxSize": 6}
    assert gpu["tags"]["speech.io/jurisdiction"] == "ca"
    assert not graph.of_type("aws:autoscaling/schedule:Schedule"), "no night schedule was asked for"


def test_a_dns_only_program_never_imports_cloudflare():
    code = "import sys, infra.dns, infra.endpoints; print('pulumi_cloudflare' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_readmes_import_example_builds_a_replicated_eu_store_under_mocks():
    text = (REPO / "README.md").read_text()
    example = text.split("## Use the components in your own program", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    graph = offline.run_program("readme", lambda: exec(example, {}), config={})
    (bucket,) = graph.of_type("aws:s3/bucket:Bucket")
    assert bucket.inputs["region"] == "eu-central-1"
    assert bucket.inputs["tags"]["speech.io/jurisdiction"] == "eu"
    assert not graph.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig"), "EU models stay in the EU"
