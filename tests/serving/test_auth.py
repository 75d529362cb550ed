"""API-key auth on the real server: transcription keys and a separate admin key, configured only as SHA-256 hashes,
from settings and a secret file; checked before any route runs, documentation included."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from contract.service import STREAM_KEY_SUBPROTOCOL_PREFIX, STREAM_SUBPROTOCOL
from tests.serving.server_fixtures import (
    ADMIN_KEY,
    ENV_KEY,
    FILE_KEY,
    StreamOutcome,
    close_of,
    pcm16,
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


def _key_protocol(key: str) -> str:
    return STREAM_KEY_SUBPROTOCOL_PREFIX + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


async def _stream_with_subprotocols(url: str, protocols: list[str], audio) -> tuple[str | None, StreamOutcome]:
    async with connect(url, subprotocols=[Subprotocol(p) for p in protocols], max_size=2**20) as ws:
        outcome = StreamOutcome(ready=json.loads(await ws.recv()))
        for offset in range(0, len(data := pcm16(audio)), 640):
            await ws.send(data[offset : offset + 640])
        await ws.send(json.dumps({"type": "stop"}))
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                outcome.messages.append(json.loads(message))
        outcome.close_code = ws.close_code
        return ws.subprotocol, outcome


def test_a_browser_stream_offers_its_key_as_a_subprotocol_and_the_server_selects_the_other_one(
    guarded_server, synthesize
):
    audio = with_silence(synthesize(SPEECH, engine="flite"))
    protocols = [STREAM_SUBPROTOCOL, _key_protocol(FILE_KEY)]
    selected, outcome = asyncio.run(_stream_with_subprotocols(guarded_server.ws_url, protocols, audio))
    assert selected == STREAM_SUBPROTOCOL  # never the key's: it is not echoed back
    assert outcome.ready["type"] == "ready"
    assert outcome.close_code == 1000
    assert "lights in the kitchen" in outcome.final_text.lower()


@pytest.mark.parametrize(
    "key_protocol",
    [
        _key_protocol("wrong"),
        _key_protocol(ADMIN_KEY),
        STREAM_KEY_SUBPROTOCOL_PREFIX + "!!!",
        STREAM_KEY_SUBPROTOCOL_PREFIX,
    ],
    ids=["wrong key", "the admin key", "not base64url", "empty"],
)
def test_a_stream_with_a_wrong_or_malformed_subprotocol_key_is_closed_with_1008(guarded_server, key_protocol):
    async def refused() -> tuple[int | None, str | None, list[dict]]:
        protocols = [Subprotocol(STREAM_SUBPROTOCOL), Subprotocol(key_protocol)]
        messages: list[dict] = []
        async with connect(guarded_server.ws_url, subprotocols=protocols) as ws:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    messages.append(json.loads(message))
            return ws.close_code, ws.close_reason, messages

    code, reason, messages = asyncio.run(refused())
    assert (code, reason) == (1008, "missing or invalid API key")
    assert f"'{STREAM_KEY_SUBPROTOCOL_PREFIX}<base64url of the key, unpadded>'" in messages[0]["detail"]
