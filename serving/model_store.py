"""Client for the regional model store: ``s3://<bucket>/models/<name>/<version>/`` into a verified local cache.

A version is only ever used after every file listed in its ``manifest.json`` has been downloaded and its SHA-256
matched, and it appears in the cache only by an atomic rename of a fully verified directory, so a crash or a
tampered object never leaves a half-written model that a later start would trust. The bucket must sit in the
serving region's jurisdiction (asked of the deployment's :class:`~contract.topology.Topology`): a replica never
pulls from, and so never depends on, a store across a residency boundary. The store's layout is the one
``contract.service`` defines for both sides.

Names and versions are checked (``serving/names.py``) before they touch a path, and the client deletes or replaces
only directories it has resolved and proved to lie inside its own cache: a version named ``..`` once made it
delete the whole cache.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from contract.service import MANIFEST_FILE, model_prefix
from contract.topology import Region, Topology, TopologyError
from serving.model_dir import ModelError, read_manifest, sha256_of, verify_model_dir
from serving.names import checked_name, is_valid_name

log = logging.getLogger(__name__)
# What S3 (and moto) answer for a key that is not there: HEAD gives a bare 404, GET NoSuchKey.
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
# Ranged GETs of 16 MiB instead of boto3's 8: AWS's S3 performance guide names 8 or 16 MB as the typical range size
# and asks for ranges aligned to the upload's parts (``serving.publish`` uploads in boto3's 8 MiB parts, so these are).
# A 110 MB decoder comes in 7 ranges, all in flight at once on boto3's 10 threads where 8 MiB needs 14 in two rounds:
# a same-region pull is no slower and makes half the requests, and models past 168 MB still keep all 10 threads busy.
# A store that reads the whole object for every range (moto, the tests' and the drill's store) does half the work.
_TRANSFER = TransferConfig(multipart_threshold=16 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024)


class ModelStoreError(RuntimeError):
    """The store is unreachable, refused by residency rules, or holds a model that fails verification.

    The message is for the log (bucket keys, cache paths, the SDK's error); ``public`` says what failed in words
    safe to show a client.
    """

    def __init__(self, message: str, public: str = "the model store request failed") -> None:
        super().__init__(message)
        self.public = public


def bucket_location(s3: object, bucket: str) -> str:
    """The AWS region ``bucket`` lives in, as S3 reports it (its role needs s3:GetBucketLocation)."""
    try:
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")  # type: ignore[attr-defined]
    except (ClientError, BotoCoreError) as exc:
        raise ModelStoreError(
            f"cannot read the location of model bucket {bucket!r} ({exc}); the role needs s3:GetBucketLocation so "
            "the bucket's jurisdiction can be checked before any model is moved"
        ) from exc
    # S3 reports us-east-1 as no constraint and eu-west-1 as the legacy "EU".
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def version_order(version: str) -> tuple:
    """Sort key that orders ``v2 < v10`` and ``2024-01-09 < 2024-01-10``: digit runs compare as numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.findall(r"\d+|\D+", version))


