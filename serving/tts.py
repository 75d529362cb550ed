"""The TTS engine: a Piper voice (VITS, ONNX) run by onnxruntime, one sentence at a time.

A voice's model directory (``serving/model_dir.py``, kind ``tts``) holds::

    manifest.json     {"name", "version", "kind": "tts", "profile", "files": {relative path: sha256 hex}}
    voice.onnx        the Piper VITS graph: phoneme ids -> 16-bit-range float audio
    voice.onnx.json   Piper's config: sample rate, espeak-ng voice, phoneme_id_map, inference scales

Phonemes become ids exactly as Piper's ``phonemes_to_ids`` does: BOS (``^``), then each phoneme's ids followed by
the pad id (``_``), then EOS (``$``); a phoneme the voice has no id for is skipped (and counted in the log), as
Piper skips it. Speed divides the voice's length scale, so 2.0 speaks twice as fast.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import onnxruntime

from serving.engine import Engine
from serving.model_dir import VOICE_CONFIG_FILE, VOICE_MODEL_FILE, ModelError, verify_model_dir
from serving.phonemes import EspeakPhonemizer, PhonemizerError

log = logging.getLogger(__name__)

_BOS, _EOS, _PAD = "^", "$", "_"


@runtime_checkable
class TtsEngine(Engine, Protocol):
    """A loaded voice. Implementations must be safe to call from several threads."""

    sample_rate: int

    def synthesize(self, sentence: str, speed: float = 1.0) -> np.ndarray:
        """Mono float32 audio in [-1, 1] at ``sample_rate`` of one sentence (already normalized)."""
        ...


@dataclass(frozen=True)
class VoiceConfig:
    """What this engine reads of Piper's ``.onnx.json``."""

    sample_rate: int
    espeak_voice: str
    phoneme_ids: dict[str, list[int]]
    noise_scale: float
    length_scale: float
    noise_w: float

    @classmethod
    def read(cls, path: Path) -> VoiceConfig:
        try:
            raw = json.loads(path.read_text())
            inference = raw.get("inference", {})
            config = cls(
                sample_rate=int(raw["audio"]["sample_rate"]),
                espeak_voice=str(raw["espeak"]["voice"]),
                phoneme_ids={str(k): [int(i) for i in v] for k, v in raw["phoneme_id_map"].items()},
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"{path} is not a Piper voice config this engine understands ({exc!r})") from exc
        missing = [symbol for symbol in (_BOS, _EOS, _PAD) if symbol not in config.phoneme_ids]
        if missing:
            raise ModelError(f"{path}: phoneme_id_map has no id for {', '.join(missing)}; it is not a Piper voice")
        return config


class PiperVoice:
    """One Piper voice on onnxruntime, shareable across threads (onnxruntime sessions are)."""

    def __init__(self, model_dir: Path, *, threads: int = 1) -> None:
        manifest = verify_model_dir(model_dir, "tts")
        self.name = manifest.name
        self.version = manifest.version
        self.config = VoiceConfig.read(model_dir / VOICE_CONFIG_FILE)
        self.sample_rate = self.config.sample_rate
        try:
            self._phonemizer = EspeakPhonemizer(self.config.espeak_voice)
        except PhonemizerError as exc:
            raise ModelError(f"voice {self.name} {self.version}: {exc}") from exc
        options = onnxruntime.SessionOptions()
        # One thread per synthesis: requests run side by side on the inference pool instead of fighting for cores.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session: onnxruntime.InferenceSession | None = onnxruntime.InferenceSession(
            str(model_dir / VOICE_MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self._closed = threading.Event()

    def phoneme_ids(self, phonemes: str) -> list[int]:
        ids_of = self.config.phoneme_ids
        ids = [*ids_of[_BOS], *ids_of[_PAD]]
        skipped: set[str] = set()
        for phoneme in phonemes:
            if phoneme not in ids_of:
                skipped.add(phoneme)
                continue
            ids += [*ids_of[phoneme], *ids_of[_PAD]]
        if skipped:
            log.debug("voice %s has no ids for %r; skipped as Piper does", self.name, sorted(skipped))
        return [*ids, *ids_of[_EOS]]

    def synthesize(self, sentence: str, speed: float = 1.0) -> np.ndarray:
        session = self._session
        if session is None or self._closed.is_set():
            raise ModelError(f"voice {self.name}/{self.version} is closed; load the model again")
        ids = self.phoneme_ids(self._phonemizer.phonemize(sentence))
        config = self.config
        scales = np.array([config.noise_scale, config.length_scale / speed, config.noise_w], dtype=np.float32)
        (audio,) = session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": scales,
            },
        )
        return np.clip(audio.reshape(-1), -1.0, 1.0).astype(np.float32, copy=False)

    def close(self) -> None:
        self._closed.set()
        self._session = None


def load_voice(model_dir: Path) -> PiperVoice:
    return PiperVoice(model_dir)
