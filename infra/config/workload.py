"""`speech:model` and `speech:image`: what the serving workload runs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from infra.config.reader import NAMESPACE, Reader

_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_IMAGE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]{1,128}|@sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    version: str


def read_model(reader: Reader) -> ModelConfig:
    raw = reader.require("model", "an object with name and version")
    if not isinstance(raw, dict):
        raise reader.fail(f"{NAMESPACE}:model", raw, "must be an object with name and version")
    name, version = raw.get("name"), raw.get("version")
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise reader.fail(f"{NAMESPACE}:model.name", name, "must be a lower-case model name such as whisper-base")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise reader.fail(f"{NAMESPACE}:model.version", version, "must be a version string such as 1.0.0")
    return ModelConfig(name=name, version=version)


def read_image(reader: Reader) -> str:
    image = reader.string(
        "image", _IMAGE, "a container image pinned by tag or digest, e.g. ghcr.io/acme/speech-serving:0.1.0"
    )
    if image.endswith(":latest"):
        raise reader.fail(f"{NAMESPACE}:image", image, "must be pinned: ':latest' makes deployments unrepeatable")
    return image
