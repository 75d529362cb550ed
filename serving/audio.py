"""Turn request bodies into what every engine takes: mono float32 PCM at 16 kHz in [-1, 1].

Containers are recognised by their magic bytes rather than trusted from ``Content-Type`` (clients send
``application/octet-stream`` for everything); raw PCM16 has no magic, so it is chosen by passing its sample rate.
libsndfile (bundled in the soundfile wheel) decodes WAV, Ogg Opus/Vorbis and FLAC; soxr resamples.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile
import soxr

from serving.engine import SAMPLE_RATE

# Rates real capture devices and codecs produce; anything else is far more likely a bad parameter than audio.
SUPPORTED_SAMPLE_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_CHANNELS = 8
# RIFF writers that stream to a pipe cannot seek back, and leave these as the data-chunk size.
_UNKNOWN_RIFF_SIZES = (0, 0xFFFFFFFF)


class AudioError(ValueError):
    """The client's audio cannot be used; ``status_code`` is the HTTP status that tells it why."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def container_of(body: bytes) -> str | None:
    """``wav``, ``ogg`` or ``flac`` from the body's magic bytes, or None for anything else."""
    if body[:4] in (b"RIFF", b"RF64") and body[8:12] == b"WAVE":
        return "wav"
    if body[:4] == b"OggS":
        return "ogg"
    if body[:4] == b"fLaC":
        return "flac"
    return None


def decode(body: bytes, sample_rate: int | None = None, max_audio_s: float | None = None) -> np.ndarray:
    """Decode an upload to 16 kHz mono float32.

    ``sample_rate`` set means the body is raw little-endian mono PCM16 at that rate; None means a WAV, Ogg or
    FLAC file whose header says how to read it.
    """
    if not body:
        raise AudioError("the request body is empty; send WAV, Ogg/Opus, FLAC or raw PCM16 audio")
    if sample_rate is not None:
        audio, rate = _pcm16(body, sample_rate), sample_rate
    else:
        audio, rate = _container(body)
    _check_duration(len(audio) / rate, max_audio_s)
    return to_model_rate(audio, rate)


def pcm16_to_float(frame: bytes) -> np.ndarray:
    """Little-endian PCM16 bytes as float32 in [-1, 1)."""
    if len(frame) % 2:
        raise AudioError(f"PCM16 data of {len(frame)} bytes is not a whole number of 2-byte samples")
    return np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0


def to_model_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at ``rate`` resampled to the engines' 16 kHz."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    return np.clip(audio, -1.0, 1.0)


def _pcm16(body: bytes, sample_rate: int) -> np.ndarray:
    _check_rate(sample_rate, "sample_rate")
    if container_of(body) is not None:
        raise AudioError(
            f"the body is a {container_of(body)} file but sample_rate={sample_rate} asks for raw PCM16; "
            "leave sample_rate out for WAV, Ogg or FLAC uploads",
            status_code=415,
        )
    return pcm16_to_float(body)


def _container(body: bytes) -> tuple[np.ndarray, int]:
    kind = container_of(body)
    if kind is None:
        raise AudioError(
            f"the body ({len(body)} bytes starting {body[:8]!r}) is not WAV, Ogg or FLAC audio; "
            "for headerless PCM16 pass ?sample_rate=<Hz>",
            status_code=415,
        )
    if kind == "wav":
        _check_wav_complete(body)
    try:
        info = soundfile.info(io.BytesIO(body))
        _check_rate(info.samplerate, f"the {kind} file's sample rate")
        if not 1 <= info.channels <= MAX_CHANNELS:
            raise AudioError(f"the {kind} file has {info.channels} channels; at most {MAX_CHANNELS} are accepted")
        audio, rate = soundfile.read(io.BytesIO(body), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, struct.error) as exc:
        raise AudioError(f"could not decode the {kind} body ({len(body)} bytes): {_reason(exc)}") from exc
    if audio.shape[0] == 0:
        raise AudioError(f"the {kind} file holds no samples")
    return audio.mean(axis=1), rate


def _check_wav_complete(body: bytes) -> None:
    """Refuse a WAV whose data chunk is shorter than its header says: libsndfile would quietly return the rest."""
    offset = 12
    while offset + 8 <= len(body):
        chunk_id, size = body[offset : offset + 4], struct.unpack_from("<I", body, offset + 4)[0]
        if chunk_id == b"data":
            present = len(body) - offset - 8
            if size not in _UNKNOWN_RIFF_SIZES and present < size:
                raise AudioError(
                    f"the WAV body is truncated: its data chunk declares {size} bytes but {present} are present"
                )
            return
        offset += 8 + size + (size & 1)
    raise AudioError(f"the WAV body ({len(body)} bytes) is truncated: it ends before its data chunk")


def _check_rate(rate: int, what: str) -> None:
    if rate not in SUPPORTED_SAMPLE_RATES:
        allowed = ", ".join(str(r) for r in SUPPORTED_SAMPLE_RATES)
        raise AudioError(f"{what} {rate} Hz is not supported; use one of {allowed}", status_code=422)


def _check_duration(seconds: float, max_audio_s: float | None) -> None:
    if seconds == 0:
        raise AudioError("the audio holds no samples")
    if max_audio_s is not None and seconds > max_audio_s:
        raise AudioError(
            f"the audio is {seconds:.1f} s long; at most {max_audio_s:g} s per request "
            "(use the /v1/asr/stream WebSocket for longer audio)",
            status_code=413,
        )


def _reason(exc: Exception) -> str:
    # libsndfile's message starts with the file object's repr, which means nothing to a client.
    return str(exc).split(": ", 1)[-1]
