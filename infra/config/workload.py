"""`speech:model` and `speech:image`: what the serving workload runs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from infra.config.reader import NAMESPACE, Reader

_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_IMAGE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]{1,128}|@sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class ShadowConfig:
    """A candidate version every pod also runs, off the response path, on ``sample_rate`` of batch requests."""

    version: str
    sample_rate: float = 0.05


@dataclass(frozen=True)
class ModelConfig:
    name: str
    version: str
    shadow: ShadowConfig | None = None


def read_model(reader: Reader) -> ModelConfig:
    raw = reader.require("model", "an object with name and version")
    if not isinstance(raw, dict):
        raise reader.fail(f"{NAMESPACE}:model", raw, "must be an object with name and version")
    unknown = sorted(set(raw) - {"name", "version", "shadow"})
    if unknown:
        raise reader.fail(f"{NAMESPACE}:model.{unknown[0]}", raw[unknown[0]], "is not known; use name, version, shadow")
    name, version = raw.get("name"), raw.get("version")
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise reader.fail(f"{NAMESPACE}:model.name", name, "must be a lower-case model name such as whisper-base")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise reader.fail(f"{NAMESPACE}:model.version", version, "must be a version string such as 1.0.0")
    return ModelConfig(name=name, version=version, shadow=_shadow(reader, raw.get("shadow"), version))


def _shadow(reader: Reader, raw: Any, served: str) -> ShadowConfig | None:
    key = f"{NAMESPACE}:model.shadow"
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"version", "sampleRate"}:
        raise reader.fail(key, raw, "must be an object with the candidate's version and an optional sampleRate")
    version = raw.get("version")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise reader.fail(f"{key}.version", version, "must be a version string such as 1.1.0")
    if version == served:
        raise reader.fail(f"{key}.version", version, "is the version already served; shadow a different one")
    rate = reader.number(f"{key}.sampleRate", raw.get("sampleRate", ShadowConfig.sample_rate), 0, 1)
    return ShadowConfig(version=version, sample_rate=rate)


def read_image(reader: Reader) -> str:
    image = reader.string(
        "image", _IMAGE, "a container image pinned by tag or digest, e.g. ghcr.io/acme/speech-serving:0.1.0"
    )
    if image.endswith(":latest"):
        raise reader.fail(f"{NAMESPACE}:image", image, "must be pinned: ':latest' makes deployments unrepeatable")
    return image
