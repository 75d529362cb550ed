"""`python -m serving.publish` on moto: upload a verified version, refuse a bad one, withdraw every version of it."""

from __future__ import annotations

import dataclasses
import json
import os

import boto3
import pytest
from moto import mock_aws

from contract.service import MANIFEST_FILE, model_bucket_name
from contract.topology import DEFAULT_TOPOLOGY
from serving.model_dir import MODEL_FILES, write_manifest
from serving.model_store import ModelStore
from serving.publish import main

PROJECT, ACCOUNT, NAME = "speech-platform", "123456789012", "whisper-base"
EU_CENTRAL = dataclasses.replace(
    DEFAULT_TOPOLOGY.region("eu-west"), key="eu-central", aws_region="eu-central-1", continents=(),
    cloudflare_regions=(), countries=(), failover=("eu-west",),
)  # fmt: skip
TWO_EU = dataclasses.replace(DEFAULT_TOPOLOGY, regions=(*DEFAULT_TOPOLOGY.regions, EU_CENTRAL))
COMMON = ["--project", PROJECT, "--account-id", ACCOUNT]


@pytest.fixture(scope="module")
def session() -> boto3.session.Session:
    """One boto3 session for the module's clients: mock_aws starts every test on a new default session, which parses
    the S3 models' JSON again (about 0.1 CPU-s a test); the clients are still made, and the stores mocked, per test."""
    return boto3.session.Session()


@pytest.fixture
def aws(monkeypatch, tmp_path, session):
    """moto with a versioned store per region of a topology with two EU regions (SPEECH_TOPOLOGY_FILE)."""
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(variable, "testing")
    topology_file = tmp_path / "topology.json"
    topology_file.write_text(json.dumps(TWO_EU.to_dict()))
    monkeypatch.setenv("SPEECH_TOPOLOGY_FILE", str(topology_file))
    with mock_aws():
        boto3.DEFAULT_SESSION = session  # mock_aws puts back the default session it found when it stops
        for region in TWO_EU.regions:
            s3 = boto3.client("s3", region_name=region.aws_region)
            bucket = model_bucket_name(PROJECT, region.key, ACCOUNT)
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region.aws_region})
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        yield


def s3_of(region_key: str):
    return boto3.client("s3", region_name=TWO_EU.region(region_key).aws_region)


def bucket(region_key: str) -> str:
    return model_bucket_name(PROJECT, region_key, ACCOUNT)


def model_dir(root, version: str):
    """A model directory with a valid manifest (small stand-in files: publishing checks hashes, not weights)."""
    directory = root / version
    directory.mkdir()
    for index, name in enumerate(MODEL_FILES):
        (directory / name).write_bytes(os.urandom(64) + bytes([index]))
    write_manifest(directory, NAME, version, "base")
    return directory


def keys(region_key: str) -> list[str]:
    listing = s3_of(region_key).list_object_versions(Bucket=bucket(region_key), Prefix="models/")
    return sorted(e["Key"] for e in (*listing.get("Versions", []), *listing.get("DeleteMarkers", [])))


def test_upload_publishes_a_version_the_serving_client_pulls_verified(aws, tmp_path, capsys):
    source = model_dir(tmp_path, "1.1.0")
    assert main(["upload", str(source), "--region", "eu-west", *COMMON]) == 0
    assert f"published s3://{bucket('eu-west')}/models/{NAME}/1.1.0/" in capsys.readouterr().out
    assert keys("eu-west") == sorted(f"models/{NAME}/1.1.0/{f}" for f in (*MODEL_FILES, MANIFEST_FILE))
    client = ModelStore(bucket("eu-west"), "eu-west-1", tmp_path / "cache", topology=TWO_EU)
    pulled = client.pull(NAME, "1.1.0")
    assert all((pulled / f).read_bytes() == (source / f).read_bytes() for f in MODEL_FILES)


def test_upload_refuses_a_directory_that_fails_its_manifest_and_uploads_nothing(aws, tmp_path, capsys):
    source = model_dir(tmp_path, "1.2.0")
    (source / MODEL_FILES[0]).write_bytes(b"tampered")
    assert main(["upload", str(source), "--region", "eu-west", *COMMON]) == 1
    assert f"refusing to publish {source}" in capsys.readouterr().err
    assert keys("eu-west") == []


def test_upload_refuses_a_version_the_store_already_has(aws, tmp_path, capsys):
    source = model_dir(tmp_path, "1.3.0")
    assert main(["upload", str(source), "--region", "eu-west", *COMMON]) == 0
    assert main(["upload", str(source), "--region", "eu-west", *COMMON]) == 1
    assert "already exists; versions are immutable" in capsys.readouterr().err


def test_withdraw_deletes_every_version_in_every_store_of_the_jurisdiction_and_nothing_elsewhere(aws, tmp_path, capsys):
    prefix = f"models/{NAME}/2.0.0/"
    for region_key in ("eu-west", "eu-central", "us-west"):
        s3 = s3_of(region_key)
        for body in (b"first", b"overwritten"):  # two object versions
            s3.put_object(Bucket=bucket(region_key), Key=prefix + MANIFEST_FILE, Body=body)
        s3.put_object(Bucket=bucket(region_key), Key=prefix + "encoder.int8.onnx", Body=b"weights")
        s3.delete_object(Bucket=bucket(region_key), Key=prefix + "encoder.int8.onnx")  # a delete marker
        s3.put_object(Bucket=bucket(region_key), Key=f"models/{NAME}/1.0.0/{MANIFEST_FILE}", Body=b"kept")
    assert main(["withdraw", NAME, "2.0.0", "--jurisdiction", "eu", *COMMON]) == 0
    out = capsys.readouterr().out
    assert f"s3://{bucket('eu-west')}/{prefix}: 4 object versions deleted" in out
    assert f"s3://{bucket('eu-central')}/{prefix}: 4 object versions deleted" in out
    for region_key in ("eu-west", "eu-central"):
        assert keys(region_key) == [f"models/{NAME}/1.0.0/{MANIFEST_FILE}"], "only the other version remains"
    assert len([k for k in keys("us-west") if k.startswith(prefix)]) == 4, "another jurisdiction's store is untouched"


def test_withdrawing_a_version_no_store_has_fails_naming_the_stores(aws, capsys):
    assert main(["withdraw", NAME, "9.9.9", "--jurisdiction", "eu", *COMMON]) == 1
    assert f"whisper-base 9.9.9 is in no store of jurisdiction eu ({bucket('eu-west')}" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["", ".", "..", "2.0.0/.."])
def test_withdrawing_a_version_that_is_not_a_plain_name_deletes_nothing(aws, capsys, version):
    for number in ("1.0.0", "2.0.0"):
        s3_of("eu-west").put_object(Bucket=bucket("eu-west"), Key=f"models/{NAME}/{number}/{MANIFEST_FILE}", Body=b"{}")
    assert main(["withdraw", NAME, version, "--jurisdiction", "eu", *COMMON]) == 1
    assert "is not accepted; use 1-64 letters" in capsys.readouterr().err
    assert len(keys("eu-west")) == 2, "an empty version once meant every version of the model"


def test_a_store_in_the_wrong_region_is_refused(aws, tmp_path, capsys):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.delete_bucket(Bucket=bucket("eu-central"))
    s3.create_bucket(Bucket=bucket("eu-central"))  # us-east-1: someone else's bucket by that name
    assert main(["upload", str(model_dir(tmp_path, "3.0.0")), "--region", "eu-central", *COMMON]) == 1
    assert "is in us-east-1, not in eu-central-1 (eu-central); refusing" in capsys.readouterr().err
