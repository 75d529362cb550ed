"""Shared serving fixtures: the bundled model, a loaded engine, synthetic speech and word error rate.

Server, streaming and model-store tests reuse these. The model is exported once per machine into the normal
cache (``$SPEECH_MODEL_CACHE`` or ``~/.cache/speech-serving/models``) and loaded once per session. Speech comes
from the Debian packages ``espeak-ng`` and ``flite``; they are required, not optional, so a missing one fails
with the package to install instead of silently skipping the accuracy tests.
"""

from __future__ import annotations

import functools
import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
from whisper_normalizer.english import EnglishTextNormalizer

from serving.build.export import ensure_bundled_model
from serving.build.voice import ensure_bundled_voice
from serving.cpu import single_threaded_blas
from serving.engine import SAMPLE_RATE
from serving.whisper_onnx import WhisperOnnxEngine, load_engine
from tests.serving.redis_server import RedisServer
from tests.serving.server_fixtures import (
    ADMIN_KEY,
    ENV_KEY,
    FILE_KEY,
    GUARDED_UPLOAD_IDLE_S,
    SHARED_INFERENCE_THREADS,
    SHARED_LIMITS,
    SHARED_STREAM,
    LiveServer,
    digest,
    live_server,
    local_settings,
    server_model,
)

SENTENCES_FILE = Path(__file__).parents[1] / "data" / "asr_sentences.txt"
# espeak-ng voice per language of SENTENCES_FILE; flite only speaks English.
ESPEAK_VOICES = {"en": "en-us", "es": "es"}
FLITE_VOICE = "slt"  # the 16 kHz US English voice built into Debian's flite
# espeak-ng at its default 175 wpm with no word gaps is hard even for people (base WER ~35%); 140 wpm with 20 ms
# gaps is still unmistakably synthetic but intelligible. Both engines start and stop right at the speech, which
# no recording does, so each clip gets this much silence on either side.
ESPEAK_ARGS = ("-s", "140", "-g", "2")
EDGE_SILENCE_S = 0.3

TtsEngine = Literal["espeak-ng", "flite"]
_NORMALIZER = EnglishTextNormalizer()


@dataclass(frozen=True)
class Sentence:
    language: str
    text: str


def load_sentences(path: Path = SENTENCES_FILE) -> list[Sentence]:
    sentences = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            language, text = line.split(" ", 1)
            sentences.append(Sentence(language, text.strip()))
    return sentences


def _tts_command(text: str, voice: str, engine: TtsEngine, wav: Path) -> list[str]:
    if engine == "espeak-ng":
        return ["espeak-ng", "-v", voice, *ESPEAK_ARGS, "-w", str(wav), text]
    if engine == "flite":
        return ["flite", "-voice", FLITE_VOICE if voice in ("en", "en-us") else voice, "-t", text, "-o", str(wav)]
    raise ValueError(f"TTS engine {engine!r} is not supported; use 'espeak-ng' or 'flite'")


