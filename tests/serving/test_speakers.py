"""Speaker verification over HTTP: enrol, verify and delete, per tenant, with voiceprints in a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from serving.speakers.api import ENROLL_PATH
from serving.speakers.store import KEY_PREFIX
from tests.serving.server_fixtures import (
    LiveServer,
    digest,
    live_server,
    local_settings,
    pcm16,
    sample,
    scrape,
    server_model,
    silence,
    wav_bytes,
)
from tests.serving.speaker_fixtures import redis_server

KEY_A, KEY_B = "tenant-a-key", "tenant-b-key"
ENROL_TEXTS = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
)
PROBE_TEXT = "Rice is often served in round bowls."
# Voices the embedder tells apart clearly (python -m bench.speakers): two synthesizers, male and female.
ENROLLED = ("en-us", "espeak-ng")
OTHERS = (("en-us+f3", "espeak-ng"), ("en-us+klatt", "espeak-ng"), ("slt", "flite"), ("rms", "flite"), ("awb", "flite"))


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def speaker_server(tiny_en_model_dir, redis_url) -> Iterator[LiveServer]:
    """Two tenants' keys and the region's Redis; tiny.en for ASR, which these tests never call."""
    settings = local_settings(
        tiny_en_model_dir.parents[1],
        model=server_model(tiny_en_model_dir.parents[1], "tiny.en"),
        auth={"api_key_hashes": [digest(KEY_A), digest(KEY_B)]},
        limits={"max_upload_bytes": 1_000_000, "max_audio_s": 30},
        speakers={"redis_url": redis_url, "max_clips": 3},
    )
    with live_server(settings) as live:
        yield live


def clip(synthesize, text: str, voice: tuple[str, str]) -> bytes:
    return wav_bytes(synthesize(text, *voice))


def enrol(http, speaker: str, key: str, synthesize, voice=ENROLLED) -> None:
    for text in ENROL_TEXTS:
        answer = http.post(
            f"/v1/speakers/{speaker}/enroll", content=clip(synthesize, text, voice), headers={"X-API-Key": key}
        )
        assert answer.status_code == 200, answer.text


def verify(http, speaker: str, key: str, body: bytes, **params) -> dict:
    answer = http.post(f"/v1/speakers/{speaker}/verify", content=body, headers={"X-API-Key": key}, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_verify_accepts_the_enrolled_voice_and_rejects_other_voices(speaker_server, synthesize):
    with speaker_server.client() as http:
        enrol(http, "alice", KEY_A, synthesize)
        same = verify(http, "alice", KEY_A, clip(synthesize, PROBE_TEXT, ENROLLED))
        assert same["match"] is True and same["score"] >= same["threshold"], same
        assert same["threshold"] == speaker_server.settings.speakers.threshold
        for voice in OTHERS:
            other = verify(http, "alice", KEY_A, clip(synthesize, PROBE_TEXT, voice))
            assert other["match"] is False and other["score"] < same["score"], (voice, other)


def test_an_enrolled_flite_voice_accepts_itself_and_rejects_espeak(speaker_server, synthesize):
    with speaker_server.client() as http:
        enrol(http, "bob", KEY_A, synthesize, voice=("rms", "flite"))
        # Raw PCM16 at 16 kHz: any format /v1/asr takes is accepted here too.
        assert verify(http, "bob", KEY_A, pcm16(synthesize(PROBE_TEXT, "rms", "flite")), sample_rate=16000)["match"]
        assert not verify(http, "bob", KEY_A, clip(synthesize, PROBE_TEXT, ENROLLED))["match"]


def test_one_tenant_cannot_verify_against_or_delete_another_tenants_speaker(speaker_server, synthesize):
    with speaker_server.client() as http:
        enrol(http, "carol", KEY_A, synthesize)
        probe = clip(synthesize, PROBE_TEXT, ENROLLED)
        foreign = http.post("/v1/speakers/carol/verify", content=probe, headers={"X-API-Key": KEY_B})
        assert foreign.status_code == 404 and "not enrolled for this API key" in foreign.json()["detail"]
        assert http.delete("/v1/speakers/carol", headers={"X-API-Key": KEY_B}).status_code == 404
        assert verify(http, "carol", KEY_A, probe)["match"], "tenant A's speaker survived B's attempts"
        no_key = http.post("/v1/speakers/carol/verify", content=probe)
        assert no_key.status_code == 401


def test_deleting_a_speaker_removes_every_embedding_from_redis(speaker_server, redis_url, synthesize):
    with speaker_server.client() as http, redis.Redis.from_url(redis_url) as store:
        enrol(http, "dave", KEY_B, synthesize)
        enrol(http, "dave", KEY_B, synthesize)  # four clips: the oldest beyond max_clips (3) are dropped
        keys = store.keys(f"{KEY_PREFIX}*:dave")
        assert keys == [f"{KEY_PREFIX}{digest(KEY_B)}:dave".encode()], keys
        assert store.llen(keys[0]) == 3
        assert http.delete("/v1/speakers/dave", headers={"X-API-Key": KEY_B}).status_code == 204
        assert store.keys("*dave*") == []
        assert http.delete("/v1/speakers/dave", headers={"X-API-Key": KEY_B}).status_code == 404
        gone = http.post(
            "/v1/speakers/dave/verify", content=clip(synthesize, PROBE_TEXT, ENROLLED), headers={"X-API-Key": KEY_B}
        )
        assert gone.status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "params", "status", "words"),
    [
        ("/v1/speakers/erin/enroll", "silence", {}, 422, "of speech; at least 1 s is needed"),
        ("/v1/speakers/erin/enroll", "short", {}, 422, "of speech; at least 1 s is needed"),
        ("/v1/speakers/erin/enroll", b"definitely not audio", {}, 415, "is not WAV, Ogg or FLAC"),
        ("/v1/speakers/erin/enroll", "speech", {"sample_rate": 12345}, 422, "12345 Hz is not supported"),
        ("/v1/speakers/erin/enroll", b"", {}, 400, "the request body is empty"),
        ("/v1/speakers/-erin/enroll", "speech", {}, 422, "speaker id '-erin' is not accepted"),
        ("/v1/speakers/nobody/verify", "speech", {}, 404, "speaker 'nobody' is not enrolled"),
        ("/v1/speakers/erin/enroll", "too big", {}, 413, "SPEECH_LIMITS__MAX_UPLOAD_BYTES"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(
    speaker_server, synthesize, path, body, params, status, words
):
    bodies = {
        "silence": wav_bytes(silence(3.0)),
        "short": wav_bytes(synthesize("Yes.")),
        "speech": clip(synthesize, PROBE_TEXT, ENROLLED),
        "too big": bytes(1_000_001),
    }
    content = bodies.get(body, body) if isinstance(body, str) else body
    with speaker_server.client() as http:
        answer = http.post(path, content=content, params=params, headers={"X-API-Key": KEY_A})
        assert answer.status_code == status, answer.text
        assert words in str(answer.json()["detail"]), answer.text
        enrol(http, "erin", KEY_A, synthesize)
        assert verify(http, "erin", KEY_A, clip(synthesize, PROBE_TEXT, ENROLLED))["match"]


def test_speaker_requests_are_counted_by_route_template_and_embedder(speaker_server, synthesize):
    version = speaker_server.app.state.serving.speakers.version
    fixed = {"region": "local", "model_version": version}
    with speaker_server.client() as http:
        enrol(http, "frank", KEY_A, synthesize)
    samples = scrape(speaker_server.base_url)
    assert sample(samples, "speech_requests_total", **fixed, route=ENROLL_PATH, status="200") >= 2
    assert (
        sample(samples, "speech_inference_duration_seconds_count", **fixed, model="speaker-embedder", kind="speaker")
        >= 2
    )
    assert sample(samples, "speech_model_info", **fixed, kind="speaker", name="speaker-embedder") == 1
