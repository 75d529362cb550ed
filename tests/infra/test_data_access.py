"""The data path's identities as a user sees them: the serving role and its binding, key and log group encryption,
the publisher roles and their configuration."""

from __future__ import annotations

import json

import pytest

from contract import service
from contract.topology import DEFAULT_TOPOLOGY
from infra import config, offline
from tests.conftest import REGIONAL_STACKS

PROJECT = offline.project_name()
ACCOUNT = offline.MOCK_ACCOUNT_ID


def _statements(document: str) -> list[dict]:
    return json.loads(document)["Statement"]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_serving_role_is_bound_to_the_serving_service_account_of_its_own_cluster(program, stack):
    graph = program(stack)
    role = graph.named(f"speech-{stack}-serving-role")
    assert role.inputs["name"] == f"{PROJECT}-serving-{stack}"
    (trust,) = _statements(role.inputs["assumeRolePolicy"])
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert trust["Action"] == ["sts:AssumeRole", "sts:TagSession"]
    assert trust["Condition"]["StringEquals"] == {
        "aws:SourceAccount": ACCOUNT,
        "aws:RequestTag/eks-cluster-name": graph.exports["clusterName"],
        "aws:RequestTag/kubernetes-namespace": service.KUBERNETES_NAMESPACE,
        "aws:RequestTag/kubernetes-service-account": service.SERVICE_ACCOUNT,
    }
    associations = graph.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    (association,) = [a for a in associations if a.inputs["namespace"] == service.KUBERNETES_NAMESPACE]
    assert [a.name for a in associations if a.inputs["roleArn"] == graph.exports["servingRoleArn"]] == [
        association.name
    ], "the serving role is bound to the serving service account only"
    assert association.inputs["clusterName"] == graph.exports["clusterName"]
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == (
        service.KUBERNETES_NAMESPACE,
        service.SERVICE_ACCOUNT,
    )
    assert association.inputs["roleArn"] == graph.exports["servingRoleArn"]
    assert association.inputs["region"] == DEFAULT_TOPOLOGY.region(stack).aws_region
    assert graph.named(f"speech-{stack}-serving-policy").urn in association.dependencies


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_serving_role_reads_only_models_of_its_own_store_and_decrypts_only_via_s3_here(program, stack):
    graph = program(stack)
    region = DEFAULT_TOPOLOGY.region(stack)
    statements = {s["Sid"]: s for s in _statements(graph.named(f"speech-{stack}-serving-policy").inputs["policy"])}
    bucket = graph.exports["modelBucketArn"]
    assert statements["ReadModels"]["Resource"] == f"{bucket}/models/*"
    assert statements["ListModels"]["Resource"] == bucket
    assert statements["ListModels"]["Condition"] == {"StringLike": {"s3:prefix": ["models/", "models/*"]}}
    assert statements["CheckStoreRegion"]["Action"] == "s3:GetBucketLocation"
    assert statements["DecryptModels"]["Resource"] == graph.exports["kmsKeyArn"]
    assert statements["DecryptModels"]["Condition"] == {
        "StringEquals": {"kms:ViaService": f"s3.{region.aws_region}.amazonaws.com"}
    }
    fence = statements["DenyOutsideJurisdictionRegions"]
    assert (fence["Effect"], fence["Action"], fence["Resource"]) == ("Deny", ["s3:*", "kms:*"], "*")
    assert fence["Condition"] == {
        "StringNotEquals": {
            "aws:RequestedRegion": [r.aws_region for r in DEFAULT_TOPOLOGY.regions_in(region.jurisdiction)]
        }
    }


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_account_root_administers_the_key_but_cannot_use_it(program, stack):
    key = program(stack).of_type("aws:kms/key:Key")[0]
    statements = {s["Sid"]: s for s in _statements(key.inputs["policy"])}
    admin = statements["AccountAdministersOnly"]
    assert admin["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"} and "Condition" not in admin
    assert not {"kms:*", "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncrypt*"} & set(admin["Action"])
    for sid in ("DecryptModelsViaS3", "EncryptModelsViaS3", "ClusterSecrets"):
        assert "aws:PrincipalArn" in statements[sid]["Condition"]["ArnEquals"], sid


