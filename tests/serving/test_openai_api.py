"""POST /v1/audio/transcriptions with OpenAI's own Python client against the real server on loopback.

The guarded server (keys, tiny.en: the quickest model to run, and the formats are not about accuracy) answers every
response format with a tenant's key and proves auth is the same as /v1/asr's; the shared server (no keys, the base
model) shows that the alias names whichever model is served. Errors must reach the client as OpenAI's exceptions
carrying our message.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import httpx
import openai
import pytest

from tests.serving.server_fixtures import ENV_KEY, LiveServer, sample, scrape, wav_bytes

SPEECH = "Please call Stella and ask her to bring these things with her from the store."
WORDS = ("stella", "bring", "store")
CUE = re.compile(r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)")


def client_of(server: LiveServer, api_key: str = "unused") -> openai.OpenAI:
    # No retries: a refusal must surface as the exception the client raises, not be retried away.
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def client(guarded_server):
    """A tenant of the guarded server: the client every format and refusal test uses."""
    with client_of(guarded_server, ENV_KEY) as openai_client:
        yield openai_client


@pytest.fixture(scope="module")
def speech(synthesize) -> bytes:
    return wav_bytes(synthesize(SPEECH, engine="flite"))


def transcribe(client: openai.OpenAI, audio: bytes, **kwargs):
    return client.audio.transcriptions.create(file=("speech.wav", audio, "audio/wav"), **kwargs)


def said(text: str) -> bool:
    return all(word in text.lower() for word in WORDS)


def error_of(refused: openai.APIStatusError) -> dict[str, Any]:
    """The error object the server sent (the client types a body as any JSON, or none)."""
    body = refused.body
    assert isinstance(body, dict), body
    return body


def seconds_of(match: re.Match, first: int) -> float:
    hours, minutes, whole, millis = (int(match.group(first + i)) for i in range(4))
    return hours * 3600 + minutes * 60 + whole + millis / 1000


def cues_of(captions: str) -> list[tuple[float, float, str]]:
    cues = []
    for block in captions.strip().split("\n\n"):
        lines = block.strip().splitlines()
        index, match = next((i, found) for i, line in enumerate(lines) if (found := CUE.fullmatch(line)))
        cues.append((seconds_of(match, 1), seconds_of(match, 5), " ".join(lines[index + 1 :])))
    return cues


def test_json_is_openais_transcription_object(client, speech):
    result = transcribe(client, speech, model="whisper-1")
    assert isinstance(result, openai.types.audio.Transcription)
    assert said(result.text), result.text


def test_text_is_the_bare_transcript(client, speech):
    result = transcribe(client, speech, model="whisper-1", response_format="text")
    assert isinstance(result, str) and said(result), result


@pytest.mark.parametrize("response_format", ["srt", "vtt"])
def test_captions_are_timed_cues_inside_the_audio(client, speech, response_format):
    captions = transcribe(client, speech, model="whisper-1", response_format=response_format)
    assert isinstance(captions, str)
    assert captions.startswith("WEBVTT\n\n" if response_format == "vtt" else "1\n00:00:0"), captions
    cues = cues_of(captions.removeprefix("WEBVTT\n"))
    assert cues and said(" ".join(text for _, _, text in cues)), captions
    duration = len(speech) / 32_000
    assert all(0 <= start < end <= duration for start, end, _ in cues), cues
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(cues)), cues


def test_verbose_json_has_the_language_duration_and_segments(client, speech):
    result = transcribe(
        client, speech, model="whisper-1", response_format="verbose_json", timestamp_granularities=["segment"]
    )
    assert isinstance(result, openai.types.audio.TranscriptionVerbose)
    assert result.language == "english" and said(result.text)
    assert result.duration == pytest.approx(len(speech) / 32_000, abs=0.01)
    assert result.segments and " ".join(s.text for s in result.segments) == result.text
    first = result.segments[0]
    assert 0 <= first.start < first.end <= result.duration and first.tokens and first.temperature == 0
    assert first.no_speech_prob < 0.5 and first.avg_logprob < 0


def test_the_configured_model_name_works_like_the_alias_and_options_are_honoured(client, speech):
    result = transcribe(
        client, speech, model="whisper-tiny.en", language="en", prompt="Stella, the store.", temperature=0.6,
        response_format="verbose_json",
    )  # fmt: skip
    assert said(result.text), result.text
    assert all(segment.temperature >= 0.6 for segment in result.segments), "sampling started at the asked temperature"


def test_an_unknown_model_is_not_found_and_names_what_is_served(shared_server, speech):
    with client_of(shared_server) as base, pytest.raises(openai.NotFoundError) as refused:
        transcribe(base, speech, model="gpt-4o-transcribe")
    error = error_of(refused.value)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "whisper-1 is an alias of whisper-base" in error["message"]


@pytest.mark.parametrize(
    ("kwargs", "param", "says"),
    [
        ({"temperature": 2}, "temperature", "not a number from 0 to 1"),
        ({"language": "xx"}, "language", "language 'xx' is not supported by whisper-tiny.en"),
        ({"response_format": "xml"}, "response_format", "use one of json, text, srt, vtt, verbose_json"),
        ({"response_format": "verbose_json", "timestamp_granularities": ["word"]}, "timestamp_granularities",
         "times segments only"),
        ({"timestamp_granularities": ["segment"]}, "timestamp_granularities", "needs response_format 'verbose_json'"),
    ],
    ids=["temperature", "language", "format", "word timestamps", "granularity without verbose_json"],
)  # fmt: skip
def test_bad_parameters_are_bad_requests_that_name_the_parameter(client, speech, kwargs, param, says):
    with pytest.raises(openai.BadRequestError) as refused:
        transcribe(client, speech, model="whisper-1", **kwargs)
    error = error_of(refused.value)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert says in refused.value.message


def test_a_file_that_is_not_audio_is_refused_and_the_server_keeps_serving(client, speech):
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(
            file=("notes.mp3", b"ID3\x04 not audio we read", "audio/mpeg"), model="whisper-1"
        )
    assert error_of(refused.value)["param"] == "file"
    assert "is not WAV, Ogg (Opus or Vorbis) or FLAC audio" in refused.value.message
    with pytest.raises(openai.BadRequestError, match="the WAV body is truncated"):
        transcribe(client, speech[:300], model="whisper-1")
    assert said(transcribe(client, speech, model="whisper-1").text)


def test_an_upload_over_the_limit_is_refused_in_openais_shape(client, guarded_server):
    with pytest.raises(openai.APIStatusError) as refused:
        transcribe(client, b"RIFF" + bytes(guarded_server.settings.limits.max_upload_bytes), model="whisper-1")
    assert refused.value.status_code == 413
    assert error_of(refused.value)["code"] == "file_too_large"
    assert "SPEECH_LIMITS__MAX_UPLOAD_BYTES" in refused.value.message


def test_a_request_that_is_not_a_form_gets_an_openai_error(guarded_server, speech):
    url, key = guarded_server.base_url + "/v1/audio/transcriptions", {"X-API-Key": ENV_KEY}
    response = httpx.post(url, content=speech, headers=key, timeout=60)
    assert response.status_code == 400
    assert "send multipart/form-data with the audio as the 'file' field" in response.json()["error"]["message"]


def test_requests_are_counted_in_the_same_metrics_as_batch_ones(client, guarded_server, speech):
    route = "/v1/audio/transcriptions"
    before = scrape(guarded_server.base_url)
    transcribe(client, speech, model="whisper-1")
    after = scrape(guarded_server.base_url)
    labels = {"region": "local", "model_version": guarded_server.app.state.serving.current_version()}
    key = ("speech_requests_total", dict(labels, route=route, status="200"))
    assert sample(after, key[0], **key[1]) == before.get((key[0], frozenset(key[1].items())), 0) + 1
    served_model = guarded_server.app.state.serving.models.asr.spec.name
    audio = ("speech_audio_processed_seconds_total", dict(labels, model=served_model, kind="batch"))
    assert sample(after, audio[0], **audio[1]) > before.get((audio[0], frozenset(audio[1].items())), 0)


def test_with_auth_on_a_key_is_needed_and_the_alias_names_the_served_model(guarded_server, speech):
    with client_of(guarded_server, "not-a-key") as stranger, pytest.raises(openai.AuthenticationError) as refused:
        transcribe(stranger, speech, model="whisper-1")
    assert error_of(refused.value)["code"] == "invalid_api_key"
    assert "missing or invalid API key" in refused.value.message
    with client_of(guarded_server, ENV_KEY) as tenant:
        assert said(transcribe(tenant, speech, model="whisper-1", response_format="text"))
        with pytest.raises(openai.NotFoundError, match=re.escape("whisper-1 is an alias of whisper-tiny.en")):
            transcribe(tenant, speech, model="whisper-base")
