"""Voice activity detection: Silero VAD run by onnxruntime, for stream endpointing and long-form chunking.

The ONNX files ship inside the installed ``silero_vad`` package; they are located without importing that package
(whose import pulls in torch) and never fetched from a hub at run time. One :class:`SileroVad` (one ONNX session,
safe to run from several threads) serves every stream; each stream owns a :class:`VadStream` with its own
recurrent state, so streams never see each other's audio. :class:`SileroSequence` scores a whole recording with
the package's sequence export of the same network: one ONNX call per block of windows instead of one per window.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from serving.engine import SAMPLE_RATE

STREAM_MODEL = "silero_vad.onnx"
SEQUENCE_MODEL = "silero_vad_16k_sequence.onnx"
WINDOW = 512  # samples per Silero step at 16 kHz (32 ms)
_CONTEXT = 64  # samples of the previous window the v5+ models expect in front of each step
# Windows per sequence-model call: 16 s of audio, so the Python loop runs rarely and a block's input stays ~1 MB.
_BLOCK_WINDOWS = 512
_LSTM_STATE = (1, 1, 128)
# Silero's own endpointing drops out of speech only below threshold - 0.15, so a wavering score does not split words.
_HYSTERESIS = 0.15


class VadError(RuntimeError):
    """The Silero model is missing or unusable."""


def bundled_model_path(name: str = STREAM_MODEL) -> Path:
    """An ONNX file (``STREAM_MODEL`` or ``SEQUENCE_MODEL``) from the installed silero-vad package's data directory."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadError("the silero-vad package is not installed; it ships the VAD model (pip install -e '.[serving]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise VadError(f"{path} is missing from the installed silero-vad package")
    return path


def _session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the shipped graphs carry unused initializers that ORT warns about
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class SileroVad:
    """The loaded Silero model: well under a millisecond a window, but run off the event loop all the same,
    because a stream that is behind hands it seconds of audio at once."""

    def __init__(self, model_path: Path | None = None) -> None:
        self._session = _session(model_path or bundled_model_path())
        self._rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def stream(self, threshold: float, end_silence_ms: int, pause_ms: int | None = None) -> VadStream:
        """A stream's endpointer: ``end`` after ``end_silence_ms`` of silence, and (when ``pause_ms`` is set and
        shorter) ``pause`` after ``pause_ms`` of it, the moment a speculative final may start."""
        windows = max(1, end_silence_ms * SAMPLE_RATE // 1000 // WINDOW)
        pause = None if pause_ms is None else max(1, pause_ms * SAMPLE_RATE // 1000 // WINDOW)
        return VadStream(self, threshold=threshold, end_silence_windows=windows, pause_windows=pause)

    def speech_probability(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """P(speech) for one window (``_CONTEXT + WINDOW`` samples) and the next recurrent state."""
        probability, next_state = self._session.run(
            None, {"input": window[np.newaxis, :], "state": state, "sr": self._rate}
        )
        return float(probability[0, 0]), next_state


@dataclass(frozen=True)
class VadEvent:
    """Speech started or ended at ``sample`` (counted from the start of the stream)."""

    kind: str  # "start", "pause" (speech may have ended: silence began) or "end"
    sample: int


class VadStream:
    """One stream's endpointer: feed it audio of any length, get start/end-of-speech events with positions."""

    def __init__(
        self, vad: SileroVad, threshold: float, end_silence_windows: int, pause_windows: int | None = None
    ) -> None:
        self._vad = vad
        self._threshold = threshold
        self._end_silence_windows = end_silence_windows
        self._pause_windows = pause_windows
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._buffer = np.zeros(_CONTEXT, dtype=np.float32)  # context + samples not yet a whole window
        self._position = 0  # samples consumed into whole windows
        self._silent_windows = 0
        self.is_speech = False
        self.last_speech_end = 0  # end (in samples) of the last window that reached the threshold

    def feed(self, audio: np.ndarray) -> list[VadEvent]:
        self._buffer = np.concatenate([self._buffer, audio.astype(np.float32, copy=False)])
        events: list[VadEvent] = []
        while len(self._buffer) >= _CONTEXT + WINDOW:
            window = self._buffer[: _CONTEXT + WINDOW]
            probability, self._state = self._vad.speech_probability(window, self._state)
            self._buffer = self._buffer[WINDOW:]
            events.extend(self._step(probability))
            self._position += WINDOW
            if probability >= self._threshold:
                self.last_speech_end = self._position
        return events

    @property
    def is_paused(self) -> bool:
        """In speech but silent for ``pause_ms`` (not yet for the end): the speaker may have finished."""
        return self.is_speech and self._pause_windows is not None and self._silent_windows >= self._pause_windows

    def end_speech(self) -> None:
        """The client ended the utterance (a flush): speech heard from here on starts a new one."""
        self.is_speech = False
        self._silent_windows = 0

    def _step(self, probability: float) -> list[VadEvent]:
        if not self.is_speech:
            if probability >= self._threshold:
                self.is_speech = True
                self._silent_windows = 0
                return [VadEvent("start", self._position)]
            return []
        if probability >= self._threshold:
            self._silent_windows = 0
            return []
        if probability >= self._threshold - _HYSTERESIS and not self._silent_windows:
            return []
        # Once the score has dropped out, wavering back into the hysteresis band still counts as silence.
        self._silent_windows += 1
        if self._silent_windows >= self._end_silence_windows:
            self.is_speech = False
            return [VadEvent("end", self._position + WINDOW)]
        if self._silent_windows == self._pause_windows:
            return [VadEvent("pause", self._position + WINDOW)]
        return []


class SileroSequence:
    """Silero over a recording already in memory: per-window speech probabilities equal to :class:`VadStream`'s.

    About 8 s of one CPU per hour of audio, against 20 s window by window. Safe to call from several threads.
    """

    def __init__(self, model_path: Path | None = None) -> None:
        self._session = _session(model_path or bundled_model_path(SEQUENCE_MODEL))

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """P(speech) of each whole ``WINDOW`` of ``audio`` (a trailing partial window is not scored)."""
        windows = len(audio) // WINDOW
        hidden = np.zeros(_LSTM_STATE, np.float32)
        cell = np.zeros(_LSTM_STATE, np.float32)
        scores = np.empty(windows, np.float32)
        for first in range(0, windows, _BLOCK_WINDOWS):
            count = min(_BLOCK_WINDOWS, windows - first)
            start = first * WINDOW
            # Each row is a window behind the last _CONTEXT samples before it (zeros before the first window).
            frames = audio[start : start + count * WINDOW].astype(np.float32, copy=False).reshape(count, WINDOW)
            block = np.empty((count, _CONTEXT + WINDOW), np.float32)
            block[:, _CONTEXT:] = frames
            block[1:, :_CONTEXT] = frames[:-1, -_CONTEXT:]
            block[0, :_CONTEXT] = audio[start - _CONTEXT : start] if start else 0.0
            probabilities, hidden, cell = self._session.run(None, {"input": block, "h": hidden, "c": cell})
            scores[first : first + count] = probabilities.reshape(-1)
        return scores
