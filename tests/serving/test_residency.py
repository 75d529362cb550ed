"""Tenant residency: a key's home jurisdiction decides which replicas may serve it, before any audio is read."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import httpx
import pytest
from websockets.asyncio.client import connect

from contract.service import REGION_HEADER
from contract.topology import DEFAULT_TOPOLOGY
from serving.residency import ResidencyGuard
from serving.settings import ConfigError, Settings, load_settings
from serving.speakers.api import ENROLL_PATH, SPEAKER_PATH, VERIFY_PATH
from serving.speakers.service import EMBEDDER_NAME
from tests.serving.server_fixtures import (
    close_of,
    live_server,
    local_settings,
    sample,
    scrape,
    server_model,
    wav_bytes,
)
from tests.serving.test_grpc import config, recognize, refusal_of, streaming, transcript

EU_KEY, US_KEY, ANY_KEY = "tenant-in-the-eu", "tenant-in-the-us", "tenant-anywhere"
DOMAIN = "speech.example.com"
SPEECH = "Rice is often served in round bowls."


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def us_replica(tiny_en_model_dir, tmp_path_factory):
    """A replica in us-west-2 whose keys file gives two of its three tenants a home jurisdiction. It serves tiny.en,
    the quickest model to load and run: what is tested is who is served where, not accuracy."""
    keys = tmp_path_factory.mktemp("secret") / "api-keys"
    keys.write_text(
        f"# <sha256 of the key> [jurisdiction=<code>]\n{digest(EU_KEY)} jurisdiction=eu\n"
        f"{digest(US_KEY)} jurisdiction=us\n{digest(ANY_KEY)}\n"
    )
    cache = tiny_en_model_dir.parents[1]
    settings = local_settings(
        cache,
        model=server_model(cache, "tiny.en"),
        region="us-west-2",
        public_domain=DOMAIN,
        auth={"api_key_hashes_file": keys},
    )
    with live_server(settings) as live:
        yield live


def test_an_eu_tenant_gets_421_with_its_regional_endpoint_and_the_replica_keeps_serving(us_replica, synthesize):
    with us_replica.client() as http:
        refused = http.post("/v1/asr", content=b"not even audio", headers={"X-API-Key": EU_KEY})
        assert refused.status_code == 421, refused.text
        body = refused.json()
        assert body["endpoint"] == "https://eu-west.speech.example.com"
        assert body["endpoints"] == ["https://eu-west.speech.example.com"] and body["jurisdiction"] == "eu"
        assert "outside it" in body["detail"] and "us-west" in body["detail"]
        assert refused.headers[REGION_HEADER] == "us-west", "a refusal names the region that refused"
        for key in (US_KEY, ANY_KEY):
            served = http.post(
                "/v1/asr", content=wav_bytes(synthesize(SPEECH, engine="flite")), headers={"X-API-Key": key}
            )
            assert served.status_code == 200, served.text
            assert served.headers[REGION_HEADER] == "us-west"
            assert "round bowls" in served.json()["text"].lower()
    samples = scrape(us_replica.base_url)
    labels = {"region": "us-west", "jurisdiction": "eu", "route": "/v1/asr"}
    assert sample(samples, "speech_residency_refusals_total", model_version=us_replica_version(samples), **labels) >= 1
    assert not [k for k in samples if k[0] == "speech_errors_total" and ("kind", "bad_audio") in k[1]], (
        "the refused body was never decoded"
    )


def us_replica_version(samples: dict) -> str:
    """The version of the ASR model: the one whose label a refusal carries, whichever route it was for."""
    (version,) = {
        dict(labels)["model_version"]
        for name, labels in samples
        if name == "speech_model_info" and dict(labels)["name"] != EMBEDDER_NAME
    }
    return version


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/v1/speakers/alice/enroll", ENROLL_PATH),
        ("POST", "/v1/speakers/alice/verify", VERIFY_PATH),
        ("DELETE", "/v1/speakers/alice", SPEAKER_PATH),
    ],
)
def test_an_eu_tenants_voiceprints_are_not_enrolled_verified_or_touched_outside_the_eu(us_replica, method, path, route):
    with us_replica.client() as http:
        refused = http.request(method, path, content=b"RIFF never read", headers={"X-API-Key": EU_KEY})
    assert refused.status_code == 421, refused.text
    assert refused.json()["endpoint"] == "https://eu-west.speech.example.com"
    samples = scrape(us_replica.base_url)
    labels = {"region": "us-west", "jurisdiction": "eu", "route": route}
    assert sample(samples, "speech_residency_refusals_total", model_version=us_replica_version(samples), **labels) >= 1


def test_an_eu_tenants_stream_is_closed_with_1008_naming_its_endpoint(us_replica):
    code, reason, messages = asyncio.run(close_of(us_replica.ws_url, headers={"X-API-Key": EU_KEY}))
    assert (code, reason) == (1008, "data of eu stays there; use https://eu-west.speech.example.com")
    assert messages == [{"type": "error", "code": 1008, "detail": messages[0]["detail"]}]
    assert "https://eu-west.speech.example.com" in messages[0]["detail"]
    samples = scrape(us_replica.base_url)
    labels = {"region": "us-west", "jurisdiction": "eu", "route": "/v1/asr/stream"}
    assert sample(samples, "speech_residency_refusals_total", model_version=us_replica_version(samples), **labels) >= 1


def test_an_eu_tenants_grpc_calls_fail_their_precondition_naming_its_endpoint(us_replica, synthesize):
    eu, us = (("x-api-key", EU_KEY),), (("authorization", f"Bearer {US_KEY}"),)
    clip = wav_bytes(synthesize(SPEECH, engine="flite"))
    code, details = refusal_of(recognize, us_replica.grpc_target, clip, eu)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "outside it; send the request to https://eu-west.speech.example.com" in details
    refused = streaming(us_replica.grpc_target, iter([config()]), eu)
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "https://eu-west.speech.example.com" in refused.details
    served = recognize(us_replica.grpc_target, clip, us)
    assert "round bowls" in transcript(served.results).lower()
    samples = scrape(us_replica.base_url)
    version = us_replica_version(samples)
    for route in ("/speech.v1.Speech/Recognize", "/speech.v1.Speech/StreamingRecognize"):
        labels = {"region": "us-west", "jurisdiction": "eu", "route": route}
        assert sample(samples, "speech_residency_refusals_total", model_version=version, **labels) >= 1


def test_a_stream_handshake_names_the_region_that_accepted_it(us_replica):
    async def handshake_region() -> str | None:
        async with connect(us_replica.ws_url, additional_headers={"X-API-Key": ANY_KEY}) as ws:
            assert ws.response is not None
            return ws.response.headers.get(REGION_HEADER)

    assert asyncio.run(handshake_region()) == "us-west"


def test_a_local_replica_names_itself_local(guarded_server):
    assert httpx.get(guarded_server.base_url + "/healthz").headers[REGION_HEADER] == "local"


def test_the_refusal_comes_before_the_route_reads_a_byte_of_the_body(us_replica):
    reads: list[str] = []
    sent: list[dict] = []

    async def receive():
        reads.append("body")
        return {"type": "http.request", "body": b"RIFF", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/asr", "raw_path": b"/v1/asr", "query_string": b"", "root_path": "",
        "headers": [(b"x-api-key", EU_KEY.encode()), (b"content-length", b"4")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip
    asyncio.run(us_replica.app(scope, receive, send))
    assert sent[0]["status"] == 421
    assert reads == [], "the audio was read before the tenant was refused"


@pytest.mark.parametrize(
    ("replica", "tenant", "refused"),
    [("eu-west-1", "eu", False), ("eu-west-1", "us", False), ("eu-west-1", "jp", False), ("us-west-2", "eu", True),
     ("ap-northeast-1", "eu", True), ("us-west-2", "jp", False), ("us-west-2", None, False)],
)  # fmt: skip
def test_the_topologys_residency_rule_decides_who_each_replica_may_serve(replica, tenant, refused):
    guard = ResidencyGuard(DEFAULT_TOPOLOGY, DEFAULT_TOPOLOGY.region_for_aws(replica), DOMAIN)
    assert (guard.refusal(tenant) is not None) == refused


def test_a_local_run_serves_every_tenant():
    assert ResidencyGuard(DEFAULT_TOPOLOGY, None, None).refusal("eu") is None


def _settings_with(tmp_path, line: str, **overrides: object) -> Settings:
    keys = tmp_path / "keys"
    keys.write_text(line + "\n")
    return load_settings(auth={"api_key_hashes_file": keys}, **overrides)


@pytest.mark.parametrize(
    ("line", "overrides", "message"),
    [
        (f"{digest(EU_KEY)} jurisdiction=mars", {"region": "us-west-2", "public_domain": DOMAIN},
         "jurisdiction=mars: unknown jurisdiction 'mars'"),
        (f"{digest(EU_KEY)} jurisdiction=eu", {"region": "us-west-2"}, "set SPEECH_PUBLIC_DOMAIN"),
        (f"{digest(EU_KEY)} tenant=acme", {}, "line 1 has 'tenant=acme' after its digest"),
        (f"{digest(EU_KEY)} jurisdiction=eu jurisdiction=us", {}, "the only field allowed is one jurisdiction="),
    ],
)  # fmt: skip
def test_a_bad_keys_file_or_a_missing_domain_stops_start_up_naming_the_fix(tmp_path, line, overrides, message):
    from serving.app import create_app

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        create_app(_settings_with(tmp_path, line, **overrides))


def test_keys_from_the_variable_may_carry_a_jurisdiction_too():
    settings = load_settings(auth={"api_key_hashes": f"{digest(EU_KEY)} jurisdiction=eu, {digest(ANY_KEY)}"})
    assert settings.auth.keys() == {digest(EU_KEY): "eu", digest(ANY_KEY): None}


def test_a_public_domain_that_is_no_dns_name_is_refused():
    with pytest.raises(ConfigError, match="SPEECH_PUBLIC_DOMAIN='https://x': is not a lower-case DNS name"):
        load_settings(public_domain="https://x")
