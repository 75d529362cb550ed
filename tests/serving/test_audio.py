"""Upload decoding: every accepted container and rate becomes 16 kHz mono float32; every bad body a clear error."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import soundfile

from serving import audio


def tone(rate: int, seconds: float = 1.0, hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def encoded(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def dominant_hz(samples: np.ndarray, rate: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


CONTAINERS = [
    *((rate, "WAV", subtype) for rate in (8000, 16000, 22050, 44100, 48000) for subtype in ("PCM_16", "FLOAT")),
    *((rate, "FLAC", "PCM_16") for rate in (16000, 44100)),
    # Opus itself runs only at 8, 12, 16, 24 and 48 kHz.
    *((rate, "OGG", "OPUS") for rate in (8000, 16000, 48000)),
    (22050, "OGG", "VORBIS"),
]


@pytest.mark.parametrize(("rate", "fmt", "subtype"), CONTAINERS)
def test_containers_at_any_supported_rate_become_16_khz_mono(rate, fmt, subtype):
    clip = audio.decode(encoded(tone(rate, channels=2), rate, fmt, subtype))
    assert clip.dtype == np.float32
    assert abs(len(clip) - 16_000) < 400, "one second in, one second out"
    assert abs(dominant_hz(clip) - 440) < 5


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_raw_pcm16_is_read_at_the_given_rate(rate):
    pcm = (tone(rate) * 32767).astype("<i2").tobytes()
    clip = audio.decode(pcm, sample_rate=rate)
    assert abs(len(clip) - 16_000) < 400
    assert abs(dominant_hz(clip) - 440) < 5


@pytest.mark.parametrize(
    ("body", "kwargs", "status", "message"),
    [
        (b"", {}, 400, "the request body is empty"),
        (b"<html>not audio</html>", {}, 415, "is not WAV, Ogg or FLAC audio; for headerless PCM16 pass ?sample_rate="),
        (b"\x01\x02\x03", {"sample_rate": 16000}, 400, "3 bytes is not a whole number of 2-byte samples"),
        (b"\x00\x00" * 100, {"sample_rate": 96000}, 422, "sample_rate 96000 Hz is not supported; use one of 8000"),
        (b"\x00\x00" * 100, {"sample_rate": 0}, 422, "sample_rate 0 Hz is not supported"),
        (b"OggS" + b"\x00" * 60, {}, 400, "could not decode the ogg body"),
    ],
)  # fmt: skip
def test_bad_bodies_get_a_client_error_that_says_why(body, kwargs, status, message):
    with pytest.raises(audio.AudioError) as error:
        audio.decode(body, **kwargs)
    assert error.value.status_code == status
    assert message in str(error.value)


def test_a_truncated_wav_is_refused_rather_than_silently_shortened():
    wav = encoded(tone(16000), 16000, "WAV", "PCM_16")
    with pytest.raises(audio.AudioError, match="WAV body is truncated: its data chunk declares 32000 bytes but 9956"):
        audio.decode(wav[:10_000])
    with pytest.raises(audio.AudioError, match="ends before its data chunk"):
        audio.decode(wav[:30])


def test_a_wav_streamed_with_unknown_length_is_accepted():
    wav = bytearray(encoded(tone(16000), 16000, "WAV", "PCM_16"))
    wav[40:44] = b"\xff\xff\xff\xff"  # data chunk size as written by a pipe that cannot seek back
    assert abs(len(audio.decode(bytes(wav))) - 16_000) < 10


def test_an_unsupported_container_rate_is_refused():
    with pytest.raises(audio.AudioError, match="the wav file's sample rate 96000 Hz is not supported") as error:
        audio.decode(encoded(tone(96000), 96000, "WAV", "PCM_16"))
    assert error.value.status_code == 422


def test_audio_longer_than_the_limit_is_refused_with_413():
    with pytest.raises(audio.AudioError, match=r"the audio is 3\.0 s long; at most 2 s per request") as error:
        audio.decode(encoded(tone(16000, seconds=3), 16000, "WAV", "PCM_16"), max_audio_s=2)
    assert error.value.status_code == 413


def test_a_container_sent_as_raw_pcm_is_refused_instead_of_decoded_as_noise():
    with pytest.raises(audio.AudioError, match="is a wav file but sample_rate=16000 asks for raw PCM16"):
        audio.decode(encoded(tone(16000), 16000, "WAV", "PCM_16"), sample_rate=16000)


def flac_declaring(seconds: float, frames_in_header: int | None, channels: int = 1, rate: int = 16_000) -> bytes:
    """A FLAC of ``seconds`` of tone whose STREAMINFO total-samples field says ``frames_in_header`` (0: unknown)."""
    body = bytearray(encoded(tone(rate, seconds, channels=channels), rate, "FLAC", "PCM_16"))
    if frames_in_header is not None:
        # STREAMINFO starts at byte 8; its low 36 bits at bytes 18-25 hold the total sample count.
        packed = int.from_bytes(body[18:26], "big")
        body[18:26] = ((packed & ~((1 << 36) - 1)) | frames_in_header).to_bytes(8, "big")
    return bytes(body)


def test_a_file_whose_header_declares_too_much_audio_is_refused_before_any_sample_is_decoded():
    # One real second of audio behind a header that claims an hour: a decoder would find out only by decoding.
    claimed_hour = flac_declaring(1.0, frames_in_header=3600 * 16_000)
    with pytest.raises(audio.AudioError) as error:
        audio.decode(claimed_hour, max_audio_s=60)
    assert error.value.status_code == 413
    assert str(error.value).startswith("the flac file's header says the audio is 3600.0 s long; at most 60 s")


def test_a_flac_that_does_not_say_how_long_it_is_is_refused_with_the_fix():
    with pytest.raises(audio.AudioError, match="the flac file does not say how long it is") as error:
        audio.decode(flac_declaring(1.0, frames_in_header=0), max_audio_s=60)
    assert error.value.status_code == 400


def test_more_channels_than_accepted_are_refused_from_the_header():
    with pytest.raises(audio.AudioError, match="the wav file has 9 channels; at most 8 are accepted"):
        audio.decode(encoded(tone(16000, 0.1, channels=9), 16000, "WAV", "PCM_16"))


@pytest.mark.parametrize(("rate", "fmt", "subtype"), [(48000, "FLAC", "PCM_16"), (44100, "WAV", "PCM_16")])
def test_audio_longer_than_a_block_is_decoded_block_by_block_without_seams(rate, fmt, subtype):
    clip = audio.decode(encoded(tone(rate, seconds=3.5, channels=2), rate, fmt, subtype), max_audio_s=60)
    assert abs(len(clip) - 56_000) < 50
    steady = clip[1000:-1000]
    expected = 0.5 * np.sin(2 * np.pi * 440 * (np.arange(1000, 1000 + len(steady)) / 16_000))
    assert np.max(np.abs(steady - expected)) < 0.01, "a resampler restarted at each block would leave clicks"


def test_a_long_many_channel_file_within_the_limit_decodes_in_bounded_memory():
    """Two minutes of 8-channel 48 kHz audio: decoded whole it is 184 MB of float samples before the downmix; block
    by block the peak is the 16 kHz mono result (7.7 MB) a few times over, plus one block."""
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", 48_000, 8, format="FLAC", subtype="PCM_16") as source:
        for _ in range(12):
            source.write(np.zeros((480_000, 8), dtype=np.int16))
    tracemalloc.start()
    try:
        clip = audio.decode(buffer.getvalue(), max_audio_s=3600)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(clip) == 120 * 16_000
    assert peak < 40 * 1024 * 1024, f"decoding peaked at {peak / 2**20:.0f} MiB"
