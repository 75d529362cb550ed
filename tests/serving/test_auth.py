"""API-key auth on the real server: keys configured only as SHA-256 hashes, from settings and a secret file."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from tests.serving.server_fixtures import close_of, live_server, local_settings, stream_audio, wav_bytes, with_silence

ENV_KEY, FILE_KEY = "key-from-the-environment", "key-from-the-mounted-secret"
SPEECH = "Rice is often served in round bowls."


@pytest.fixture(scope="module")
def server(bundled_model_dir, tmp_path_factory):
    secret = tmp_path_factory.mktemp("secret") / "api-key-hashes"
    secret.write_text(f"# one digest a line\n{hashlib.sha256(FILE_KEY.encode()).hexdigest()}\n")
    settings = local_settings(
        bundled_model_dir.parents[1],
        auth={"api_key_hashes": [hashlib.sha256(ENV_KEY.encode()).hexdigest()], "api_key_hashes_file": secret},
    )
    with live_server(settings) as live:
        yield live


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {ENV_KEY}"},
     {"Authorization": "Bearer " + hashlib.sha256(ENV_KEY.encode()).hexdigest()}],
    ids=["no key", "wrong bearer", "wrong x-api-key", "wrong scheme", "the hash itself"],
)  # fmt: skip
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/asr"), ("GET", "/v1/models"), ("POST", "/v1/models/reload")]
)
def test_api_routes_answer_401_without_a_valid_key(server, method, path, headers):
    with server.client() as http:
        response = http.request(method, path, headers=headers, content=b"RIFF")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'" in response.json()["detail"]


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {ENV_KEY}"}, {"X-API-Key": FILE_KEY}])
def test_a_valid_key_from_either_source_and_header_is_accepted(server, synthesize, headers):
    with server.client(headers=headers) as http:
        response = http.post("/v1/asr", content=wav_bytes(synthesize(SPEECH, engine="flite")))
    assert response.status_code == 200, response.text
    assert "round bowls" in response.json()["text"].lower()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_metrics_stay_open(server, path):
    with server.client() as http:
        assert http.get(path).status_code == 200


def test_a_stream_without_a_valid_key_is_closed_with_1008(server):
    code, reason, messages = asyncio.run(close_of(server.ws_url, headers={"X-API-Key": "wrong"}))
    assert (code, reason) == (1008, "missing or invalid API key")
    assert messages == [{"type": "error", "code": 1008, "detail": messages[0]["detail"]}]
    assert "Authorization: Bearer <key>" in messages[0]["detail"]


def test_a_stream_with_a_valid_key_is_served(server, synthesize):
    audio = with_silence(synthesize(SPEECH, engine="flite"))
    outcome = asyncio.run(
        stream_audio(server.ws_url, audio, realtime=None, headers={"Authorization": f"Bearer {FILE_KEY}"})
    )
    assert outcome.close_code == 1000
    assert "round bowls" in outcome.final_text.lower()
