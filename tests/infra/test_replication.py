"""Model replication, owned by the global stack: one pass of regional stacks then `global`, only where allowed."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from contract.topology import DEFAULT_TOPOLOGY, Region, Topology
from infra import offline
from tests.conftest import REGIONAL_STACKS

REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
PROJECT = offline.project_name()
ACCOUNT = offline.MOCK_ACCOUNT_ID
_STORE_ARN = re.compile(rf"^arn:aws:s3:::{re.escape(PROJECT)}-models-(?P<key>[a-z0-9-]+)-(?P<account>\d{{12}})$")


def _region_of_bucket_arn(arn: str, topology: Topology = DEFAULT_TOPOLOGY) -> Region:
    """Read a destination back to the region it lies in, by the store naming scheme alone."""
    match = _STORE_ARN.match(arn)
    assert match, f"{arn} is not a model store ARN"
    return topology.region(match["key"])


def _configs(graph: offline.Graph) -> dict[str, offline.Registration]:
    """Replication configurations by source region key."""
    return {c.inputs["bucket"].split("-models-")[1].rsplit("-", 1)[0]: c for c in graph.of_type(REPLICATION)}


def _routes(graph: offline.Graph, topology: Topology = DEFAULT_TOPOLOGY) -> dict[str, list[str]]:
    return {
        source: [_region_of_bucket_arn(rule["destination"]["bucket"], topology).key for rule in c.inputs["rules"]]
        for source, c in _configs(graph).items()
    }


def test_the_global_stack_replicates_exactly_the_topologys_routes(program):
    graph = program("global")
    expected = {
        r.key: [t.key for t in DEFAULT_TOPOLOGY.replication_targets(r)]
        for r in DEFAULT_TOPOLOGY.regions
        if DEFAULT_TOPOLOGY.replication_targets(r)
    }
    assert _routes(graph) == expected == graph.exports["replication"]
    assert expected == {"us-west": ["ap-northeast"], "ap-northeast": ["us-west"]}


def test_nothing_replicates_into_or_out_of_the_eu(program):
    for source, targets in _routes(program("global")).items():
        jurisdictions = {DEFAULT_TOPOLOGY.region(k).jurisdiction for k in (source, *targets)}
        assert "eu" not in jurisdictions, f"{source} -> {targets}"


@pytest.mark.parametrize("source", ["us-west", "ap-northeast"])
def test_each_rule_lives_in_its_source_region_and_targets_buckets_the_regional_stacks_export(program, source):
    config = _configs(program("global"))[source]
    region = DEFAULT_TOPOLOGY.region(source)
    assert config.inputs["region"] == region.aws_region
    assert config.inputs["bucket"] == program(source).exports["modelBucketName"]
    for rule in config.inputs["rules"]:
        target = _region_of_bucket_arn(rule["destination"]["bucket"])
        assert rule["destination"]["bucket"] == program(target.key).exports["modelBucketArn"]
        assert (
            rule["destination"]["encryptionConfiguration"]["replicaKmsKeyId"]
            == program(target.key).exports["kmsKeyArn"]
        ), "replicas are re-encrypted with the destination region's own key"


def test_replication_meets_the_15_minute_rtc_for_models_with_metrics(program):
    for config in program("global").of_type(REPLICATION):
        rules = config.inputs["rules"]
        for rule in rules:
            assert rule["status"] == "Enabled"
            assert rule["filter"] == {"prefix": "models/"}
            assert rule["deleteMarkerReplication"] == {"status": "Enabled"}
            assert rule["sourceSelectionCriteria"] == {"sseKmsEncryptedObjects": {"status": "Enabled"}}
            destination = rule["destination"]
            assert destination["replicationTime"] == {"status": "Enabled", "time": {"minutes": 15}}
            assert destination["metrics"] == {"status": "Enabled", "eventThreshold": {"minutes": 15}}
        priorities = [rule["priority"] for rule in rules]
        assert len(set(priorities)) == len(priorities), "S3 rejects rules that share a priority"


@pytest.mark.parametrize("source", ["us-west", "ap-northeast"])
def test_replication_role_reads_its_source_and_writes_only_into_its_targets(program, source):
    graph = program("global")
    role = graph.named(f"speech-replication-{source}-role")
    assert role.inputs["name"] == f"{PROJECT}-model-replication-{source}"
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "s3.amazonaws.com"}]
    assert [s["Condition"] for s in trust] == [{"StringEquals": {"aws:SourceAccount": ACCOUNT}}]
    assert graph.named(f"speech-replication-{source}-policy").urn in _configs(graph)[source].dependencies

    statements = json.loads(graph.named(f"speech-replication-{source}-policy").inputs["policy"])["Statement"]
    targets = DEFAULT_TOPOLOGY.replication_targets(DEFAULT_TOPOLOGY.region(source))
    writes = {s["Resource"] for s in statements if "s3:ReplicateObject" in s["Action"]}
    assert writes == {f"arn:aws:s3:::{PROJECT}-models-{t.key}-{ACCOUNT}/models/*" for t in targets}
    (decrypt,) = [s for s in statements if s["Action"] == "kms:Decrypt"]
    assert decrypt["Resource"] == program(source).exports["kmsKeyArn"]
    encrypts = {s["Resource"] for s in statements if "kms:Encrypt" in s["Action"]}
    assert encrypts == {program(t.key).exports["kmsKeyArn"] for t in targets}


def test_every_regional_stack_exports_what_the_global_stack_reads(program):
    for stack in REGIONAL_STACKS:
        assert {"modelBucketName", "modelBucketArn", "kmsKeyArn"} <= set(program(stack).exports)


def _global_for(topology: Topology, configs: dict[str, dict]) -> offline.Graph:
    config = offline.stack_config("global")
    config["speech:deployOrder"] = [*config["speech:deployOrder"], *configs]  # a new region is deployed too
    return offline.run_stack("global", topology, config=config, regional_configs=configs)


def _regional_config(base: str, region: Region, cidr: str) -> dict:
    raw = offline.stack_config(base)
    raw.update({"aws:region": region.aws_region, "speech:region": region.key, "speech:vpcCidr": cidr})
    raw["speech:jurisdiction"] = region.jurisdiction
    return raw


def test_a_second_eu_region_replicates_with_the_first_and_with_nobody_else():
    eu_west = DEFAULT_TOPOLOGY.region("eu-west")
    eu_central = dataclasses.replace(
        eu_west, key="eu-central", aws_region="eu-central-1", timezone="Europe/Berlin",
        continents=(), cloudflare_regions=(), countries=(), failover=("eu-west",),
    )  # fmt: skip
    four = dataclasses.replace(DEFAULT_TOPOLOGY, regions=(*DEFAULT_TOPOLOGY.regions, eu_central))
    graph = _global_for(four, {"eu-central": _regional_config("eu-west", eu_central, "10.21.0.0/16")})
    assert _routes(graph, four) == {
        "us-west": ["ap-northeast"],
        "eu-west": ["eu-central"],
        "ap-northeast": ["us-west"],
        "eu-central": ["eu-west"],
    }


def test_removing_a_region_from_the_topology_removes_every_rule_that_points_at_it():
    without_jp = dataclasses.replace(
        DEFAULT_TOPOLOGY,
        regions=tuple(
            dataclasses.replace(r, failover=tuple(k for k in r.failover if k != "ap-northeast"))
            for r in DEFAULT_TOPOLOGY.regions
            if r.key != "ap-northeast"
        ),
        jurisdictions=tuple(j for j in DEFAULT_TOPOLOGY.jurisdictions if j.code != "jp"),
    )
    without_jp = dataclasses.replace(
        without_jp,
        regions=tuple(
            dataclasses.replace(r, continents=(*r.continents, "AS", "OC"), cloudflare_regions=(*r.cloudflare_regions,
                                "NEAS", "SEAS", "SAS", "OC")) if r.key == "us-west" else r
            for r in without_jp.regions
        ),
    )  # fmt: skip
    config = offline.stack_config("global")
    config["speech:publishers"] = {k: v for k, v in config["speech:publishers"].items() if k != "jp"}
    config["speech:deployOrder"] = [k for k in config["speech:deployOrder"] if k != "ap-northeast"]
    graph = offline.run_stack("global", without_jp, config=config)
    assert _routes(graph, without_jp) == {}, "us-west had only ap-northeast to replicate to"
    assert not [r for r in graph.resources if "ap-northeast" in json.dumps(r.inputs)]
