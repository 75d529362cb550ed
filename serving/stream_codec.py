"""What a stream's binary frames hold, chosen when the stream opens (``?codec=``): PCM16 or Opus packets.

Opus is for mobile links: a 20 ms packet at 16 kbps is 40 bytes against PCM16's 640. Each binary message is one
Opus packet as an encoder emits it (RFC 6716, no Ogg or WebM container), decoded by libopus through PyAV, whose
wheels bundle it (the same library serves Linux hosts and the CUDA image without a system package). libopus
decodes to 48 kHz here; soxr brings that to the 16 kHz the engine takes, one packet at a time.
"""

from __future__ import annotations

from typing import Literal, Protocol

import av
import numpy as np
import soxr

from serving.audio import pcm16_to_float
from serving.engine import SAMPLE_RATE

Codec = Literal["pcm16", "opus"]
CODECS: tuple[Codec, ...] = ("pcm16", "opus")
OPUS_RATE = 48_000  # what FFmpeg's libopus decoder emits, whatever rate the packets were encoded at
# RFC 6716: a packet holds at most 120 ms of audio (6 frames of 20 ms, or 48 of 2.5 ms).
MAX_OPUS_PACKET_S = 0.12


class CodecError(ValueError):
    """A frame is not valid audio in the stream's codec; the message says what was wrong and what is expected."""


class FrameDecoder(Protocol):
    """Turns one binary frame into 16 kHz mono float32 samples; one instance per stream (codecs keep state)."""

    codec: Codec

    def decode(self, frame: bytes) -> np.ndarray: ...


class Pcm16Frames:
    codec: Codec = "pcm16"

    def decode(self, frame: bytes) -> np.ndarray:
        if len(frame) % 2:
            raise CodecError(f"a frame of {len(frame)} bytes is not a whole number of 2-byte PCM16 samples")
        return pcm16_to_float(frame)


class OpusFrames:
    """One Opus packet per frame, any mode and bitrate the encoder chose, mono or stereo (mixed down to mono)."""

    codec: Codec = "opus"

    def __init__(self) -> None:
        self._decoder = av.CodecContext.create("libopus", "r")
        self._decoder.layout = "mono"
        self._resampler = soxr.ResampleStream(OPUS_RATE, SAMPLE_RATE, 1, dtype="float32")
        self._packets = 0

    def decode(self, frame: bytes) -> np.ndarray:
        self._packets += 1
        if not frame:
            # FFmpeg reads an empty packet as the end of the stream; Opus has no empty packet (even DTX sends one).
            raise CodecError(f"Opus packet {self._packets} is empty; send one encoded packet per binary message")
        try:
            decoded = [block.to_ndarray() for block in self._decoder.decode(av.Packet(frame))]
        except (av.error.FFmpegError, ValueError) as exc:
            raise CodecError(
                f"Opus packet {self._packets} ({len(frame)} bytes, TOC byte 0x{frame[0]:02x}) could not be decoded: "
                f"{exc.strerror if isinstance(exc, av.error.FFmpegError) else exc}; send each packet an Opus encoder "
                "emits (20 ms at 16 kbps is about 40 bytes) as one binary message, without a container"
            ) from exc
        if not decoded:
            return np.zeros(0, np.float32)
        samples = np.concatenate([block.reshape(-1) for block in decoded])
        if len(samples) > MAX_OPUS_PACKET_S * OPUS_RATE:
            raise CodecError(
                f"Opus packet {self._packets} decoded to {len(samples) / OPUS_RATE * 1000:.0f} ms; a packet holds at "
                f"most {MAX_OPUS_PACKET_S * 1000:.0f} ms"
            )
        pcm = samples.astype(np.float32) / 32768.0 if samples.dtype == np.int16 else samples.astype(np.float32)
        return self._resampler.resample_chunk(pcm)


def frame_decoder(codec: Codec) -> FrameDecoder:
    """A fresh decoder for one stream's frames."""
    if codec == "opus":
        return OpusFrames()
    if codec == "pcm16":
        return Pcm16Frames()
    raise CodecError(f"codec {codec!r} is not supported; use one of {', '.join(CODECS)}")
