"""Shared serving fixtures: the bundled model, a loaded engine, synthetic speech and word error rate.

Server, streaming and model-store tests reuse these. The model is exported once per machine into the normal
cache (``$SPEECH_MODEL_CACHE`` or ``~/.cache/speech-serving/models``) and loaded once per session. Speech comes
from the Debian packages ``espeak-ng`` and ``flite``; they are required, not optional, so a missing one fails
with the package to install instead of silently skipping the accuracy tests.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import soundfile as sf
import soxr

from serving.engine import SAMPLE_RATE
from serving.export import ensure_bundled_model
from serving.whisper_onnx import WhisperOnnxEngine, load_engine

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


_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """English words for 0 <= n < 10**9 ("one hundred five"), the one spelling both sides of a WER are mapped to."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            tail = "" if rest == 0 else " " + number_words(rest)
            return f"{number_words(head)} {name}{tail}"
    raise ValueError(f"number {n} is out of range; expected 0 <= n < 10**9")


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation, digits spelled out, so '25 boxes.' and 'Twenty-five boxes' agree."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.lower())
    text = re.sub(r"\d+", lambda m: " " + number_words(int(m.group())) + " ", text)
    return re.sub(r"[^\w\s]|_", " ", text.replace("'", "")).split()


def _edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER: total word edits over total reference words, after ``normalize_words``."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses; they must pair up")
    refs = [normalize_words(r) for r in references]
    edits = sum(_edit_distance(r, normalize_words(h)) for r, h in zip(refs, hypotheses))
    return edits / max(1, sum(len(r) for r in refs))


@pytest.fixture(name="synthesize", scope="session")
def synthesize_fixture() -> Callable[..., np.ndarray]:
    return synthesize


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
def whisper_engine(bundled_model_dir: Path) -> Iterator[WhisperOnnxEngine]:
    engine = load_engine(bundled_model_dir)
    yield engine
    engine.close()
