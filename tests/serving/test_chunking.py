"""Cutting a long recording into Whisper windows: every stretch of speech lands in exactly one window of <= 30 s."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from serving.chunking import (
    CUT_SNAP_S,
    SPEECH_PAD_S,
    SPEECH_THRESHOLD,
    Span,
    Window,
    pack_into_windows,
    plan_windows,
    speech_end_in,
    speech_regions,
    split_long,
)
from serving.mel import CHUNK_SAMPLES
from serving.vad import WINDOW

RATE = 16_000
PAD = round(SPEECH_PAD_S * RATE)


def scores(*runs: tuple[float, int]) -> np.ndarray:
    """Per-window VAD scores from (score, windows) runs."""
    return np.concatenate([np.full(count, score, np.float32) for score, count in runs])


def test_a_speech_region_is_padded_on_both_sides_and_clamped_to_the_audio():
    probabilities = scores((0.0, 100), (0.9, 50), (0.0, 100))
    assert speech_regions(probabilities, 250 * WINDOW) == [Span(100 * WINDOW - PAD, 150 * WINDOW + PAD)]
    at_the_edges = scores((0.9, 20), (0.0, 30), (0.9, 10))
    assert speech_regions(at_the_edges, 60 * WINDOW + 100) == [
        Span(0, 20 * WINDOW + PAD),
        Span(50 * WINDOW - PAD, 60 * WINDOW + 100),
    ]


def test_a_short_dip_or_a_wavering_score_does_not_split_speech():
    dip = scores((0.9, 50), (0.1, 3), (0.9, 50), (0.0, 50))  # 96 ms under the silence threshold
    wavering = scores((0.9, 50), (0.4, 40), (0.9, 50), (0.0, 50))  # in the hysteresis band, never below it
    for probabilities in (dip, wavering):
        regions = speech_regions(probabilities, len(probabilities) * WINDOW, pad_s=0.0)
        assert len(regions) == 1, regions


def test_pauses_longer_than_twice_the_padding_separate_regions():
    probabilities = scores((0.9, 50), (0.0, 60), (0.9, 50), (0.0, 10), (0.9, 50))
    regions = speech_regions(probabilities, len(probabilities) * WINDOW)
    assert [(r.start // WINDOW, r.end // WINDOW) for r in regions] == [(0, 62), (97, 220)]


def test_speech_that_never_pauses_for_a_window_is_cut_in_its_longest_quiet_stretch():
    # 70 s of speech with a 0.5 s pause at 40 s and a 0.2 s one at 50 s.
    windows_per_s = RATE / WINDOW
    probabilities = np.full(round(70 * windows_per_s), 0.9, np.float32)
    probabilities[round(40 * windows_per_s) : round(40.5 * windows_per_s)] = 0.05
    probabilities[round(50 * windows_per_s) : round(50.2 * windows_per_s)] = 0.05
    region = Span(0, len(probabilities) * WINDOW)
    pieces = split_long(region, probabilities, CHUNK_SAMPLES)
    assert pieces[0].start == region.start and pieces[-1].end == region.end
    assert all(a.end == b.start for a, b in itertools.pairwise(pieces)), "pieces tile the region"
    assert all(piece.length <= CHUNK_SAMPLES for piece in pieces)
    cut_s = [piece.end / RATE for piece in pieces[:-1]]
    assert any(40 <= cut <= 40.5 for cut in cut_s), cut_s


def test_speech_without_any_pause_is_still_cut_into_windows_that_fit():
    probabilities = np.random.default_rng(4).uniform(0.6, 1.0, 5000).astype(np.float32)
    pieces = split_long(Span(0, 5000 * WINDOW), probabilities, CHUNK_SAMPLES)
    assert all(0 < piece.length <= CHUNK_SAMPLES for piece in pieces)
    assert sum(piece.length for piece in pieces) == 5000 * WINDOW


def test_consecutive_regions_share_a_window_while_their_speech_fits_in_30_seconds():
    seconds = [(0, 8), (10, 20), (22, 29), (31, 40), (75, 78), (90, 120)]
    regions = [Span(a * RATE, b * RATE) for a, b in seconds]
    windows = pack_into_windows(regions, CHUNK_SAMPLES)
    assert [[(s.start // RATE, s.end // RATE) for s in w.spans] for w in windows] == [
        [(0, 8), (10, 20), (22, 29)],  # 25 s of speech; the pauses between are dropped
        [(31, 40), (75, 78)],
        [(90, 120)],
    ]
    assert [w.samples // RATE for w in windows] == [25, 12, 30]


def test_a_window_hands_the_encoder_its_spans_back_to_back():
    recording = np.arange(100, dtype=np.float32)
    window = Window((Span(10, 20), Span(50, 55)))
    np.testing.assert_array_equal(window.audio(recording), np.r_[10:20, 50:55].astype(np.float32))
    assert (window.start, window.end, window.samples) == (10, 55, 15)


@pytest.mark.parametrize("seed", range(6))
def test_every_window_the_vad_calls_speech_is_inside_exactly_one_planned_window(seed):
    rng = np.random.default_rng(seed)
    # Random talk: bursts of speech of 0.1-40 s between pauses of 0.03-12 s, about 10 minutes.
    runs = []
    for _ in range(120):
        runs.append((rng.uniform(0.0, 0.3), int(rng.uniform(1, 375))))
        runs.append((rng.uniform(0.55, 1.0), int(rng.uniform(3, 1250))))
    probabilities = np.concatenate([rng.uniform(s - 0.05, s + 0.05, n).clip(0, 1) for s, n in runs])
    total = len(probabilities) * WINDOW + 300
    windows = plan_windows(probabilities.astype(np.float32), total, CHUNK_SAMPLES)
    assert all(0 < w.samples <= CHUNK_SAMPLES for w in windows)
    spans = [span for w in windows for span in w.spans]
    assert all(s.length > 0 for s in spans)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans)), "ordered and disjoint"
    assert spans[-1].end <= total
    speech = np.flatnonzero(probabilities >= SPEECH_THRESHOLD)
    covered = np.zeros(len(probabilities), bool)
    for span in spans:
        covered[-(-span.start // WINDOW) : span.end // WINDOW] = True
    lost = speech[~covered[speech]]
    assert lost.size == 0, f"speech windows outside every planned window: {lost[:10]}"


def test_a_time_in_a_window_maps_back_through_its_spans_to_the_recording():
    window = Window((Span(16_000, 96_000), Span(200_000, 280_000)))  # 5 s of speech, a pause, 5 s more
    assert window.sample_at(0.0) == 16_000
    assert window.sample_at(1.5) == 40_000
    assert window.sample_at(7.5) == 240_000
    assert window.sample_at(5.0, is_end=True) == 96_000, "an end on the cut is the first span's end"
    assert window.sample_at(29.0) == 280_000, "past the window's audio is its end"


def test_a_time_near_a_cut_belongs_to_the_speech_on_the_other_side():
    window = Window((Span(16_000, 96_000), Span(200_000, 280_000)))
    snap = CUT_SNAP_S - 0.1
    assert window.sample_at(5.0 - snap) == 200_000, "a start just before the cut opens the speech after it"
    assert window.sample_at(5.0 + snap, is_end=True) == 96_000, "an end just after the cut closes the speech before"
    assert window.sample_at(5.0 - snap, is_end=True) == round((5.0 - snap) * RATE) + 16_000
    assert window.sample_at(5.0 + snap) == round(snap * RATE) + 200_000


def test_a_windows_speech_ends_at_its_last_step_heard_not_at_its_padding_or_silence():
    probabilities = scores((0.0, 10), (0.9, 40), (0.0, 300))
    whole_clip = Window((Span(0, 350 * WINDOW),))
    assert speech_end_in(whole_clip, probabilities) == pytest.approx(50 * WINDOW / RATE)
    packed = Window((Span(0, 20 * WINDOW), Span(30 * WINDOW, 60 * WINDOW)))
    assert speech_end_in(packed, probabilities) == pytest.approx((20 + 20) * WINDOW / RATE), "measured in the window"
    assert speech_end_in(Window((Span(100 * WINDOW, 200 * WINDOW),)), probabilities) == 0.0
