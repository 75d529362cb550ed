"""`speech:model` and `speech:image`: what the serving workload runs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from infra.config.reader import NAMESPACE, Reader

_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_MODEL_FIELDS = ("name", "version", "shadow", "languages")
# Whisper's English-only builds are named for it (tiny.en, base.en): they cannot serve another language.
_ENGLISH_ONLY_SUFFIX = ".en"
_IMAGE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]{1,128}|@sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class ShadowConfig:
    """A candidate version every pod also runs, off the response path, on ``sample_rate`` of batch requests."""

    version: str
    sample_rate: float = 0.05


@dataclass(frozen=True)
class ModelConfig:
    """The models a region serves: ``name`` for every language (and detection), plus, in ``languages``, a model
    specialised for a language (``{"en": "whisper-tiny.en"}`` where the traffic is English). One ``version``
    of each, the release they were published under."""

    name: str
    version: str
    shadow: ShadowConfig | None = None
    languages: dict[str, str] = field(default_factory=dict)


def read_model(reader: Reader) -> ModelConfig:
    key = f"{NAMESPACE}:model"
    raw = reader.require("model", "an object with name and version")
    if not isinstance(raw, dict):
        raise reader.fail(key, raw, "must be an object with name and version")
    unknown = sorted(set(raw) - set(_MODEL_FIELDS))
    if unknown:
        raise reader.fail(f"{key}.{unknown[0]}", raw[unknown[0]], f"is not known; use {', '.join(_MODEL_FIELDS)}")
    name, version = raw.get("name"), raw.get("version")
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise reader.fail(f"{key}.name", name, "must be a lower-case model name such as whisper-base")
    if name.endswith(_ENGLISH_ONLY_SUFFIX):
        raise reader.fail(
            f"{key}.name", name, "is English-only, but it serves every language not under languages; name a "
            f"multilingual model here and map this one as languages: {{en: {name}}}"
        )  # fmt: skip
    if not isinstance(version, str) or not _VERSION.match(version):
        raise reader.fail(f"{key}.version", version, "must be a version string such as 1.0.0")
    return ModelConfig(
        name=name,
        version=version,
        shadow=_shadow(reader, raw.get("shadow"), version),
        languages=_languages(reader, raw.get("languages"), name),
    )


def _languages(reader: Reader, raw: Any, default: str) -> dict[str, str]:
    key = f"{NAMESPACE}:model.languages"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise reader.fail(key, raw, "must map language codes to model names, e.g. {en: whisper-tiny.en}")
    languages = {}
    for language, model in sorted(raw.items()):
        if not isinstance(language, str) or not _LANGUAGE.match(language):
            raise reader.fail(f"{key}.{language}", model, "is not under an ISO 639-1 code such as en or es")
        if not isinstance(model, str) or not _MODEL_NAME.match(model):
            raise reader.fail(f"{key}.{language}", model, "must be a lower-case model name such as whisper-tiny.en")
        if model == default:
            raise reader.fail(f"{key}.{language}", model, "is speech:model.name already, which serves every language")
        if model.endswith(_ENGLISH_ONLY_SUFFIX) and language != "en":
            raise reader.fail(f"{key}.{language}", model, "is an English-only model; map it to en only")
        languages[language] = model
    return languages


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
