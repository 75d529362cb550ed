"""The engine protocols: what the registry knows of any model, and what routes and streams know of an ASR model.

A model directory (built by ``serving/build/export.py`` into the local cache, or pulled from the regional model store
under ``models/<name>/<version>/``) holds::

    manifest.json        {"name", "version", "profile", "files": {relative path: sha256 hex}}
    encoder.int8.onnx    INT8 dynamic-quantized encoder; outputs cross-attention K/V for every decoder layer
    decoder.onnx         INT8 decoder step (windows x beams rows) with a self-attention KV cache
    tokenizer.json       Whisper BPE tokenizer (Hugging Face tokenizers format)
    config.json          model hyper-parameters and special-token ids

Audio handed to an engine is always mono float32 PCM at 16 kHz in [-1, 1]; decoding containers and
resampling happen before the engine (``serving/audio.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Segment:
    """What was said between ``start`` and ``end`` (seconds from the start of the audio).

    The scores are Whisper's, for the window the segment was decoded in: mean token log-probability, the zlib
    compression ratio of the window's text, the probability that the window holds no speech, and the sampling
    temperature that produced it (above 0 when a guard made the engine decode again).
    """

    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    tokens: tuple[int, ...] = ()  # the text tokens decoded for it (OpenAI's verbose_json reports them)


@dataclass(frozen=True)
class DecodeOptions:
    """How a batch transcription is decoded, as Whisper's own ``transcribe`` takes it.

    ``prompt`` is text the model reads as what came before each window (spellings, names, a style): every window,
    as in faster-whisper's batched pipeline, since windows are decoded side by side rather than each conditioned on
    the one before. ``temperature`` 0 decodes greedily and samples again
    at rising temperatures where a guard trips; above 0 it samples from that temperature on. At temperature 0,
    ``beam_size`` above 1 searches that many hypotheses per window (faster-whisper's default is 5) instead of
    taking the likeliest token each step.

    ``window_pad_s`` None encodes every window as Whisper was trained, padded to 30 s. A number fits a shorter
    window to its audio, padded with only that many seconds (rounded up to whole seconds): a few seconds of speech
    then cost a fraction of a 30 s window's encoder work, at the same accuracy on the test clips from 3 s of padding
    on (``serving/mel.py``). Streams fit their finals' windows, and the server its batch requests' where
    ``SPEECH_MODEL__WINDOW_PAD_S`` is set; an engine whose encoder takes 30 s windows only ignores it.
    """

    prompt: str | None = None
    temperature: float = 0.0
    beam_size: int = 5
    window_pad_s: float | None = None


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    model_version: str
    audio_seconds: float
    # Wall-clock seconds per stage that ran, e.g. {"vad": 0.01, "encode": 0.12, "decode": 0.30}.
    timings: dict[str, float] = field(default_factory=dict)
    # Ordered, non-overlapping, inside the audio; their texts joined with spaces are ``text``.
    segments: tuple[Segment, ...] = ()


@runtime_checkable
class Engine(Protocol):
    """Any loaded model (ASR, TTS, speaker verification): what the registry needs to hand it out and retire it."""

    name: str
    version: str

    def close(self) -> None:
        """Release sessions and memory; called once no request holds the engine any more."""
        ...


@runtime_checkable
class AsrEngine(Engine, Protocol):
    """A loaded speech-recognition model. Implementations must be safe to call from several threads."""

    @property
    def languages(self) -> list[str]:
        """Language codes ``transcribe`` accepts."""
        ...

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None = None,
        *,
        draft: bool = False,
        prefix: str = "",
        options: DecodeOptions | None = None,
    ) -> Transcription:
        """Transcribe 16 kHz mono float32 audio of any length; ``language`` None means detect it once, on the
        first speech, and use it throughout.

        ``draft`` asks for a faster, less exact pass (a streaming partial); an engine may ignore it, and drafts
        ignore ``options``. A draft's text starts with ``prefix``: words a stream has settled, which the engine need
        not decode again.
        """
        ...

    def transcribe_batch(
        self,
        audios: Sequence[np.ndarray],
        language: str | None = None,
        *,
        draft: bool = False,
        prefix: str = "",
        options: DecodeOptions | None = None,
    ) -> list[Transcription]:
        """:meth:`transcribe` of each recording, decoded together (concurrent streams' drafts or finals): the same
        transcripts as one by one, for less than one by one costs. At most :attr:`batch` recordings are worth
        passing at once."""
        ...

    @property
    def batch(self) -> int:
        """How many windows one decoder step takes at most."""
        ...

    def detect_language(self, audio: np.ndarray) -> str:
        """The most likely language code of ``audio`` (one of :attr:`languages`), detected on its first 30 s."""
        ...
