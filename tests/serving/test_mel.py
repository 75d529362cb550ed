"""The numpy front end must feed the model exactly what Whisper's torch front end would."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from serving.mel import (
    CHUNK_FRAMES,
    CHUNK_SAMPLES,
    HOP_LENGTH,
    N_FFT,
    draft_features,
    log_mel_spectrogram,
    mel_filters,
    window_features,
)

if TYPE_CHECKING:
    import torch

# torch is imported by the reference functions, not at collection: every test worker collects every file.


def _torch_slaney_filters(n_mels: int, sample_rate: int = 16_000) -> torch.Tensor:
    """torchaudio's ``melscale_fbanks(norm="slaney", mel_scale="slaney")``, written out: [n_mels, n_fft/2+1]."""
    import torch

    def hz_to_mel(hz: float) -> float:
        return hz * 3 / 200 if hz < 1000 else 15 + math.log(hz / 1000) / (math.log(6.4) / 27)

    def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
        return torch.where(mel < 15, mel * 200 / 3, 1000 * torch.exp((math.log(6.4) / 27) * (mel - 15)))

    all_freqs = torch.linspace(0, sample_rate // 2, N_FFT // 2 + 1, dtype=torch.float64)
    f_pts = mel_to_hz(torch.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2, dtype=torch.float64))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    banks = torch.clamp(torch.minimum(down, up), min=0)
    banks *= (2.0 / (f_pts[2:] - f_pts[:-2])).unsqueeze(0)
    return banks.T.float()


def _whisper_log_mel(audio: np.ndarray, filters: torch.Tensor) -> np.ndarray:
    """``whisper.audio.log_mel_spectrogram`` as published, given its filterbank."""
    import torch

    stft = torch.stft(torch.from_numpy(audio), N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(filters @ magnitudes, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy()


def test_mel_filterbank_matches_the_slaney_filterbank_whisper_ships():
    np.testing.assert_allclose(mel_filters(80), _torch_slaney_filters(80).numpy(), atol=1e-6)
    np.testing.assert_allclose(mel_filters(128), _torch_slaney_filters(128).numpy(), atol=1e-6)


def test_log_mel_of_speech_matches_whispers_torch_front_end(synthesize):
    speech = synthesize("The juice of lemons makes fine punch.")
    padded = np.concatenate([speech, np.zeros(16_000 * 30 - len(speech), np.float32)])
    ours = log_mel_spectrogram(padded, 80)
    reference = _whisper_log_mel(padded, _torch_slaney_filters(80))
    assert ours.shape == reference.shape == (80, CHUNK_FRAMES)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.mark.parametrize("seconds", [0.0, 0.005, 3.2, 30.0])
def test_a_window_is_whispers_features_of_the_clip_then_zeros_up_to_30_seconds(seconds):
    audio = np.random.default_rng(1).normal(0, 0.1, int(16_000 * seconds)).astype(np.float32)
    whisper = log_mel_spectrogram(np.concatenate([audio, np.zeros(16_000 * 30, np.float32)]), 80)
    window = window_features(audio, 80)
    frames = len(audio) // HOP_LENGTH
    assert window.shape == (80, CHUNK_FRAMES)
    # The last two frames' FFTs reach past the clip: reflected audio here, Whisper's appended silence there.
    content = max(0, frames - 2)
    np.testing.assert_allclose(window[:, :content], whisper[:, :content], atol=1e-5)
    assert not window[:, frames:].any()


@pytest.mark.parametrize(
    ("seconds", "pad", "frames"), [(0.0, 5.0, 500), (2.37, 5.0, 800), (3.0, 3.0, 600), (27.5, 5.0, CHUNK_FRAMES)]
)
def test_a_fitted_window_is_the_30_second_windows_start_up_to_the_padding_in_whole_seconds(seconds, pad, frames):
    audio = np.random.default_rng(4).normal(0, 0.1, int(16_000 * seconds)).astype(np.float32)
    fitted = window_features(audio, 80, pad_seconds=pad)
    assert fitted.shape == (80, frames)
    np.testing.assert_array_equal(fitted, window_features(audio, 80)[:, :frames])


def test_a_window_refuses_more_than_30_seconds_so_features_never_cover_a_whole_recording():
    with pytest.raises(ValueError, match=r"at most 480000 samples \(30 s\); got 480001"):
        window_features(np.zeros(CHUNK_SAMPLES + 1, np.float32), 80)


@pytest.mark.parametrize(("seconds", "frames"), [(0.0, 100), (2.37, 400), (3.0, 400), (29.5, CHUNK_FRAMES)])
def test_a_draft_window_is_the_clip_plus_a_second_of_silence_in_whole_seconds(seconds, frames):
    audio = np.random.default_rng(2).normal(0, 0.1, int(16_000 * seconds)).astype(np.float32)
    draft = draft_features(audio, 80, pad_seconds=1.0, quantum_seconds=1.0)
    assert draft.shape == (80, frames)
    # Whisper's features of the clip padded with silence, but the last: its reflection at the cut sees zeros.
    whisper = log_mel_spectrogram(np.concatenate([audio, np.zeros(16_000 * 30, np.float32)]), 80)
    np.testing.assert_allclose(draft[:, : frames - 1], whisper[:, : frames - 1], atol=1e-5)


def test_a_draft_of_more_than_30_seconds_keeps_the_last_30():
    audio = np.random.default_rng(3).normal(0, 0.1, 16_000 * 40).astype(np.float32)
    draft = draft_features(audio, 80, pad_seconds=1.0, quantum_seconds=1.0)
    np.testing.assert_allclose(draft, draft_features(audio[-16_000 * 30 :], 80, 1.0, 1.0))
