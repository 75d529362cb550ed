"""How the models of each kind are loaded, proved to work, and found locally when no model store is configured.

The model manager, the registry and the store client know nothing of Whisper or voices: they ask the
:class:`EngineKind` of a model's kind. A new kind of engine (speaker verification) adds one entry to
:data:`ENGINE_KINDS`. Loading a model directory never imports the build tools (``serving/build/``), so serving a
model the store or the cache already holds needs no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from serving.bundled import model_dir_for, voice_dir_for
from serving.engine import SAMPLE_RATE, AsrEngine, DecodeOptions, Engine
from serving.model_dir import SPEECH_CLIP
from serving.settings import ModelSpec


@dataclass(frozen=True)
class EngineKind:
    """What the model manager needs to know about one kind of model."""

    kind: str
    # Verify a model directory (manifest, kind, hashes) and load it as the spec says; raises ModelError.
    load: Callable[[Path, ModelSpec], Engine]
    # One real run, as the spec's requests will run, so a model that loads but cannot work never becomes current.
    warm: Callable[[Engine, ModelSpec], None]
    # Where the bundled model of a spec lives in the local cache (built by set-up, not by the server).
    bundled_dir: Callable[[ModelSpec, Path | None], Path]
    # The command that builds the bundled model, for the error a replica without it reports.
    build_command: Callable[[ModelSpec], str]


def _load_asr(model_dir: Path, spec: ModelSpec) -> Engine:
    from serving.whisper_onnx import load_engine

    return load_engine(model_dir, threads=spec.threads)


# The export check's clip up to its first pause, after "the quick brown fox jumps over the lazy dog" (2.8-3.0 s).
# Its whole 6 s cost tiny.en about 1.3 CPU-s a start and base 1.1, fitted with 5 s; this part 0.6 and 0.7 (AMD EPYC,
# one thread): a warm-up runs at every start, hot swap and shadow load. tiny.en's fitted window of the whole clip
# also tripped the log-probability guard and was decoded again at 30 s.
WARM_SECONDS = 2.95


def _warm_asr(engine: Engine, spec: ModelSpec) -> None:
    if not isinstance(engine, AsrEngine):
        raise TypeError(f"{engine!r} is not an ASR engine")
    speech, _ = sf.read(SPEECH_CLIP, dtype="float32", frames=int(WARM_SECONDS * SAMPLE_RATE))  # a 16 kHz asset
    # Greedy: the same encoder and decoder graphs a beam search runs, at half its cost (every start and hot swap); on
    # the window batch requests get: Whisper's 30 s, or fitted when SPEECH_MODEL__WINDOW_PAD_S is set.
    engine.transcribe(speech, "en", options=DecodeOptions(beam_size=1, window_pad_s=spec.window_pad_s))
    engine.transcribe(speech, "en", draft=True)  # streaming partials take the short-window path


ASR = EngineKind(
    kind="asr",
    load=_load_asr,
    warm=_warm_asr,
    bundled_dir=lambda spec, cache_dir: model_dir_for(spec.profile, cache_dir),
    build_command=lambda spec: f"python -m serving.build.export --profile {spec.profile}",
)


def _load_tts(model_dir: Path, spec: ModelSpec) -> Engine:
    from serving.tts import load_voice

    return load_voice(model_dir)


def _warm_tts(engine: Engine, spec: ModelSpec) -> None:
    from serving.tts import TtsEngine

    if not isinstance(engine, TtsEngine):
        raise TypeError(f"{engine!r} is not a TTS engine")
    engine.synthesize("The voice is ready.")


TTS = EngineKind(
    kind="tts",
    load=_load_tts,
    warm=_warm_tts,
    bundled_dir=lambda spec, cache_dir: voice_dir_for(spec.profile, cache_dir),
    build_command=lambda spec: f"python -m serving.build.voice --voice {spec.profile}",
)

ENGINE_KINDS: dict[str, EngineKind] = {"asr": ASR, "tts": TTS}