@functools.lru_cache(maxsize=512)
def _synthesize_cached(text: str, voice: str, engine: TtsEngine) -> np.ndarray:
    if shutil.which(engine) is None:
        pytest.fail(f"{engine} is not installed; the ASR tests need it: apt-get install -y {engine}")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(_tts_command(text, voice, engine, wav), check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    resampled = soxr.resample(mono, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else mono
    edge = np.zeros(int(EDGE_SILENCE_S * SAMPLE_RATE), np.float32)
    speech = np.concatenate([edge, resampled.astype(np.float32), edge])
    speech.setflags(write=False)
    return speech


def synthesize(text: str, voice: str = "en-us", engine: TtsEngine = "espeak-ng") -> np.ndarray:
    """16 kHz mono float32 speech of ``text``; ``voice`` is an espeak-ng voice, or a flite one ('en-us' = slt)."""
    return _synthesize_cached(text, voice, engine).copy()


def normalize_text(text: str) -> str:
    """Whisper's English normaliser: lower case, no punctuation, numbers as digits, British spellings American."""
    return _NORMALIZER(text)


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER (jiwer) after ``normalize_text`` on both sides, as Whisper's own evaluations score English."""
    return word_errors(references, hypotheses).wer


def word_errors(references: list[str], hypotheses: list[str]) -> jiwer.WordOutput:
    """jiwer's alignment of normalised texts: WER plus substitutions, deletions (lost words), insertions."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses; they must pair up")
    return jiwer.process_words([normalize_text(r) for r in references], [normalize_text(h) for h in hypotheses])


@dataclass(frozen=True)
class PlacedSentence:
    """A sentence read into a recording; its clip (speech plus ``EDGE_SILENCE_S`` each side) spans start..end s."""

    text: str
    start: float
    end: float

    @property
    def speech(self) -> tuple[float, float]:
        return self.start + EDGE_SILENCE_S, self.end - EDGE_SILENCE_S


@dataclass(frozen=True)
class Recording:
    audio: np.ndarray
    sentences: tuple[PlacedSentence, ...]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)


# Voices that take turns in a long recording: two espeak-ng accents and two flite speakers.
LONG_VOICES: tuple[tuple[str, TtsEngine], ...] = (
    ("en-us", "espeak-ng"),
    ("en-us", "flite"),
    ("en-gb", "espeak-ng"),
    ("rms", "flite"),
)


_MAX_HALF_CLIP_S = 4.0


def long_recording(texts: list[str], seconds: float, *, seed: int = 15, across_every_s: float = 30.0) -> Recording:
    """At least ``seconds`` of ``texts`` read in turn by ``LONG_VOICES``, like a talk: mostly short pauses, longer
    ones between paragraphs, now and then 5-10 s of silence, over a faint noise floor (-60 dBFS).

    Every multiple of ``across_every_s`` falls inside a sentence's speech: where a pause would jump over one, the
    next sentence is moved back to straddle it, so cutting at fixed 30 s windows would split a sentence each time.
    Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    sentences: list[PlacedSentence] = []
    cursor = 0  # samples placed so far
    boundary = across_every_s
    for index in itertools.count():
        if cursor >= seconds * SAMPLE_RATE:
            break
        text = texts[index % len(texts)]
        voice, engine = LONG_VOICES[(index + index // len(texts)) % len(LONG_VOICES)]
        clip = synthesize(text, voice, engine)
        half = len(clip) / SAMPLE_RATE / 2
        if half > _MAX_HALF_CLIP_S:
            raise ValueError(f"{text!r} by {engine} lasts {2 * half:.1f} s; long recordings take clips up to 8 s")
        roll = rng.random()
        pause = rng.uniform(0.1, 0.8) if roll < 0.7 else rng.uniform(1.0, 3.0) if roll < 0.95 else rng.uniform(5, 10)
        start = cursor / SAMPLE_RATE + pause if index else 0.0
        # Nothing ends within _MAX_HALF_CLIP_S of a boundary unless it is centred on it, so there is always room
        # to centre the sentence that crosses it.
        if start + 2 * half > boundary - _MAX_HALF_CLIP_S:
            start = boundary - half
            boundary += across_every_s
        first = round(start * SAMPLE_RATE)
        parts += [np.zeros(first - cursor, np.float32), clip]
        cursor = first + len(clip)
        sentences.append(PlacedSentence(text, first / SAMPLE_RATE, cursor / SAMPLE_RATE))
    audio = np.concatenate(parts)
    audio += rng.normal(0, 1e-3, len(audio)).astype(np.float32)
    return Recording(audio, tuple(sentences))


def pytest_configure() -> None:
    """numpy's BLAS on one thread from collection on, as the server keeps it (``create_app``): the engines that tests
    load directly would otherwise leave OpenBLAS's idle threads spinning after every log-mel product. Here, on the
    main thread before any model loads (serving/cpu.py says why)."""
    single_threaded_blas()


@pytest.fixture(name="synthesize", scope="session")
def synthesize_fixture() -> Callable[..., np.ndarray]:
    return synthesize


@pytest.fixture(name="normalize_text", scope="session")
def normalize_text_fixture() -> Callable[[str], str]:
    return normalize_text


@pytest.fixture(name="long_recording", scope="session")
def long_recording_fixture() -> Callable[..., Recording]:
    return long_recording


@pytest.fixture(name="word_errors", scope="session")
def word_errors_fixture() -> Callable[[list[str], list[str]], jiwer.WordOutput]:
    return word_errors


@pytest.fixture(name="word_error_rate", scope="session")
def word_error_rate_fixture() -> Callable[[list[str], list[str]], float]:
    return word_error_rate


@pytest.fixture(scope="session")
def reference_sentences() -> list[Sentence]:
    return load_sentences()


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The base model directory, exported on first use (about 20 s), then reused from the cache."""
    return ensure_bundled_model("base")


@pytest.fixture(scope="session")
def tiny_en_model_dir() -> Path:
    return ensure_bundled_model("tiny.en")


@pytest.fixture(scope="session")
def bundled_voice_dir() -> Path:
    """The bundled voice's directory, built on first use (a copy and a hash, seconds), beside the models."""
    return ensure_bundled_voice("joe")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A real redis-server of the module's own (free port, temporary directory), stopped when the module ends."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def whisper_engine(bundled_model_dir: Path) -> Iterator[WhisperOnnxEngine]:
    """base loaded once, on one intra-op thread as the shared test server (``local_settings``)."""
    engine = load_engine(bundled_model_dir, threads=1)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_en_engine(tiny_en_model_dir: Path) -> Iterator[WhisperOnnxEngine]:
    """tiny.en loaded once: for tests about who waits for whom, batching and the search, which every model size
    shares; accuracy is base's (``whisper_engine``) and the benches'."""
    engine = load_engine(tiny_en_model_dir, threads=1)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def guarded_server(tiny_en_model_dir, tmp_path_factory) -> Iterator[LiveServer]:
    """A server as a careful deployment runs it: transcription keys from the variable and a mounted secret file,
    a separate admin key, and a short upload idle timeout. Shared by the auth and limits tests, which check who
    gets in and what is refused, not accuracy: it serves tiny.en, the quickest model to load and run."""
    secret = tmp_path_factory.mktemp("secret") / "api-key-hashes"
    secret.write_text(f"# one digest a line\n{digest(FILE_KEY)}\n")
    settings = local_settings(
        tiny_en_model_dir.parents[1],
        model=server_model(tiny_en_model_dir.parents[1], "tiny.en"),
        auth={
            "api_key_hashes": [digest(ENV_KEY)],
            "api_key_hashes_file": secret,
            "admin_key_hashes": [digest(ADMIN_KEY)],
        },
        limits={"upload_idle_timeout_s": GUARDED_UPLOAD_IDLE_S, "max_upload_bytes": 2_000_000, "max_audio_s": 60},
    )
    with live_server(settings) as live:
        yield live


@pytest.fixture(scope="session")
def shared_server(bundled_model_dir) -> Iterator[LiveServer]:
    """A server without keys and with small limits (``SHARED_*``), shared by the batch and streaming tests: one
    model load instead of one per module. Tests that count metrics compare before and after."""
    settings = local_settings(
        bundled_model_dir.parents[1],
        inference_threads=SHARED_INFERENCE_THREADS,
        limits=SHARED_LIMITS,
        stream=SHARED_STREAM,
    )
    with live_server(settings) as live:
        yield live
