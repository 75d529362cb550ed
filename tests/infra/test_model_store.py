"""The regional model store: encryption, privacy, versions, and replication only where the topology allows."""

from __future__ import annotations

import dataclasses
import json
import re

import pulumi
import pytest

from contract.topology import DEFAULT_TOPOLOGY, Region, Topology
from infra import model_store, offline
from tests.conftest import REGIONAL_STACKS

BUCKET = "aws:s3/bucket:Bucket"
REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
PROJECT = offline.project_name()
ACCOUNT = offline.MOCK_ACCOUNT_ID
_STORE_ARN = re.compile(rf"^arn:aws:s3:::{re.escape(PROJECT)}-models-(?P<key>[a-z0-9-]+)-(?P<account>\d{{12}})$")


def _region_of_bucket_arn(arn: str, topology: Topology = DEFAULT_TOPOLOGY) -> Region:
    """Read a destination back to the region it lies in, by the store naming scheme alone."""
    match = _STORE_ARN.match(arn)
    assert match, f"{arn} is not a model store ARN"
    return topology.region(match["key"])


def _only(graph: offline.Graph, type_: str) -> offline.Registration:
    (resource,) = graph.of_type(type_)
    return resource


def _rules(graph: offline.Graph) -> list[dict]:
    return [rule for config in graph.of_type(REPLICATION) for rule in config.inputs["rules"]]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_bucket_is_named_from_project_region_and_account_in_the_stacks_region(program, stack):
    graph = program(stack)
    bucket = _only(graph, BUCKET)
    assert bucket.inputs["bucket"] == f"{PROJECT}-models-{stack}-{ACCOUNT}" == graph.exports["modelBucketName"]
    assert bucket.inputs["region"] == DEFAULT_TOPOLOGY.region(stack).aws_region
    assert graph.exports["modelBucketArn"] == f"arn:aws:s3:::{bucket.inputs['bucket']}"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_bucket_keeps_every_version(program, stack):
    versioning = _only(program(stack), "aws:s3/bucketVersioning:BucketVersioning")
    assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"
    assert versioning.inputs["bucket"] == program(stack).exports["modelBucketName"]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_objects_are_encrypted_with_the_regions_kms_key(program, stack):
    graph = program(stack)
    encryption = _only(graph, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    (rule,) = encryption.inputs["rules"]
    default = rule["applyServerSideEncryptionByDefault"]
    assert default == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": graph.exports["kmsKeyArn"]}
    assert rule["bucketKeyEnabled"] is True


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_public_access_is_blocked_every_way(program, stack):
    block = _only(program(stack), "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    for setting in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block.inputs[setting] is True, setting


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_bucket_policy_refuses_every_request_without_tls(program, stack):
    graph = program(stack)
    policy = json.loads(_only(graph, "aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    arn = graph.exports["modelBucketArn"]
    tls = [s for s in policy["Statement"] if s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
    assert len(tls) == 1
    assert tls[0]["Effect"] == "Deny" and tls[0]["Principal"] == "*" and tls[0]["Action"] == "s3:*"
    assert sorted(tls[0]["Resource"]) == [arn, f"{arn}/*"]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_replaced_model_versions_expire_after_a_grace_period(program, stack):
    lifecycle = _only(program(stack), "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    (rule,) = lifecycle.inputs["rules"]
    assert rule["status"] == "Enabled"
    assert rule["filter"] == {"prefix": "models/"}
    assert rule["noncurrentVersionExpiration"]["noncurrentDays"] == model_store.NONCURRENT_VERSION_DAYS > 0
    assert rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"] > 0


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_models_replicate_to_exactly_the_topologys_targets(program, stack):
    graph = program(stack)
    destinations = [_region_of_bucket_arn(rule["destination"]["bucket"]) for rule in _rules(graph)]
    assert destinations == list(DEFAULT_TOPOLOGY.replication_targets(DEFAULT_TOPOLOGY.region(stack)))
    if not destinations:
        assert graph.of_type(REPLICATION) == []
        assert not [r for r in graph.of_type("aws:iam/role:Role") if "replication" in r.name]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_no_rule_copies_models_out_of_a_strict_residency_jurisdiction(program, stack):
    source = DEFAULT_TOPOLOGY.region(stack)
    for rule in _rules(program(stack)):
        target = _region_of_bucket_arn(rule["destination"]["bucket"])
        assert DEFAULT_TOPOLOGY.may_hold_data_of(source.jurisdiction, target), f"{stack} -> {target.key}"
        if source.jurisdiction == "eu":
            assert target.jurisdiction == "eu", f"EU store {stack} replicates to {target.key} ({target.jurisdiction})"


def test_the_eu_store_replicates_nowhere_while_eu_west_is_the_only_eu_region(program):
    assert [r.key for r in DEFAULT_TOPOLOGY.regions_in("eu")] == ["eu-west"]
    assert program("eu-west").of_type(REPLICATION) == []


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_replication_meets_the_15_minute_rtc_for_models_with_metrics(program, stack):
    for rule in _rules(program(stack)):
        assert rule["status"] == "Enabled"
        assert rule["filter"] == {"prefix": "models/"}
        assert rule["deleteMarkerReplication"] == {"status": "Enabled"}
        assert rule["sourceSelectionCriteria"] == {"sseKmsEncryptedObjects": {"status": "Enabled"}}
        destination = rule["destination"]
        assert destination["replicationTime"] == {"status": "Enabled", "time": {"minutes": 15}}
        assert destination["metrics"] == {"status": "Enabled", "eventThreshold": {"minutes": 15}}
    priorities = [rule["priority"] for rule in _rules(program(stack))]
    assert len(set(priorities)) == len(priorities), "S3 rejects rules that share a priority"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_replicas_are_reencrypted_with_the_destination_regions_key(program, stack):
    for rule in _rules(program(stack)):
        target = _region_of_bucket_arn(rule["destination"]["bucket"])
        expected = f"arn:aws:kms:{target.aws_region}:{ACCOUNT}:alias/{PROJECT}-{target.key}"
        assert rule["destination"]["encryptionConfiguration"]["replicaKmsKeyId"] == expected


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_replication_starts_only_after_the_source_bucket_is_versioned(program, stack):
    graph = program(stack)
    versioning = _only(graph, "aws:s3/bucketVersioning:BucketVersioning")
    for config in graph.of_type(REPLICATION):
        assert versioning.urn in config.dependencies
        assert config.inputs["bucket"] == graph.exports["modelBucketName"]


@pytest.mark.parametrize(
    "stack", [s for s in REGIONAL_STACKS if DEFAULT_TOPOLOGY.replication_targets(DEFAULT_TOPOLOGY.region(s))]
)
def test_replication_role_reads_here_and_writes_only_into_target_stores(program, stack):
    graph = program(stack)
    role = graph.named(f"speech-{stack}-store-replication-role")
    assert role.inputs["name"] == f"{PROJECT}-model-replication-{stack}"
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "s3.amazonaws.com"}]
    (config,) = graph.of_type(REPLICATION)
    assert role.urn in config.dependencies

    statements = json.loads(graph.named(f"speech-{stack}-store-replication-policy").inputs["policy"])["Statement"]
    writes = {s["Resource"] for s in statements if "s3:ReplicateObject" in s["Action"]}
    targets = DEFAULT_TOPOLOGY.replication_targets(DEFAULT_TOPOLOGY.region(stack))
    assert writes == {f"arn:aws:s3:::{PROJECT}-models-{t.key}-{ACCOUNT}/*" for t in targets}
    (decrypt,) = [s for s in statements if s["Action"] == "kms:Decrypt"]
    assert decrypt["Resource"] == graph.exports["kmsKeyArn"]
    encrypts = [s for s in statements if "kms:Encrypt" in s["Action"]]
    assert {s["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"] for s in encrypts} == {
        f"alias/{PROJECT}-{t.key}" for t in targets
    }
    assert {s["Resource"].split(":")[3] for s in encrypts} == {t.aws_region for t in targets}


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_store_refuses_replication_writes_from_regions_that_may_not_send_it_data(program, stack):
    here = DEFAULT_TOPOLOGY.region(stack)
    policy = json.loads(_only(program(stack), "aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    guards = [s for s in policy["Statement"] if s.get("Sid") == "DenyReplicationFromOtherJurisdictions"]
    refused = {arn.rsplit("/", 1)[1] for g in guards for arn in g["Condition"]["ArnLike"]["aws:PrincipalArn"]}
    expected = {
        f"{PROJECT}-model-replication-{r.key}"
        for r in DEFAULT_TOPOLOGY.regions
        if r != here and here not in DEFAULT_TOPOLOGY.replication_targets(r)
    }
    assert refused == expected
    if here.jurisdiction != "eu":
        assert {f"{PROJECT}-model-replication-{r.key}" for r in DEFAULT_TOPOLOGY.regions_in("eu")} <= refused
    assert all(g["Effect"] == "Deny" and "s3:ReplicateObject" in g["Action"] for g in guards)


def _with_region(stack: str, region: Region, cidr: str) -> dict:
    raw = offline.stack_config(stack)
    raw.update({"aws:region": region.aws_region, "speech:region": region.key, "speech:vpcCidr": cidr})
    return raw


def test_a_second_eu_region_receives_eu_models_and_no_eu_model_reaches_a_non_eu_store():
    eu_west = DEFAULT_TOPOLOGY.region("eu-west")
    eu_central = dataclasses.replace(
        eu_west, key="eu-central", aws_region="eu-central-1", timezone="Europe/Berlin",
        continents=(), cloudflare_regions=(), countries=(), failover=("eu-west",),
    )  # fmt: skip
    four = dataclasses.replace(DEFAULT_TOPOLOGY, regions=(*DEFAULT_TOPOLOGY.regions, eu_central))

    for key, cidr in (("eu-west", "10.20.0.0/16"), ("eu-central", "10.21.0.0/16")):
        graph = offline.run(key, four, config=_with_region("eu-west", four.region(key), cidr))
        destinations = {_region_of_bucket_arn(rule["destination"]["bucket"], four).key for rule in _rules(graph)}
        assert destinations == {"eu-central", "eu-west"} - {key}

    us_west = offline.run("us-west", four)
    assert "eu-central" in {_region_of_bucket_arn(rule["destination"]["bucket"], four).key for rule in _rules(us_west)}
    policy = json.loads(_only(us_west, "aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    (guard,) = [s for s in policy["Statement"] if s.get("Sid") == "DenyReplicationFromOtherJurisdictions"]
    refused = {arn.rsplit("/", 1)[1] for arn in guard["Condition"]["ArnLike"]["aws:PrincipalArn"]}
    assert refused == {f"{PROJECT}-model-replication-eu-west", f"{PROJECT}-model-replication-eu-central"}


def test_a_project_name_s3_cannot_use_stops_the_program_with_the_fix():
    with pytest.raises(pulumi.RunError, match=r"'Speech_Platform'.*lower-case letters, digits and hyphens"):
        model_store.bucket_name("Speech_Platform", DEFAULT_TOPOLOGY.region("eu-west"), ACCOUNT)
