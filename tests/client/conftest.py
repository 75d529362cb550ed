"""Three regional servers on loopback for the client's tests: us-west, eu-west and ap-northeast, as the default
topology configures them (``SPEECH_REGION``), each serving tiny.en, the quickest model to load, and the bundled
voice with an in-process synthesis cache of its own (so a text no other test speaks is a miss the first time).

eu-west can be stopped and restarted on the same port, so failover and the circuit breaker meet a region that is
really gone and really comes back. Keys: ``ANY_KEY`` has no home jurisdiction; ``EU_KEY``'s tenant must stay in the
EU, so a non-EU server that ever saw it would count a residency refusal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from serving.build.export import ensure_bundled_model
from serving.build.voice import ensure_bundled_voice
from serving.settings import AuthSettings, GrpcSettings, Settings, TtsSettings
from tests.serving.conftest import synthesize
from tests.serving.server_fixtures import (
    LiveServer,
    digest,
    live_server,
    pcm16,
    scrape,
    server_model,
    wav_bytes,
    with_silence,
)

ANY_KEY, EU_KEY = "tenant-anywhere", "tenant-in-the-eu"
DOMAIN = "speech.example.com"
SPEECH = "Rice is often served in round bowls."


def regional_settings(region_key: str, model_dir: Path) -> Settings:
    cache = model_dir.parents[1]
    return Settings(
        region=DEFAULT_TOPOLOGY.region(region_key).aws_region,
        public_domain=DOMAIN,
        model=server_model(cache, "tiny.en"),
        auth=AuthSettings(api_key_hashes=[digest(ANY_KEY), f"{digest(EU_KEY)} jurisdiction=eu"]),
        grpc=GrpcSettings(port=0),
        tts=TtsSettings(enabled=True),
    )


@dataclass
class Restartable:
    """A server that a test may stop and start again on the same port."""

    settings: Settings
    port: int = 0
    live: LiveServer | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def start(self) -> LiveServer:
        if self.live is None:
            self._stack = contextlib.ExitStack()
            self.live = self._stack.enter_context(live_server(self.settings, port=self.port))
            self.port = int(self.live.base_url.rsplit(":", 1)[1])
        return self.live

    def stop(self) -> None:
        self._stack.close()
        self.live = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Regions:
    us_west: LiveServer
    ap_northeast: LiveServer
    eu_west: Restartable

    @property
    def endpoints(self) -> dict[str, str]:
        return {
            "us-west": self.us_west.base_url,
            "eu-west": self.eu_west.base_url,
            "ap-northeast": self.ap_northeast.base_url,
        }


@pytest.fixture(scope="session")
def regions() -> Iterator[Regions]:
    model_dir = ensure_bundled_model("tiny.en")
    ensure_bundled_voice("joe", model_dir.parents[1])
    eu_west = Restartable(regional_settings("eu-west", model_dir))
    with (
        live_server(regional_settings("us-west", model_dir)) as us_west,
        live_server(regional_settings("ap-northeast", model_dir)) as ap_northeast,
    ):
        eu_west.start()
        try:
            yield Regions(us_west, ap_northeast, eu_west)
        finally:
            eu_west.stop()


@pytest.fixture
def eu_west_stopped(regions: Regions) -> Iterator[Restartable]:
    """eu-west is down for the test, and up again after it whatever happened."""
    regions.eu_west.stop()
    try:
        yield regions.eu_west
    finally:
        regions.eu_west.start()


@pytest.fixture(scope="session")
def speech_wav() -> bytes:
    return wav_bytes(synthesize(SPEECH, engine="flite"))


@pytest.fixture(scope="session")
def speech_pcm() -> bytes:
    return pcm16(with_silence(synthesize(SPEECH, engine="flite")))


def residency_refusals(server: LiveServer) -> float:
    """How often ``server`` refused an EU tenant, on any route: zero means no EU request ever reached it."""
    return sum(
        value
        for (name, labels), value in scrape(server.base_url).items()
        if name == "speech_residency_refusals_total" and ("jurisdiction", "eu") in labels
    )


def errors_of_kind(server: LiveServer, kind: str) -> float:
    return sum(
        value
        for (name, labels), value in scrape(server.base_url).items()
        if name == "speech_errors_total" and ("kind", kind) in labels
    )