def test_the_eu_key_is_usable_only_by_eu_roles(program):
    key = program("eu-west").of_type("aws:kms/key:Key")[0]
    named = {
        arn.rsplit("/", 1)[1]
        for s in _statements(key.inputs["policy"])
        for arn in (lambda v: [v] if isinstance(v, str) else v)(
            s.get("Condition", {}).get("ArnEquals", {}).get("aws:PrincipalArn", [])
        )
    }
    assert named == {f"{PROJECT}-serving-eu-west", f"{PROJECT}-publisher-eu", f"{PROJECT}-eu-west-control-plane"}


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_control_plane_logs_are_regional_encrypted_with_the_regions_key_and_expire(program, stack):
    graph = program(stack)
    (group,) = graph.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert group.inputs["region"] == DEFAULT_TOPOLOGY.region(stack).aws_region
    assert group.inputs["kmsKeyId"] == graph.exports["kmsKeyArn"] and group.inputs["retentionInDays"] == 90
    key = graph.of_type("aws:kms/key:Key")[0]
    (logs,) = [s for s in _statements(key.inputs["policy"]) if s["Sid"] == "RegionalLogGroups"]
    region = DEFAULT_TOPOLOGY.region(stack).aws_region
    assert logs["Principal"] == {"Service": f"logs.{region}.amazonaws.com"}
    allowed = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{group.inputs['name']}".startswith(allowed[0].rstrip("*"))


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_cluster_role_has_the_name_the_key_policy_admits(program, stack):
    graph = program(stack)
    (eks,) = graph.of_type("aws:eks/cluster:Cluster")
    role = graph.named(f"speech-{stack}-cluster-role")
    assert role.inputs["name"] == f"{eks.inputs['name']}-control-plane"


def test_each_jurisdiction_gets_a_publisher_trusting_only_its_configured_principals(program):
    graph = program("global")
    publishers = offline.stack_config("global")["speech:publishers"]
    assert graph.exports["publisherRoleArns"].keys() == publishers.keys() == {"eu", "us", "jp"}
    for code, principals in publishers.items():
        role = graph.named(f"speech-publishers-{code}")
        assert role.inputs["name"] == f"{PROJECT}-publisher-{code}"
        (trust,) = _statements(role.inputs["assumeRolePolicy"])
        assert trust["Principal"] == {"AWS": sorted(principals)} and trust["Action"] == "sts:AssumeRole"
        writes = [
            s["Resource"]
            for s in _statements(graph.named(f"speech-publishers-{code}-policy").inputs["policy"])
            if s["Effect"] == "Allow" and "s3:PutObject" in s["Action"]
        ]
        assert writes == [
            f"arn:aws:s3:::{PROJECT}-models-{r.key}-{ACCOUNT}/models/*" for r in DEFAULT_TOPOLOGY.regions_in(code)
        ]


def _global_with(publishers: object) -> dict:
    raw = offline.stack_config("global")
    raw["speech:publishers"] = publishers
    return raw


@pytest.mark.parametrize(
    ("publishers", "message"),
    [
        (None, "speech:publishers = <missing> is required: an object of IAM role or user ARNs per jurisdiction"),
        ({"eu": ["arn:aws:iam::123456789012:role/ci"], "us": []}, "speech:publishers.us = [] must list the IAM"),
        ({"eu": ["ci-role"], "us": ["x"], "jp": ["x"]}, 'speech:publishers.eu[0] = "ci-role" is not an IAM role'),
        ({"eu": ["arn:aws:iam::123456789012:role/ci"], "mars": ["x"]}, "speech:publishers.mars = "),
    ],
)
def test_publisher_config_errors_name_the_key_the_value_and_the_fix(publishers, message):
    with pytest.raises(config.ConfigError) as caught:
        config.load("global", _global_with(publishers), DEFAULT_TOPOLOGY)
    assert message in str(caught.value) and str(caught.value).endswith("(Pulumi.global.yaml)")
