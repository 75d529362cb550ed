"""The generated identity policies, enforced by moto on real S3 calls (`set_initial_no_auth_action_count`).

moto evaluates identity policies only, and of conditions only `StringEquals` on values a request carries; any
other condition counts as met. A conditional Deny would so deny everything, so the one the program generates (the
region fence, `DenyOutsideJurisdictionRegions`) is left out here: moto then sees *more* than the role really gets,
and every denial it reports holds a fortiori. The fence itself, and the bucket and key policies, are proven by the
IAM engine in `test_isolation_proof.py`.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from infra import offline
from tests.infra.iam_proof import collect

PROJECT = offline.project_name()
ACCOUNT = offline.MOCK_ACCOUNT_ID
REGION = {"eu-west": "eu-west-1", "us-west": "us-west-2", "ap-northeast": "ap-northeast-1"}
KEY = "models/whisper-base/1.0.0/manifest.json"
ROLES = {
    "serving-eu": f"{PROJECT}-serving-eu-west",
    "serving-us": f"{PROJECT}-serving-us-west",
    "publisher-eu": f"{PROJECT}-publisher-eu",
}


def bucket(region: str) -> str:
    return f"{PROJECT}-models-{region}-{ACCOUNT}"


def moto_view(policy: dict) -> str:
    """``policy`` without its region fence, which moto would apply unconditionally."""
    statements = policy["Statement"]
    fences = [s for s in statements if s["Effect"] == "Deny"]
    assert [s.get("Sid") for s in fences] == ["DenyOutsideJurisdictionRegions"], "only the fence is left out"
    allows = [s for s in statements if s["Effect"] == "Allow"]
    operators = {operator for s in allows for operator in s.get("Condition", {})}
    assert operators <= {"StringEquals", "StringLike"}, f"moto would misread {operators}"
    return json.dumps({**policy, "Statement": allows})


@pytest.fixture(scope="module")
def sessions(program, monkeypatch_module):
    """Credentials of each role, with moto holding the stores and the roles' generated policies."""
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch_module.setenv(variable, "testing")
    docs = collect(program)
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        for region, aws_region in REGION.items():
            s3 = boto3.client("s3", region_name=aws_region)
            s3.create_bucket(Bucket=bucket(region), CreateBucketConfiguration={"LocationConstraint": aws_region})
            s3.put_object(Bucket=bucket(region), Key=KEY, Body=b"{}")
        credentials = {}
        for label, name in ROLES.items():
            root = {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
            trust = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": root}],
            }
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
            iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=moto_view(docs.identity[name]))
            assumed = boto3.client("sts", region_name="us-east-1").assume_role(
                RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}", RoleSessionName="proof"
            )["Credentials"]
            credentials[label] = assumed
        yield credentials


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def s3_as(credentials: dict, aws_region: str):
    return boto3.client(
        "s3",
        region_name=aws_region,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def outcome(call) -> str:
    try:
        call()
    except ClientError as error:
        return error.response["Error"]["Code"]
    return "allowed"


@set_initial_no_auth_action_count(0)
def decide(sessions: dict) -> dict[str, str]:
    eu, us, publisher = sessions["serving-eu"], sessions["serving-us"], sessions["publisher-eu"]
    return {
        "EU serving role reads its model": outcome(
            lambda: s3_as(eu, "eu-west-1").get_object(Bucket=bucket("eu-west"), Key=KEY)
        ),
        "EU serving role lists its models": outcome(
            lambda: s3_as(eu, "eu-west-1").list_objects_v2(Bucket=bucket("eu-west"), Prefix="models/")
        ),
        "EU serving role reads the US store": outcome(
            lambda: s3_as(eu, "us-west-2").get_object(Bucket=bucket("us-west"), Key=KEY)
        ),
        "EU serving role calls S3 in a non-EU region": outcome(
            lambda: s3_as(eu, "ap-northeast-1").list_objects_v2(Bucket=bucket("ap-northeast"))
        ),
        "EU serving role writes its own store": outcome(
            lambda: s3_as(eu, "eu-west-1").put_object(Bucket=bucket("eu-west"), Key=KEY, Body=b"x")
        ),
        "US serving role reads the EU store": outcome(
            lambda: s3_as(us, "eu-west-1").get_object(Bucket=bucket("eu-west"), Key=KEY)
        ),
        "EU publisher publishes into the EU store": outcome(
            lambda: s3_as(publisher, "eu-west-1").put_object(Bucket=bucket("eu-west"), Key=KEY, Body=b"{}")
        ),
        "EU publisher writes into the US store": outcome(
            lambda: s3_as(publisher, "us-west-2").put_object(Bucket=bucket("us-west"), Key=KEY, Body=b"{}")
        ),
        "EU publisher writes outside models/": outcome(
            lambda: s3_as(publisher, "eu-west-1").put_object(Bucket=bucket("eu-west"), Key="audio/x.wav", Body=b"")
        ),
    }


def test_moto_enforces_the_generated_identity_policies_on_real_s3_calls(sessions):
    assert decide(sessions) == {
        "EU serving role reads its model": "allowed",
        "EU serving role lists its models": "allowed",
        "EU serving role reads the US store": "AccessDenied",
        "EU serving role calls S3 in a non-EU region": "AccessDenied",
        "EU serving role writes its own store": "AccessDenied",
        "US serving role reads the EU store": "AccessDenied",
        "EU publisher publishes into the EU store": "allowed",
        "EU publisher writes into the US store": "AccessDenied",
        "EU publisher writes outside models/": "AccessDenied",
    }
