"""Silero VAD from the installed package's ONNX file: speech boundaries found where the speech is."""

from __future__ import annotations

import numpy as np

from serving.vad import _CONTEXT, SEQUENCE_MODEL, WINDOW, SileroSequence, SileroVad, bundled_model_path
from tests.serving.server_fixtures import silence

RATE = 16_000


def test_the_vad_model_comes_from_the_installed_package_not_a_hub():
    path = bundled_model_path()
    assert (path.parent.parent.name, path.parent.name, path.name) == ("silero_vad", "data", "silero_vad.onnx")


def test_each_utterance_is_found_between_its_silences(synthesize):
    first = synthesize("The juice of lemons makes fine punch.", engine="flite")
    second = synthesize("Glue the sheet to the dark blue background.", engine="espeak-ng")
    audio = np.concatenate([silence(1.0), first, silence(1.5), second, silence(1.5)])
    vad = SileroVad().stream(threshold=0.5, end_silence_ms=600)
    events = []
    for offset in range(0, len(audio), 320):  # 20 ms frames, as a stream delivers them
        events.extend(vad.feed(audio[offset : offset + 320]))
    assert [e.kind for e in events] == ["start", "end", "start", "end"], events
    first_end, second_start = (1.0 + len(first) / RATE), (2.5 + len(first) / RATE)
    starts_and_ends = [e.sample / RATE for e in events]
    assert 0.9 <= starts_and_ends[0] <= 1.6, "speech starts after the leading second of silence"
    assert first_end - 0.5 <= starts_and_ends[1] <= first_end + 0.9, "ends within the pause after the first"
    assert second_start - 0.1 <= starts_and_ends[2] <= second_start + 0.6
    assert starts_and_ends[3] <= len(audio) / RATE


def test_silence_and_low_noise_never_start_speech():
    noise = np.random.default_rng(1).normal(0, 0.003, RATE * 3).astype(np.float32)
    vad = SileroVad().stream(threshold=0.5, end_silence_ms=600)
    assert vad.feed(np.concatenate([silence(2.0), noise])) == []


def test_a_whole_recording_scores_as_the_stream_scores_it_window_by_window(synthesize):
    speech = synthesize("The juice of lemons makes fine punch.", engine="flite")
    # Long enough for several sequence-model blocks, ending in a partial window.
    audio = np.concatenate([silence(0.7), speech, silence(1.3), speech] * 4 + [np.zeros(100, np.float32)])
    assert bundled_model_path(SEQUENCE_MODEL).name == "silero_vad_16k_sequence.onnx"
    stream = SileroVad()
    state = np.zeros((2, 1, 128), np.float32)
    padded = np.concatenate([np.zeros(_CONTEXT, np.float32), audio])
    expected = []
    for start in range(0, len(audio) // WINDOW * WINDOW, WINDOW):
        probability, state = stream.speech_probability(padded[start : start + _CONTEXT + WINDOW], state)
        expected.append(probability)
    np.testing.assert_allclose(SileroSequence().probabilities(audio), expected, atol=1e-5)


def test_the_stream_remembers_where_speech_was_last_heard(synthesize):
    speech = synthesize("The juice of lemons makes fine punch.", engine="flite")
    vad = SileroVad().stream(threshold=0.5, end_silence_ms=600)
    vad.feed(np.concatenate([silence(1.0), speech]))
    heard_until = vad.last_speech_end
    assert 1.0 * RATE < heard_until <= (1.0 + len(speech) / RATE) * RATE
    vad.feed(silence(2.0))
    assert vad.last_speech_end == heard_until, "silence moves nothing"


def test_the_stream_is_paused_from_the_pause_until_the_end_or_more_speech(synthesize):
    speech = synthesize("The juice of lemons makes fine punch.", engine="flite")
    half = len(speech) // 2
    vad = SileroVad().stream(threshold=0.5, end_silence_ms=600, pause_ms=200)
    events = vad.feed(np.concatenate([silence(1.0), speech[:half]]))
    assert vad.is_speech and not vad.is_paused, "mid-sentence"
    events += vad.feed(np.concatenate([speech[half:], silence(0.1)]))  # the clip ends in 0.3 s of silence, and more
    assert [e.kind for e in events] == ["start", "pause"] and vad.is_paused, events
    vad.feed(speech[:half])
    assert vad.is_speech and not vad.is_paused, "speech again: no longer paused"
    assert [e.kind for e in vad.feed(silence(1.0))] == ["pause", "end"] and not vad.is_paused
    unpaused = SileroVad().stream(threshold=0.5, end_silence_ms=600)
    unpaused.feed(np.concatenate([silence(1.0), speech, silence(0.1)]))
    assert unpaused.is_speech and not unpaused.is_paused, "without a pause the stream is never paused"
