"""Encoding synthesized audio as it is made, so each sentence can go to the client before the next is ready.

An :class:`AudioEncoder` takes float32 blocks and returns the bytes they add to the file; ``finish`` returns the
rest. The bytes of one encoder, joined, are the whole file, the same whether a client streamed them or the cache
served them at once.

WAV and raw PCM are written here: a streamed WAV cannot know its length up front, so its RIFF and data sizes are
the "unknown length" value 0xFFFFFFFF, which players and libsndfile read to the end of the stream (what streaming
TTS servers send). The compressed formats go through libsndfile (the ``soundfile`` wheel) into a buffer whose
growth is handed on after each block; Opus is resampled to 48 kHz, the only rate Ogg Opus carries. libsndfile goes
back to rewrite the start of an MP3 (its frame count) and a FLAC (its STREAMINFO) when it closes them, so those two
are sent whole when the last sentence is done: streamed, a player would stop at the length the first bytes gave.
"""

from __future__ import annotations

import io
import struct
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

AudioFormat = Literal["wav", "pcm", "ogg", "opus", "flac", "mp3"]
MEDIA_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "pcm": "audio/L16",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
}
_UNKNOWN_SIZE = 0xFFFFFFFF
# format -> (libsndfile container, subtype)
_LIBSNDFILE = {
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
_OPUS_RATE = 48_000
STREAMED_FORMATS = frozenset({"wav", "pcm", "ogg", "opus"})


def media_type(fmt: str, sample_rate: int) -> str:
    return f"audio/L16; rate={sample_rate}; channels=1" if fmt == "pcm" else MEDIA_TYPES[fmt]


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono PCM WAV header whose sizes say "until the stream ends"."""
    return b"RIFF" + struct.pack("<I", _UNKNOWN_SIZE) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16
    ) + b"data" + struct.pack("<I", _UNKNOWN_SIZE)  # fmt: skip


class AudioEncoder:
    """One file being written in ``fmt`` at ``sample_rate``, a block of mono float32 audio at a time."""

    def __init__(self, fmt: AudioFormat, sample_rate: int) -> None:
        self.format = fmt
        self.sample_rate = sample_rate
        self._started = False
        self._buffer: io.BytesIO | None = None
        self._file: sf.SoundFile | None = None
        self._sent = 0
        if fmt in _LIBSNDFILE:
            container, subtype = _LIBSNDFILE[fmt]
            self._buffer = io.BytesIO()
            rate = _OPUS_RATE if fmt == "opus" else sample_rate
            self._file = sf.SoundFile(self._buffer, "w", rate, 1, subtype, format=container)

    def encode(self, audio: np.ndarray) -> bytes:
        """The bytes ``audio`` adds to the file (may be empty while a compressed encoder buffers)."""
        if self._file is None:
            head = b""
            if self.format == "wav" and not self._started:
                head = wav_header(self.sample_rate)
            self._started = True
            return head + _pcm16(audio)
        if self.format == "opus":
            audio = soxr.resample(audio, self.sample_rate, _OPUS_RATE)
        self._file.write(audio)
        if self.format not in STREAMED_FORMATS:
            return b""
        self._file.flush()
        return self._take()

    def finish(self) -> bytes:
        """The rest of the file; the encoder is done after this."""
        if self._file is None:
            return b"" if self._started or self.format != "wav" else wav_header(self.sample_rate)
        self._file.close()
        return self._take()

    def _take(self) -> bytes:
        assert self._buffer is not None
        data = self._buffer.getbuffer()[self._sent :].tobytes()
        self._sent += len(data)
        return data
