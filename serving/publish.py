"""``python -m serving.publish``: release a model version into a jurisdiction's stores, or withdraw one from them.

    python -m serving.publish upload MODEL_DIR --region eu-west --project speech-platform --account-id 123456789012
    python -m serving.publish withdraw whisper-base 1.1.0 --jurisdiction eu --project ... --account-id ...

Run it under the jurisdiction's publisher role (`infra/publishers.py`), which may write only that jurisdiction's
stores. ``upload`` refuses a directory whose files fail their SHA-256 manifest, and a version the store already
has (a version is immutable: withdraw it, then publish a new one); it writes the manifest last, so a replica that
sees the manifest sees a complete version, and replication carries it to the other stores the topology pairs with
this one. ``withdraw`` deletes every object version and delete marker under ``models/<name>/<version>/`` in every
store of the jurisdiction: replication copies plain DELETEs (delete markers) but never the deletion of a version,
so each store is visited here. Stores are named by the deployment's scheme (`contract.service.model_bucket_name`)
and regions come from the topology (``SPEECH_TOPOLOGY_FILE``, else this repository's).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from contract.service import ENV_TOPOLOGY_FILE, MANIFEST_FILE, model_bucket_name, model_prefix
from contract.topology import DEFAULT_TOPOLOGY, Region, Topology, TopologyError
from contract.topology import load as load_topology
from serving.model_dir import ModelError, verify_model_dir
from serving.model_store import ModelStoreError, bucket_location
from serving.names import checked_name

_DELETE_BATCH = 1000  # S3 DeleteObjects takes at most 1000 keys a call


class PublishError(RuntimeError):
    """A release step was refused or failed; the message names the store, the version and the fix."""


class Stores:
    """The deployment's model stores: one S3 client per region, buckets by the naming scheme."""

    def __init__(self, topology: Topology, project: str, account_id: str, endpoint_url: str | None = None) -> None:
        self.topology = topology
        self.project = project
        self.account_id = account_id
        self._endpoint_url = endpoint_url

    def bucket(self, region: Region) -> str:
        return model_bucket_name(self.project, region.key, self.account_id)

    def client(self, region: Region):  # boto3 clients have no static type
        return boto3.client("s3", region_name=region.aws_region, endpoint_url=self._endpoint_url)


def upload(stores: Stores, region: Region, model_dir: Path) -> str:
    """Publish ``model_dir`` into ``region``'s store; return its ``s3://`` prefix."""
    try:
        manifest = verify_model_dir(model_dir)
    except ModelError as exc:
        raise PublishError(f"refusing to publish {model_dir}: {exc}") from exc
    s3, bucket = stores.client(region), stores.bucket(region)
    _check_location(s3, bucket, region)
    prefix = model_prefix(manifest.name, manifest.version)
    where = f"s3://{bucket}/{prefix}"
    try:
        if s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0):
            raise PublishError(
                f"{where} already exists; versions are immutable: withdraw it first or publish a new version"
            )
        for relative in sorted(manifest.files):
            s3.upload_file(str(model_dir / relative), bucket, prefix + relative)
        s3.upload_file(str(model_dir / MANIFEST_FILE), bucket, prefix + MANIFEST_FILE)
    except (ClientError, BotoCoreError) as exc:
        raise PublishError(f"cannot publish to {where}: {exc}") from exc
    return where


def withdraw(stores: Stores, jurisdiction: str, name: str, version: str) -> dict[str, int]:
    """Delete every version of ``models/<name>/<version>/`` in each store of ``jurisdiction``: {bucket: count}.

    Both are checked as names first: an empty version would make the prefix every version of the model.
    """
    try:
        checked_name(name, "model name")
        checked_name(version, "model version")
    except ValueError as exc:
        raise PublishError(f"{exc}; nothing was withdrawn") from None
    prefix = model_prefix(name, version)
    deleted: dict[str, int] = {}
    for region in stores.topology.regions_in(jurisdiction):
        s3, bucket = stores.client(region), stores.bucket(region)
        _check_location(s3, bucket, region)
        try:
            entries = list(_versions(s3, bucket, prefix))
            # The manifest goes first: a replica polling meanwhile sees an incomplete version, never a half one.
            entries.sort(key=lambda entry: not entry["Key"].endswith(MANIFEST_FILE))
            for start in range(0, len(entries), _DELETE_BATCH):
                batch = entries[start : start + _DELETE_BATCH]
                errors = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True}).get("Errors")
                if errors:
                    raise PublishError(f"s3://{bucket}/{prefix}: could not delete {errors[0]}")
        except (ClientError, BotoCoreError) as exc:
            raise PublishError(f"cannot withdraw s3://{bucket}/{prefix}: {exc}") from exc
        deleted[bucket] = len(entries)
    if not any(deleted.values()):
        raise PublishError(f"{name} {version} is in no store of jurisdiction {jurisdiction} ({', '.join(deleted)})")
    return deleted


def _versions(s3, bucket: str, prefix: str) -> Iterator[dict[str, str]]:
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for entry in (*page.get("Versions", []), *page.get("DeleteMarkers", [])):
            yield {"Key": entry["Key"], "VersionId": entry["VersionId"]}


def _check_location(s3, bucket: str, region: Region) -> None:
    try:
        location = bucket_location(s3, bucket)
    except ModelStoreError as exc:
        raise PublishError(str(exc)) from exc
    if location != region.aws_region:
        raise PublishError(f"bucket {bucket!r} is in {location}, not in {region.aws_region} ({region.key}); refusing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.publish", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upload", help="publish a verified model directory into one region's store")
    up.add_argument("model_dir", type=Path)
    up.add_argument("--region", required=True, help="topology region key, e.g. eu-west")
    down = commands.add_parser("withdraw", help="delete a version from every store of a jurisdiction")
    down.add_argument("name")
    down.add_argument("version")
    down.add_argument("--jurisdiction", required=True, help="topology jurisdiction code, e.g. eu")
    for command in (up, down):
        command.add_argument("--project", required=True, help="the Pulumi project name (Pulumi.yaml)")
        command.add_argument("--account-id", required=True, help="the AWS account of the stores")
        command.add_argument("--endpoint-url", help="an S3-compatible endpoint instead of AWS")
    args = parser.parse_args(argv)
    try:
        path = os.environ.get(ENV_TOPOLOGY_FILE)
        topology = load_topology(Path(path)) if path else DEFAULT_TOPOLOGY
        stores = Stores(topology, args.project, args.account_id, args.endpoint_url)
        if args.command == "upload":
            print(f"published {upload(stores, topology.region(args.region), args.model_dir)}")
        else:
            topology.jurisdiction(args.jurisdiction)
            for bucket, count in withdraw(stores, args.jurisdiction, args.name, args.version).items():
                print(f"s3://{bucket}/{model_prefix(args.name, args.version)}: {count} object versions deleted")
    except (PublishError, TopologyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
