"""EU data never leaves the EU, proven on the program's own policies by an IAM evaluation engine (see iam_proof.py).

Every denial is proven per layer: identity policy alone, bucket or key policy alone, and both. The mutation tests
at the end show the proof can fail: remove the explicit Deny, widen a Resource, admit a foreign role or drop the
VPC endpoint fence, and it does.
"""

from __future__ import annotations

import pytest

from infra import offline
from tests.infra.iam_proof import Documents, Layer, Request, Scenario, collect, prove

PROJECT = offline.project_name()
NAME = "models/whisper-base/1.0.0/encoder.int8.onnx"
EU, US, JP = "eu-west", "us-west", "ap-northeast"
REGION = {EU: "eu-west-1", US: "us-west-2", JP: "ap-northeast-1"}


def serving(region: str) -> str:
    return f"{PROJECT}-serving-{region}"


def publisher(jurisdiction: str) -> str:
    return f"{PROJECT}-publisher-{jurisdiction}"


def replication(region: str) -> str:
    return f"{PROJECT}-model-replication-{region}"


def bucket_of(region: str):
    return lambda docs: docs.buckets[region]


def key_of(region: str):
    return lambda docs: docs.keys[region]


def _object(region: str) -> str:
    return f"arn:aws:s3:::{PROJECT}-models-{region}-{offline.MOCK_ACCOUNT_ID}/{NAME}"


def _key(region: str) -> str:
    return f"arn:aws:kms:{REGION[region]}:{offline.MOCK_ACCOUNT_ID}:key/speech-{region}-key-key-id"


def _via_s3(region: str, vpce: bool = False) -> dict[str, str]:
    context = {"kms:ViaService": f"s3.{REGION[region]}.amazonaws.com"}
    if vpce:
        context["aws:SourceVpce"] = f"speech-{region}-network-s3-id"
    return context


IDENTITY: frozenset[Layer] = frozenset({"identity"})
RESOURCE: frozenset[Layer] = frozenset({"resource"})
BOTH: frozenset[Layer] = IDENTITY | RESOURCE
SCENARIOS = [
    Scenario(
        "EU serving role reads its model through the VPC endpoint",
        Request(serving(EU), "s3:GetObject", _object(EU), REGION[EU], _via_s3(EU, vpce=True)),
        bucket_of(EU),
    ),
    Scenario(
        "EU serving role decrypts with the EU key via S3 in eu-west-1",
        Request(serving(EU), "kms:Decrypt", _key(EU), REGION[EU], _via_s3(EU)),
        key_of(EU),
    ),
    Scenario(
        "EU serving role reads its model from outside the VPC (stolen credentials)",
        Request(serving(EU), "s3:GetObject", _object(EU), REGION[EU]),
        bucket_of(EU),
        RESOURCE,
    ),
    Scenario(
        "EU serving role reads the US store",
        Request(serving(EU), "s3:GetObject", _object(US), REGION[US]),
        bucket_of(US),
        BOTH,
    ),
    Scenario(
        "EU serving role reads the US store through an EU endpoint",
        Request(serving(EU), "s3:GetObject", _object(US), REGION[EU], _via_s3(EU, vpce=True)),
        bucket_of(US),
        BOTH,
    ),
    Scenario(
        "EU serving role calls S3 in a non-EU region",
        Request(serving(EU), "s3:GetObject", _object(EU), "us-east-1", _via_s3(EU, vpce=True)),
        bucket_of(EU),
        IDENTITY,
        explicitly=True,
    ),
    Scenario(
        "EU serving role calls KMS in a non-EU region",
        Request(serving(EU), "kms:Decrypt", _key(US), REGION[US], _via_s3(US)),
        key_of(US),
        BOTH,
        explicitly=True,
    ),
    Scenario(
        "EU serving role writes into its own store",
        Request(serving(EU), "s3:PutObject", _object(EU), REGION[EU], _via_s3(EU, vpce=True)),
        bucket_of(EU),
        IDENTITY,
    ),
    Scenario(
        "EU serving role decrypts with the EU key outside S3",
        Request(serving(EU), "kms:Decrypt", _key(EU), REGION[EU]),
        key_of(EU),
        BOTH,
    ),
    Scenario(
        "US serving role reads the EU store",
        Request(serving(US), "s3:GetObject", _object(EU), REGION[EU], _via_s3(EU, vpce=True)),
        bucket_of(EU),
        BOTH,
    ),
    Scenario(
        "US serving role decrypts with the EU key",
        Request(serving(US), "kms:Decrypt", _key(EU), REGION[EU], _via_s3(EU)),
        key_of(EU),
        BOTH,
    ),
    Scenario(
        "EU publisher publishes into the EU store",
        Request(publisher("eu"), "s3:PutObject", _object(EU), REGION[EU]),
        bucket_of(EU),
    ),
    Scenario(
        "EU publisher encrypts with the EU key via S3",
        Request(publisher("eu"), "kms:GenerateDataKey", _key(EU), REGION[EU], _via_s3(EU)),
        key_of(EU),
    ),
    Scenario(
        "EU publisher writes into the US store",
        Request(publisher("eu"), "s3:PutObject", _object(US), REGION[US]),
        bucket_of(US),
        BOTH,
    ),
    Scenario(
        "US publisher writes into the EU store",
        Request(publisher("us"), "s3:PutObject", _object(EU), REGION[EU]),
        bucket_of(EU),
        BOTH,
    ),
    Scenario(
        "US publisher withdraws a version from the EU store",
        Request(publisher("us"), "s3:DeleteObjectVersion", _object(EU), REGION[EU]),
        bucket_of(EU),
        BOTH,
    ),
    Scenario(
        "JP publisher reads the EU store",
        Request(publisher("jp"), "s3:GetObject", _object(EU), REGION[EU]),
        bucket_of(EU),
        BOTH,
    ),
    Scenario(
        "US replication role replicates into the JP store",
        Request(replication(US), "s3:ReplicateObject", _object(JP), REGION[JP]),
        bucket_of(JP),
    ),
    Scenario(
        "US replication role replicates into the EU store",
        Request(replication(US), "s3:ReplicateObject", _object(EU), REGION[EU]),
        bucket_of(EU),
        BOTH,
    ),
    Scenario(
        "US replication role encrypts with the EU key",
        Request(replication(US), "kms:Encrypt", _key(EU), REGION[EU], _via_s3(EU)),
        key_of(EU),
        BOTH,
    ),
    Scenario(
        "JP replication role reads the EU store",
        Request(replication(JP), "s3:GetObject", _object(EU), REGION[EU]),
        bucket_of(EU),
        BOTH,
    ),
]


