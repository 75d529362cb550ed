"""API-key auth on the real server: transcription keys and a separate admin key, configured only as SHA-256 hashes,
from settings and a secret file; checked before any route runs, documentation included."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from tests.serving.server_fixtures import (
    ADMIN_KEY,
    ENV_KEY,
    FILE_KEY,
    close_of,
    stream_audio,
    wav_bytes,
    with_silence,
)

SPEECH = "Can you turn off the lights in the kitchen before you leave?"
ENV_HEADERS = {"Authorization": f"Bearer {ENV_KEY}"}
ADMIN_HEADERS = {"X-API-Key": ADMIN_KEY}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {ENV_KEY}"},
     {"Authorization": "Bearer " + hashlib.sha256(ENV_KEY.encode()).hexdigest()}, ADMIN_HEADERS],
    ids=["no key", "wrong bearer", "wrong x-api-key", "wrong scheme", "the hash itself", "the admin key"],
)  # fmt: skip
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/asr"), ("GET", "/v1/models"), ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json")],
)
def test_api_and_documentation_answer_401_without_a_valid_transcription_key(guarded_server, method, path, headers):
    with guarded_server.client() as http:
        response = http.request(method, path, headers=headers, content=b"RIFF" if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_documentation_is_served_with_a_transcription_key(guarded_server, path):
    with guarded_server.client(headers=ENV_HEADERS) as http:
        assert http.get(path).status_code == 200


@pytest.mark.parametrize(
    "headers", [{}, ENV_HEADERS, {"X-API-Key": FILE_KEY}, {"X-API-Key": "wrong"}],
    ids=["no key", "transcription key from the variable", "transcription key from the file", "wrong key"],
)  # fmt: skip
def test_reload_needs_the_admin_key_not_a_transcription_key(guarded_server, headers):
    with guarded_server.client() as http:
        response = http.post("/v1/models/reload", headers=headers, json={"version": "1.0.0"})
    assert response.status_code == 401
    assert "missing or invalid admin key (transcription keys do not work here)" in response.json()["detail"]


def test_the_admin_key_reaches_reload(guarded_server):
    with guarded_server.client(headers=ADMIN_HEADERS) as http:
        response = http.post("/v1/models/reload", json={"version": "1.0.0"})
    assert response.status_code == 409, response.text  # past the gate: this server has no store to reload from
    assert "SPEECH_MODEL__BUCKET" in response.json()["detail"]


@pytest.mark.parametrize("headers", [ENV_HEADERS, {"X-API-Key": FILE_KEY}])
def test_a_valid_key_from_either_source_and_header_is_accepted(guarded_server, synthesize, headers):
    with guarded_server.client(headers=headers) as http:
        response = http.post("/v1/asr", content=wav_bytes(synthesize(SPEECH, engine="flite")))
    assert response.status_code == 200, response.text
    assert "lights in the kitchen" in response.json()["text"].lower()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_metrics_stay_open(guarded_server, path):
    with guarded_server.client() as http:
        assert http.get(path).status_code == 200


def test_a_stream_without_a_valid_key_is_closed_with_1008(guarded_server):
    code, reason, messages = asyncio.run(close_of(guarded_server.ws_url, headers={"X-API-Key": "wrong"}))
    assert (code, reason) == (1008, "missing or invalid API key")
    assert messages == [{"type": "error", "code": 1008, "detail": messages[0]["detail"]}]
    assert "Authorization: Bearer <key>" in messages[0]["detail"]


def test_a_stream_with_a_valid_key_is_served(guarded_server, synthesize):
    audio = with_silence(synthesize(SPEECH, engine="flite"))
    outcome = asyncio.run(
        stream_audio(guarded_server.ws_url, audio, realtime=None, headers={"Authorization": f"Bearer {FILE_KEY}"})
    )
    assert outcome.close_code == 1000
    assert "lights in the kitchen" in outcome.final_text.lower()
