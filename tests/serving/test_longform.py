"""Long recordings lose no speech: every sentence comes back, in timed segments, with nothing made up in the pauses.

One 2.5 minute recording (sentences by four voices, pauses of 0.1-10 s, a sentence across every 30 s boundary,
a faint noise floor) is transcribed once for the module; each test checks one property of that transcript.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from serving import mel
from serving.engine import DecodeOptions
from serving.mel import CHUNK_SAMPLES, HOP_LENGTH, N_FFT

RATE = 16_000
# Segments are timed by Whisper's timestamp tokens, which may lie this far outside the speech (into the VAD's padding).
SLACK_S = 1.0
# The longest clip long_recording reads; a segment is a phrase, never a window of several sentences.
LONGEST_SENTENCE_S = 8.0


@pytest.fixture(scope="module")
def english(reference_sentences) -> list[str]:
    return [s.text for s in reference_sentences if s.language == "en"]


@pytest.fixture(scope="module")
def recording(english, long_recording):
    return long_recording(english, 150)


@pytest.fixture(scope="module")
def transcript(whisper_engine, recording):
    """The transcription, and the longest audio the feature front end was ever handed while making it."""
    seen: list[int] = []
    spectrogram = mel.log_mel_spectrogram

    def recorded(audio, n_mels):
        seen.append(len(audio))
        return spectrogram(audio, n_mels)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mel, "log_mel_spectrogram", recorded)
        # Greedy: what is tested is that no speech is lost; beam search over long audio is the bench's.
        result = whisper_engine.transcribe(recording.audio, options=DecodeOptions(beam_size=1))
    return result, max(seen)


def overlapping(segments, start: float, end: float) -> str:
    return " ".join(s.text for s in segments if s.start < end + SLACK_S and s.end > start - SLACK_S)


def test_the_recording_puts_a_sentence_across_every_30_second_boundary(recording):
    duration = len(recording.audio) / RATE
    assert duration >= 150
    for boundary in range(30, int(duration), 30):
        assert any(s.speech[0] + 0.5 < boundary < s.speech[1] - 0.5 for s in recording.sentences), boundary


def test_every_sentence_across_a_window_boundary_is_transcribed(transcript, recording, normalize_text):
    result, _ = transcript
    duration = len(recording.audio) / RATE
    for boundary in range(30, int(duration), 30):
        (sentence,) = [s for s in recording.sentences if s.speech[0] < boundary < s.speech[1]]
        said = normalize_text(sentence.text).split()
        heard = normalize_text(overlapping(result.segments, *sentence.speech)).split()
        found = sum(word in heard for word in said)
        assert found >= 0.5 * len(said), f"at {boundary} s, {sentence.text!r} came back as {' '.join(heard)!r}"


def test_a_long_recording_is_transcribed_as_accurately_as_single_sentences(transcript, recording, word_error_rate):
    result, _ = transcript
    wer = word_error_rate([recording.text], [result.text])
    print(f"\nlong-form WER over {len(recording.sentences)} sentences, {len(recording.audio) / RATE:.0f} s: {wer:.1%}")
    assert wer <= 0.15, result.text
    assert result.audio_seconds == pytest.approx(len(recording.audio) / RATE)
    assert result.language == "en"


def test_segments_are_ordered_apart_inside_the_audio_and_cover_every_sentence(transcript, recording):
    result, _ = transcript
    segments = result.segments
    assert all(0 <= s.start <= s.end <= result.audio_seconds for s in segments), segments
    assert all(a.end <= b.start for a, b in itertools.pairwise(segments)), segments
    assert " ".join(s.text for s in segments) == result.text
    silent = [s.text for s in recording.sentences if not overlapping(segments, *s.speech)]
    assert not silent, f"no segment covers {silent}"


def test_segments_start_and_end_at_speech_and_pauses_add_no_words(transcript, recording, word_errors):
    result, _ = transcript
    speech = [s.speech for s in recording.sentences]
    for segment in result.segments:
        assert any(start - SLACK_S <= segment.start <= end for start, end in speech), f"{segment} starts in a pause"
        assert any(start <= segment.end <= end + SLACK_S for start, end in speech), f"{segment} ends in a pause"
    errors = word_errors([recording.text], [result.text])
    assert errors.insertions <= 0.03 * (errors.hits + errors.substitutions + errors.deletions), result.text


def test_segments_are_phrases_timed_by_whisper_not_whole_windows(transcript, recording):
    result, _ = transcript
    assert len(result.segments) >= 0.8 * len(recording.sentences), result.segments
    assert all(s.end - s.start <= LONGEST_SENTENCE_S + SLACK_S for s in result.segments), result.segments


def test_features_are_computed_one_window_at_a_time(transcript, recording):
    _, longest = transcript
    assert len(recording.audio) > 4 * CHUNK_SAMPLES
    assert longest <= CHUNK_SAMPLES + N_FFT + HOP_LENGTH, "a feature pass saw more than one 30 s window of audio"


def test_the_language_is_detected_on_the_first_speech_not_the_silence_before_it(whisper_engine, synthesize):
    spanish = [synthesize(t, voice="es") for t in ("La casa es muy grande y bonita.", "Me gusta mucho leer libros.")]
    audio = np.concatenate([np.zeros(35 * RATE, np.float32), *spanish, np.zeros(RATE, np.float32)])
    result = whisper_engine.transcribe(audio)
    assert result.language == "es", result
    assert result.segments and result.segments[0].start >= 34, result.segments
