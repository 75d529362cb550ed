"""Whisper's guards against loops and hallucinations, as plain functions over decoded windows.

They follow openai/whisper's ``transcribe.py``, which faster-whisper also follows: a window whose text
compresses too well (a loop), whose tokens are improbable, or whose tail repeats one phrase is decoded again at a
higher temperature; a window the model believes is silence and whose tokens are improbable yields nothing, since
its text would be a hallucination.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

# whisper.transcribe's defaults.
COMPRESSION_RATIO_THRESHOLD = 2.4
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
BEST_OF = 5  # samples per window at a temperature above zero; the most probable one is kept
# Seconds between two timestamp tokens.
TIME_PRECISION = 0.02
# A phrase of up to this many tokens repeated this many times in a row is a decoding loop, not speech.
MAX_LOOP_NGRAM = 16
LOOP_REPEATS = 4


@dataclass
class Decoded:
    """One window's sampled text tokens (end-of-text excluded) and the scores the guards read."""

    tokens: list[int]
    sum_logprob: float
    no_speech_prob: float
    temperature: float
    text: str = ""
    is_loop: bool = False

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / (len(self.tokens) + 1)  # + 1: the end-of-text token counts too

    @property
    def compression_ratio(self) -> float:
        return compression_ratio(self.text)

    @property
    def is_silence(self) -> bool:
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOGPROB_THRESHOLD

    @property
    def needs_fallback(self) -> bool:
        """Decode again hotter: a loop, or text that is repetitive or improbable, unless the window is silence."""
        if self.is_silence:
            return False
        return (
            self.is_loop or self.compression_ratio > COMPRESSION_RATIO_THRESHOLD or self.avg_logprob < LOGPROB_THRESHOLD
        )


def compression_ratio(text: str) -> float:
    """UTF-8 bytes over zlib-compressed bytes: natural text stays under 2.4, a phrase said over and over does not."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def strip_loop(tokens: list[int]) -> tuple[list[int], bool]:
    """If the tail repeats one n-gram ``LOOP_REPEATS`` times, keep a single copy and report the loop."""
    for n in range(1, MAX_LOOP_NGRAM + 1):
        span = n * LOOP_REPEATS
        if len(tokens) < span:
            break
        gram = tokens[-n:]
        if all(tokens[-span + i * n : len(tokens) - span + (i + 1) * n] == gram for i in range(LOOP_REPEATS)):
            return tokens[: len(tokens) - span + n], True
    return tokens, False


def timed_pieces(tokens: list[int], timestamp_begin: int) -> list[tuple[float | None, float | None, list[int]]]:
    """The text tokens between timestamp tokens, as (start, end, tokens) in seconds of the window: a timestamp
    before text opens a phrase, one after text closes it; None where the phrase has no timestamp on that side."""
    pieces: list[tuple[float | None, float | None, list[int]]] = []
    start: float | None = None
    text: list[int] = []
    for token in tokens:
        if token < timestamp_begin:
            text.append(token)
            continue
        seconds = round((token - timestamp_begin) * TIME_PRECISION, 2)
        if text:
            pieces.append((start, seconds, text))
            start, text = None, []
        else:
            start = seconds
    if text:
        pieces.append((start, None, text))
    return pieces


def best_candidate(candidates: list[Decoded]) -> Decoded:
    """Among samples of one window, the highest mean log-probability (Whisper ranks by it without a length penalty)."""
    return max(candidates, key=lambda d: d.sum_logprob / max(1, len(d.tokens)))


def final_choice(attempts: list[Decoded]) -> Decoded:
    """The attempt to keep when every temperature tripped a guard: the most probable that is not repetitive,
    as faster-whisper does, else the most probable."""
    readable = [d for d in attempts if d.compression_ratio <= COMPRESSION_RATIO_THRESHOLD and not d.is_loop]
    return max(readable or attempts, key=lambda d: d.avg_logprob)


def log_softmax(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Each row's log-probabilities, written into ``out`` when given (which may be ``logits`` itself)."""
    shifted = np.subtract(logits, np.max(logits, axis=-1, keepdims=True), out=out)
    shifted -= np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    return shifted
