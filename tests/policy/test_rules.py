"""The policy pack's rules: each passes a compliant resource and fails a violating one; the pack and the offline
plan run the same functions."""

from __future__ import annotations

import json

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from contract.topology import DEFAULT_TOPOLOGY
from infra import offline, plan
from policy import rules
from policy.pack import policies, stack_of
from tests.conftest import STACKS

STORE = f"speech-platform-models-{{}}-{offline.MOCK_ACCOUNT_ID}"
TLS_DENY = {
    "Effect": "Deny",
    "Principal": "*",
    "Action": "s3:*",
    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
}


def _replication(source: str, target: str) -> dict:
    return {
        "bucket": STORE.format(source),
        "rules": [{"id": "r", "destination": {"bucket": f"arn:aws:s3:::{STORE.format(target)}"}}],
    }


def _policy(*statements: dict) -> dict:
    return {"policy": json.dumps({"Version": "2012-10-17", "Statement": list(statements)})}


# (rule, resource type, stack, compliant properties, violating properties, words of the violation)
CASES = [
    (rules.residency, "aws:s3/bucket:Bucket", "eu-west", {"region": "eu-west-1"}, {"region": "us-east-1"},
     "outside jurisdiction eu"),
    (rules.replication_within_jurisdiction, "aws:s3/bucketReplicationConfig:BucketReplicationConfig", "global",
     _replication("us-west", "ap-northeast"), _replication("eu-west", "us-west"), "eu-west (eu) to us-west"),
    (rules.replication_within_jurisdiction, "aws:s3/bucketReplicationConfig:BucketReplicationConfig", "global",
     _replication("ap-northeast", "us-west"), _replication("us-west", "eu-west"), "replicates us-west (us) to eu-west"),
    (rules.no_allow_on_every_resource, "aws:iam/rolePolicy:RolePolicy", "eu-west",
     _policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/models/*"},
             {"Effect": "Deny", "Action": "s3:*", "Resource": "*"}),
     _policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}), "['s3:GetObject'] on every resource"),
    (rules.no_allow_on_every_resource, "aws:iam/rolePolicy:RolePolicy", "eu-west",
     _policy({"Effect": "Allow", "Action": ["ec2:DescribeSubnets", "ec2:DescribeVpcs"], "Resource": "*"},
             {"Effect": "Allow", "Action": "autoscaling:SetDesiredCapacity", "Resource": "*",
              "Condition": {"StringEquals": {"aws:ResourceTag/owner": "me"}}}),
     _policy({"Effect": "Allow", "Action": ["ec2:DescribeSubnets", "ec2:TerminateInstances"], "Resource": "*"}),
     "['ec2:TerminateInstances'] on every resource"),
    (rules.no_allow_on_every_resource, "aws:iam/policy:Policy", "eu-west",
     _policy({"Effect": "Allow", "Action": "ec2:DescribeVpcs", "Resource": "*"}),
     _policy({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
              "Condition": {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}}),
     "['kms:Decrypt'] on every resource"),
    (rules.encryption, "aws:kms/key:Key", "eu-west", {"enableKeyRotation": True}, {}, "rotation"),
    (rules.encryption, "aws:cloudwatch/logGroup:LogGroup", "eu-west", {"kmsKeyId": "arn:k", "retentionInDays": 90},
     {"retentionInDays": 90}, "lacks kmsKeyId"),
    (rules.encryption, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
     "eu-west", {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": "k"}}]},
     {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]}, "SSE-KMS"),
    (rules.encryption, "aws:eks/cluster:Cluster", "eu-west", {"encryptionConfig": {"resources": ["secrets"]}}, {},
     "Secrets"),
    (rules.versioning, "aws:s3/bucketVersioning:BucketVersioning", "eu-west",
     {"versioningConfiguration": {"status": "Enabled"}}, {"versioningConfiguration": {"status": "Suspended"}},
     "'Suspended'"),
    (rules.public_access_blocked, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "eu-west",
     dict.fromkeys(("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"), True),
     dict.fromkeys(("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls"), True), "restrictPublicBuckets"),
    (rules.tls_only_buckets, "aws:s3/bucketPolicy:BucketPolicy", "eu-west", _policy(TLS_DENY),
     _policy({**TLS_DENY, "Condition": {"Bool": {"aws:SecureTransport": "true"}}}), "aws:SecureTransport"),
    (rules.dns_ttl, "aws:route53/record:Record", "global", {"ttl": 60}, {"ttl": 300}, "TTL 300"),
    (rules.tainted_gpu_node_groups, "aws:eks/nodeGroup:NodeGroup", "eu-west",
     {"instanceTypes": ["g6.xlarge"], "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]},
     {"instanceTypes": ["g6.xlarge"], "taints": []}, "lacks the nvidia.com/gpu"),
]  # fmt: skip


IDS = [f"{case[0].__name__}-{i}" for i, case in enumerate(CASES)]


@pytest.mark.parametrize(("rule", "type_", "stack", "good", "bad", "words"), CASES, ids=IDS)
def test_each_rule_passes_a_compliant_resource_and_names_what_a_violating_one_breaks(
    rule, type_, stack, good, bad, words
):
    assert rule(type_, good, stack) == []
    violations = rule(type_, bad, stack)
    assert violations and words in violations[0], violations


def test_every_rule_of_the_pack_has_a_case():
    assert {r.check for r in rules.RULES} == {case[0] for case in CASES}


def test_the_pack_wraps_each_rule_and_reports_its_violations():
    wrapped = {p.name: p for p in policies()}
    assert set(wrapped) == {r.name for r in rules.RULES}
    reported: list[str] = []
    args = ResourceValidationArgs(
        "aws:s3/bucket:Bucket", {"region": "us-east-1"}, "urn:pulumi:eu-west::speech-platform::aws:s3/bucket:Bucket::b",
        "b", PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), []), None,
    )  # fmt: skip
    residency = wrapped["residency"]
    assert isinstance(residency, ResourceValidationPolicy) and residency.enforcement_level == EnforcementLevel.MANDATORY
    residency.validate(args, lambda message, urn: reported.append(message))
    assert reported and "outside jurisdiction eu" in reported[0]
    assert stack_of("urn:pulumi:eu-west::speech-platform::aws:s3/bucket:Bucket::b") == "eu-west"


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_of_the_program_passes_the_pack(program, stack):
    assert plan.policy_verdicts(program(stack)) == []


def test_an_eu_to_us_replication_rule_in_the_plan_fails_the_pack(program):
    graph = program("global")
    (config,) = [
        r for r in graph.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig") if "us-west" in r.name
    ]
    rogue = offline.Registration(**{**vars(config), "name": "rogue", "inputs": _replication("eu-west", "us-west")})
    violations = plan.policy_verdicts(offline.Graph(graph.stack, [*graph.resources, rogue]))
    assert [(rule, name) for rule, name, _ in violations] == [("replication-within-jurisdiction", "rogue")]


def test_plan_with_policy_prints_each_verdict_and_exits_zero_on_a_compliant_stack(capsys):
    # The CLI's own `main`, in this process (where the provider SDKs are already imported): the exit status that
    # `python -m infra.plan` passes to sys.exit.
    returncode = plan.main(["eu-west", "--policy"])
    out = capsys.readouterr()
    assert returncode == 0, out.out + out.err
    assert out.out.count("pass  ") == len(rules.RULES)


@pytest.mark.slow
def test_plan_with_policy_exits_non_zero_on_a_violation(tmp_path, monkeypatch, capsys):
    """The pack's topology says Japan is strict while the program still pairs the US and Japanese stores."""
    topology = DEFAULT_TOPOLOGY.to_dict()
    for jurisdiction in topology["jurisdictions"]:
        if jurisdiction["code"] == "jp":
            jurisdiction["is_strict_residency"] = True
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(topology))
    monkeypatch.setenv("SPEECH_TOPOLOGY_FILE", str(path))
    returncode = plan.main(["global", "--policy"])
    out = capsys.readouterr()
    assert returncode == 1, out.out + out.err
    assert "FAIL  replication-within-jurisdiction" in out.out
    assert "replicates us-west (us) to ap-northeast (jp)" in out.out
