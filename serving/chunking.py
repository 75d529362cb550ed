"""Where to cut a long recording for Whisper: speech regions from VAD scores, packed into windows of at most 30 s.

The scheme of faster-whisper's batched pipeline: Silero marks speech, each region is padded so that soft word
edges stay in, a region that never pauses for a whole window is split at its quietest stretch, and consecutive
regions are packed into one window, the pauses between them dropped, while their audio fits 30 s. Every cut then
falls in a pause, so no word straddles two windows (the loss fixed 30 s windows suffer); silences are never
decoded, so Whisper cannot hallucinate over them; and a window holds up to 30 s of speech, so a recording with
many pauses needs fewer encoder passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.engine import SAMPLE_RATE
from serving.vad import WINDOW

# Silero's defaults for the threshold and its hysteresis; faster-whisper's batched pipeline for the rest.
SPEECH_THRESHOLD = 0.5
SILENCE_THRESHOLD = SPEECH_THRESHOLD - 0.15
MIN_SILENCE_S = 0.16
SPEECH_PAD_S = 0.4
# How far from a cut between two spans of a window a timestamp is taken to belong to the other side (the padding,
# plus the half second by which Whisper's phrase boundaries lag the speech).
CUT_SNAP_S = SPEECH_PAD_S + 0.5


@dataclass(frozen=True)
class Span:
    """Samples ``[start, end)`` of a recording."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def speech_regions(
    probabilities: np.ndarray,
    total_samples: int,
    *,
    threshold: float = SPEECH_THRESHOLD,
    silence_threshold: float = SILENCE_THRESHOLD,
    min_silence_s: float = MIN_SILENCE_S,
    pad_s: float = SPEECH_PAD_S,
) -> list[Span]:
    """Disjoint, ordered spans of speech from per-window scores, each padded by ``pad_s`` on both sides.

    Speech starts at a window scoring ``threshold`` or more and ends once the score has stayed below
    ``threshold`` for ``min_silence_s``, counted from its first drop under ``silence_threshold`` (Silero's
    hysteresis, so a wavering score inside a word does not end it).
    """
    min_silence = max(1, round(min_silence_s * SAMPLE_RATE / WINDOW))
    raw: list[tuple[int, int]] = []
    start: int | None = None
    silent_since: int | None = None
    for index, score in enumerate(probabilities.tolist()):
        if start is None:
            if score >= threshold:
                start, silent_since = index, None
            continue
        if score >= threshold:
            silent_since = None
        elif score < silence_threshold and silent_since is None:
            silent_since = index
        if silent_since is not None and index - silent_since >= min_silence:
            raw.append((start, silent_since))
            start = silent_since = None
    if start is not None:
        raw.append((start, len(probabilities)))
    pad = round(pad_s * SAMPLE_RATE)
    regions: list[Span] = []
    for first, last in raw:
        span = Span(max(0, first * WINDOW - pad), min(total_samples, last * WINDOW + pad))
        if regions and span.start <= regions[-1].end:
            regions[-1] = Span(regions[-1].start, span.end)
        else:
            regions.append(span)
    return regions


def split_long(
    region: Span, probabilities: np.ndarray, max_samples: int, *, silence_threshold: float = SILENCE_THRESHOLD
) -> list[Span]:
    """``region`` cut into pieces of at most ``max_samples``, each cut in the middle of the longest quiet run
    in the second half of what would fit (the quietest window if the speaker never pauses)."""
    pieces: list[Span] = []
    start = region.start
    while region.end - start > max_samples:
        low, high = (start + max_samples // 2) // WINDOW, (start + max_samples) // WINDOW
        scores = probabilities[low:high]
        cut = (low + _middle_of_longest_run(scores < silence_threshold, scores)) * WINDOW
        pieces.append(Span(start, cut))
        start = cut
    pieces.append(Span(start, region.end))
    return pieces


def _middle_of_longest_run(quiet: np.ndarray, scores: np.ndarray) -> int:
    best_start, best_length, run_start = 0, 0, None
    for index, is_quiet in enumerate([*quiet.tolist(), False]):
        if is_quiet and run_start is None:
            run_start = index
        elif not is_quiet and run_start is not None:
            if index - run_start > best_length:
                best_start, best_length = run_start, index - run_start
            run_start = None
    if best_length == 0:
        return int(np.argmin(scores))
    return best_start + best_length // 2


@dataclass(frozen=True)
class Window:
    """Consecutive spans decoded as one Whisper window: their audio back to back, at most 30 s in all."""

    spans: tuple[Span, ...]

    @property
    def start(self) -> int:
        return self.spans[0].start

    @property
    def end(self) -> int:
        return self.spans[-1].end

    @property
    def samples(self) -> int:
        return sum(span.length for span in self.spans)

    def audio(self, recording: np.ndarray) -> np.ndarray:
        return np.concatenate([recording[span.start : span.end] for span in self.spans])

    def sample_at(self, seconds: float, *, is_end: bool = False) -> int:
        """The recording's sample at ``seconds`` into the window's audio (its spans back to back); a time past the
        window's audio is its end.

        Whisper times a phrase's end late and the next one's start at that same instant, so near a cut, where the
        window left a pause out, its times land on the wrong side: a start within ``CUT_SNAP_S`` of its span's end
        belongs to the speech after the cut (the next span's start), an end within ``CUT_SNAP_S`` of its span's
        start to the speech before it (the previous span's end). Segments then never stretch across a pause.
        """
        offset = max(0, round(seconds * SAMPLE_RATE))
        snap = round(CUT_SNAP_S * SAMPLE_RATE)
        for index, span in enumerate(self.spans):
            if offset < span.length or (is_end and offset == span.length):
                if is_end and index > 0 and offset <= snap:
                    return self.spans[index - 1].end
                if not is_end and index + 1 < len(self.spans) and span.length - offset <= snap:
                    return self.spans[index + 1].start
                return span.start + offset
            offset -= span.length
        return self.end


def speech_end_in(window: Window, probabilities: np.ndarray, threshold: float = SPEECH_THRESHOLD) -> float:
    """Seconds into ``window``'s audio at which its last VAD step scoring ``threshold`` or more ends: where its
    speech ends, trailing padding and silence aside (a clip of up to 30 s is one window, silence and all)."""
    last = window.spans[-1]
    before = window.samples - last.length
    first = last.start // WINDOW
    heard = np.flatnonzero(probabilities[first : -(-last.end // WINDOW)] >= threshold)
    end = last.start if heard.size == 0 else min(last.end, (first + int(heard[-1]) + 1) * WINDOW)
    return (before + end - last.start) / SAMPLE_RATE


def pack_into_windows(regions: list[Span], max_samples: int) -> list[Window]:
    """Consecutive regions packed in order while their audio fits ``max_samples``; regions must be ordered,
    disjoint and each at most ``max_samples`` long."""
    windows: list[list[Span]] = []
    room = 0
    for region in regions:
        if windows and region.length <= room:
            windows[-1].append(region)
            room -= region.length
        else:
            windows.append([region])
            room = max_samples - region.length
    return [Window(tuple(spans)) for spans in windows]


def plan_windows(probabilities: np.ndarray, total_samples: int, max_samples: int) -> list[Window]:
    """The windows to decode, ordered and disjoint, each holding at most ``max_samples`` of speech."""
    regions = speech_regions(probabilities, total_samples)
    pieces = [piece for region in regions for piece in split_long(region, probabilities, max_samples)]
    return pack_into_windows(pieces, max_samples)
