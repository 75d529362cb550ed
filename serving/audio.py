"""Turn request bodies into what every engine takes: mono float32 PCM at 16 kHz in [-1, 1].

Containers are recognised by their magic bytes rather than trusted from ``Content-Type`` (clients send
``application/octet-stream`` for everything); raw PCM16 has no magic, so it is chosen by passing its sample rate.
libsndfile (bundled in the soundfile wheel) decodes WAV, Ogg Opus/Vorbis and FLAC; soxr resamples.

Compressed audio is a decompression bomb waiting to happen: 700 KB of FLAC can hold half an hour of 8-channel
48 kHz silence, gigabytes once decoded. So the duration, rate and channel count are checked from the container's
header before any sample is decoded, and decoding then runs one block at a time (a second of audio, downmixed and
resampled to 16 kHz as it goes), counting what it produced and stopping at the limit even if a header lied. Memory
is one block plus the 16 kHz result, whatever the file claims. :func:`decode` is blocking: callers run it on a
thread, never on the event loop.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import numpy as np
import soundfile
import soxr

from serving.engine import SAMPLE_RATE

# Rates real capture devices and codecs produce; anything else is far more likely a bad parameter than audio.
SUPPORTED_SAMPLE_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_CHANNELS = 8
# libsndfile's frame count for a stream that does not say how long it is (a FLAC written to a pipe).
_UNKNOWN_FRAMES = 0x7FFFFFFFFFFFFFFF
_BLOCK_SECONDS = 1
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
    """Decode an upload to 16 kHz mono float32, refusing audio longer than ``max_audio_s`` with 413.

    ``sample_rate`` set means the body is raw little-endian mono PCM16 at that rate; None means a WAV, Ogg or
    FLAC file whose header says how to read it.
    """
    if not body:
        raise AudioError("the request body is empty; send WAV, Ogg/Opus, FLAC or raw PCM16 audio")
    if sample_rate is not None:
        return _decode_pcm16(body, sample_rate, max_audio_s)
    return _decode_container(body, max_audio_s)


def pcm16_to_float(frame: bytes) -> np.ndarray:
    """Little-endian PCM16 bytes as float32 in [-1, 1)."""
    if len(frame) % 2:
        raise AudioError(f"PCM16 data of {len(frame)} bytes is not a whole number of 2-byte samples")
    return np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0


def _decode_pcm16(body: bytes, sample_rate: int, max_audio_s: float | None) -> np.ndarray:
    _check_rate(sample_rate, "sample_rate")
    if container_of(body) is not None:
        raise AudioError(
            f"the body is a {container_of(body)} file but sample_rate={sample_rate} asks for raw PCM16; "
            "leave sample_rate out for WAV, Ogg or FLAC uploads",
            status_code=415,
        )
    if len(body) % 2:
        raise AudioError(f"PCM16 data of {len(body)} bytes is not a whole number of 2-byte samples")
    _check_duration(len(body) / 2 / sample_rate, max_audio_s, "the audio")
    step = 2 * sample_rate * _BLOCK_SECONDS
    return _resampled((pcm16_to_float(body[at : at + step]) for at in range(0, len(body), step)), sample_rate)


def _decode_container(body: bytes, max_audio_s: float | None) -> np.ndarray:
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
        with soundfile.SoundFile(io.BytesIO(body)) as source:
            _check_header(source, kind, max_audio_s)
            return _resampled(_blocks(source, max_audio_s), source.samplerate)
    except (soundfile.LibsndfileError, RuntimeError, struct.error) as exc:
        raise AudioError(f"could not decode the {kind} body ({len(body)} bytes): {_reason(exc)}") from exc


def _check_header(source: soundfile.SoundFile, kind: str, max_audio_s: float | None) -> None:
    """Refuse what the header already shows to be unusable, before a single sample is decoded."""
    _check_rate(source.samplerate, f"the {kind} file's sample rate")
    if not 1 <= source.channels <= MAX_CHANNELS:
        raise AudioError(f"the {kind} file has {source.channels} channels; at most {MAX_CHANNELS} are accepted")
    if source.frames >= _UNKNOWN_FRAMES:
        raise AudioError(
            f"the {kind} file does not say how long it is (written to a pipe?); send a file whose header "
            "gives its length, e.g. re-encode it to a seekable file"
        )
    if source.frames == 0:
        raise AudioError(f"the {kind} file holds no samples")
    _check_duration(source.frames / source.samplerate, max_audio_s, f"the {kind} file's header says the audio")


def _blocks(source: soundfile.SoundFile, max_audio_s: float | None) -> Iterator[np.ndarray]:
    """The file a block at a time, downmixed to mono; stops with 413 once more than ``max_audio_s`` came out.

    libsndfile stops at the length a header declares, so the count is the bound for any codec that might not.
    """
    block = np.empty((source.samplerate * _BLOCK_SECONDS, source.channels), dtype=np.float32)
    limit = None if max_audio_s is None else max_audio_s * source.samplerate
    decoded = 0
    while len(samples := source.read(out=block)) > 0:
        decoded += len(samples)
        if limit is not None and decoded > limit:
            raise AudioError(
                f"decoding stopped after {max_audio_s:g} s of audio, more than its header declared; at most "
                f"{max_audio_s:g} s per request",
                status_code=413,
            )
        yield samples.mean(axis=1)


def _resampled(blocks: Iterator[np.ndarray], rate: int) -> np.ndarray:
    """Mono float blocks at ``rate`` joined and resampled (streaming, block by block) to the engines' 16 kHz."""
    resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, quality="HQ")
    parts = [block if resampler is None else resampler.resample_chunk(block) for block in blocks]
    if resampler is not None:
        parts.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    audio = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, dtype=np.float32)
    if audio.size == 0:
        raise AudioError("the audio holds no samples")
    return np.clip(audio, -1.0, 1.0, out=audio)


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


def _check_duration(seconds: float, max_audio_s: float | None, what: str) -> None:
    if seconds == 0:
        raise AudioError("the audio holds no samples")
    if max_audio_s is not None and seconds > max_audio_s:
        raise AudioError(
            f"{what} is {seconds:.1f} s long; at most {max_audio_s:g} s per request "
            "(use the /v1/asr/stream WebSocket for longer audio)",
            status_code=413,
        )


def _reason(exc: Exception) -> str:
    # libsndfile's message starts with the file object's repr, which means nothing to a client.
    return str(exc).split(": ", 1)[-1]
