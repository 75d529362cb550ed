"""The regional model store: encryption, privacy, versions; replication belongs to the global stack."""

from __future__ import annotations

import json

import pulumi
import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import model_store, offline
from tests.conftest import REGIONAL_STACKS

BUCKET = "aws:s3/bucket:Bucket"
REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
PROJECT = offline.project_name()
ACCOUNT = offline.MOCK_ACCOUNT_ID


def _only(graph: offline.Graph, type_: str) -> offline.Registration:
    (resource,) = graph.of_type(type_)
    return resource


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


def test_no_regional_stack_replicates_the_global_stack_does(program):
    for stack in REGIONAL_STACKS:
        assert program(stack).of_type(REPLICATION) == [], f"{stack} still owns replication"


def test_an_eu_store_without_the_regions_s3_endpoint_stops_the_program_with_the_fix():
    eu_west = DEFAULT_TOPOLOGY.region("eu-west")

    def program() -> None:
        model_store.ModelStore(
            "eu-store",
            model_store.ModelStoreArgs(
                topology=DEFAULT_TOPOLOGY, region=eu_west, project=PROJECT, account_id=ACCOUNT, kms_key_arn="arn:k"
            ),
        )

    with pytest.raises(Exception, match=r"strict-residency jurisdiction eu.*needs s3_vpc_endpoint_id"):
        offline.run_program("eu-west", program, config={})


def test_a_project_name_s3_cannot_use_stops_the_program_with_the_fix():
    with pytest.raises(pulumi.RunError, match=r"'Speech_Platform'.*lower-case letters, digits and hyphens"):
        model_store.bucket_name("Speech_Platform", DEFAULT_TOPOLOGY.region("eu-west"), ACCOUNT)