class ModelStore:
    """One regional bucket, read-only, with a local cache of verified versions under ``cache_dir``."""

    def __init__(
        self, bucket: str, region: str, cache_dir: Path, *, topology: Topology, endpoint_url: str | None = None
    ) -> None:
        self.bucket = bucket
        self.topology = topology
        self.region = topology.region_for_aws(region)
        self.cache_dir = cache_dir
        self._s3 = boto3.client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        )

    def url(self, name: str, version: str | None = None) -> str:
        return f"s3://{self.bucket}/{model_prefix(name, version)}"

    def check_jurisdiction(self) -> Region:
        """The bucket's topology region, or raise when it lies outside the serving region's jurisdiction."""
        bucket_region = bucket_location(self._s3, self.bucket)
        topology = self.topology
        serving = topology.jurisdiction_of(self.region)
        try:
            home = topology.region_for_aws(bucket_region)
        except TopologyError:
            raise ModelStoreError(
                f"model bucket {self.bucket!r} is in {bucket_region}, which is no region of the topology; "
                f"{self.region.key} ({serving.code}) may only use buckets in "
                f"{', '.join(r.aws_region for r in topology.regions_in(serving.code))} (SPEECH_MODEL__BUCKET)"
            ) from None
        if home.jurisdiction != serving.code:
            raise ModelStoreError(
                f"model bucket {self.bucket!r} is in {bucket_region} (jurisdiction {home.jurisdiction}), outside "
                f"this replica's jurisdiction {serving.code} ({self.region.aws_region}); use a bucket in "
                f"{', '.join(r.aws_region for r in topology.regions_in(serving.code))} (SPEECH_MODEL__BUCKET)"
            )
        return home

    def versions(self, name: str) -> list[str]:
        """Versions published under ``models/<name>/``, oldest first by :func:`version_order`."""
        found: list[str] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=model_prefix(name), Delimiter="/"
            )
            for page in pages:
                found.extend(p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in page.get("CommonPrefixes", []))
        except (ClientError, BotoCoreError) as exc:
            raise ModelStoreError(
                f"cannot list {self.url(name)}: {exc}", "the model store could not be listed"
            ) from exc
        refused = [version for version in found if not is_valid_name(version)]
        if refused:
            log.warning("ignoring versions under %s that are not valid names: %r", self.url(name), refused[:10])
        return sorted((version for version in found if is_valid_name(version)), key=version_order)

    def latest_version(self, name: str) -> str:
        versions = self.versions(name)
        if not versions:
            raise ModelStoreError(
                f"no versions of model {name!r} under {self.url(name)}; publish one or fix SPEECH_MODEL__NAME",
                f"the model store holds no version of {name}",
            )
        return versions[-1]

    def pull(self, name: str, version: str) -> Path:
        """A verified local copy of ``models/<name>/<version>/``, downloading it unless the cache already has it."""
        target = self._cache_path(name, version)
        if target.is_dir():
            try:
                verify_model_dir(target)
                return target
            except ModelError as exc:
                log.warning("cached model is damaged, pulling it again: %s", exc)
                shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
        try:
            self._download_verified(name, version, staging)
            try:
                staging.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
                # Another replica sharing the cache finished the same version first; both copies verified.
                shutil.rmtree(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("pulled %s into %s", self.url(name, version), target)
        return target

    def _cache_path(self, name: str, version: str) -> Path:
        """``<cache>/<name>/<version>``, resolved, and refused unless it is exactly that deep inside the cache.

        Checking the strings is not enough on its own: a symlink in the cache could still point a version
        elsewhere, and everything this path names may later be deleted.
        """
        try:
            checked_name(name, "model name")
            checked_name(version, "model version")
        except ValueError as exc:
            raise ModelStoreError(str(exc), str(exc)) from None
        root = self.cache_dir.resolve()
        target = (root / name / version).resolve()
        if target.parent.parent != root or target.parent.name != name or target.name != version:
            raise ModelStoreError(
                f"refusing cache path {target} for {name!r} {version!r}: it is not a version directory inside {root}",
                f"version {version} of {name} cannot be cached",
            )
        return target

    def _download_verified(self, name: str, version: str, staging: Path) -> None:
        prefix, where = model_prefix(name, version), self.url(name, version)
        self._download(prefix + MANIFEST_FILE, staging / MANIFEST_FILE)
        refused = f"version {version} of {name} failed verification"
        try:
            manifest = read_manifest(staging)
        except ModelError as exc:
            raise ModelStoreError(f"{where}{MANIFEST_FILE}: {exc}", refused) from exc
        if (manifest.name, manifest.version) != (name, version):
            raise ModelStoreError(
                f"{where}{MANIFEST_FILE} describes {manifest.name!r} version {manifest.version!r}; "
                "a version must be published under models/<name>/<version>/ with the same name and version",
                refused,
            )
        for relative, expected in sorted(manifest.files.items()):
            path = staging / _inside_model(relative, where)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._download(prefix + relative, path)
            actual = sha256_of(path)
            if actual != expected:
                raise ModelStoreError(
                    f"{where}{relative}: sha256 {actual} does not match {expected} in {MANIFEST_FILE}; "
                    f"refusing to use version {version}",
                    refused,
                )

    def _download(self, key: str, path: Path) -> None:
        try:
            self._s3.download_file(self.bucket, key, str(path), Config=_TRANSFER)
        except (ClientError, BotoCoreError) as exc:
            is_missing = isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _MISSING
            public = "that version is not in the model store" if is_missing else "the model store could not be read"
            raise ModelStoreError(f"cannot download s3://{self.bucket}/{key}: {exc}", public) from exc


def _inside_model(relative: str, where: str) -> PurePosixPath:
    """A manifest entry as a path, refused when it would write outside the model directory."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or relative == MANIFEST_FILE or not path.parts:
        raise ModelStoreError(
            f"{where}{MANIFEST_FILE} lists {relative!r}; entries must be paths inside the model",
            "the model's manifest lists a file outside the model",
        )
    return path