@pytest.fixture(scope="module")
def documents(program) -> Documents:
    return collect(program)


def test_every_scenario_is_decided_as_the_residency_rules_say_layer_by_layer(documents):
    assert prove(documents, SCENARIOS) == []


def _serving_eu(docs: Documents) -> dict:
    return docs.identity[serving(EU)]


def test_removing_the_explicit_region_deny_fails_the_proof(documents):
    docs = documents.copy()
    _serving_eu(docs)["Statement"] = [s for s in _serving_eu(docs)["Statement"] if s["Effect"] != "Deny"]
    failures = prove(docs, SCENARIOS)
    assert any(f.startswith("EU serving role calls S3 in a non-EU region: the identity layer") for f in failures)


def test_widening_the_serving_roles_resource_fails_the_proof(documents):
    docs = documents.copy()
    for statement in _serving_eu(docs)["Statement"]:
        if statement.get("Sid") == "ReadModels":
            statement["Resource"] = "*"
    failures = prove(docs, SCENARIOS)
    assert "EU serving role reads the US store through an EU endpoint: the identity layer allowed it" in failures


def test_admitting_a_foreign_role_to_the_eu_key_fails_the_proof(documents):
    docs = documents.copy()
    for statement in docs.keys[EU]["Statement"]:
        if statement["Sid"] == "DecryptModelsViaS3":
            statement["Condition"]["ArnEquals"]["aws:PrincipalArn"].append(
                f"arn:aws:iam::{offline.MOCK_ACCOUNT_ID}:role/{serving(US)}"
            )
    assert "US serving role decrypts with the EU key: the resource layer allowed it" in prove(docs, SCENARIOS)


def test_dropping_the_eu_stores_vpc_endpoint_fence_fails_the_proof(documents):
    docs = documents.copy()
    docs.buckets[EU]["Statement"] = [
        s for s in docs.buckets[EU]["Statement"] if s["Sid"] != "DenyDataOutsideTheVpcEndpoint"
    ]
    failures = prove(docs, SCENARIOS)
    assert (
        "EU serving role reads its model from outside the VPC (stolen credentials): the resource layer allowed it"
        in (failures)
    )
