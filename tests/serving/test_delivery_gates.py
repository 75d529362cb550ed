"""The canary gates' exact queries (`infra.k8s.gates`), run by a real Prometheus scraping the real server on loopback.

Prometheus labels every series as the ServiceMonitor does in a cluster (the namespace and the pod's rollout hash),
and Argo's `{{args.canary-hash}}` is filled in as the AnalysisRun would. Good traffic first: the error-rate gate
passes; then the server refuses streams over its limit (close 1013, the canary's own failures): the gate fails.
Latency and real-time factor are measured on real decodes and judged against thresholds no decode can miss and
none can meet, so the outcome never hangs on the machine's speed. The shadow-WER gate passes a candidate that
agrees with the served model and fails one whose transcripts of the same clips disagree with the canary's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator

import httpx
import pytest

from contract import service
from infra.config import GateThresholds
from infra.k8s.gates import HASH_ARG, HASH_SERIES_LABEL, Gate, gates
from serving.settings import Settings
from tests.prometheus import LivePrometheus, live_prometheus
from tests.serving.server_fixtures import (
    LiveServer,
    close_of,
    live_server,
    local_settings,
    server_model,
    silence,
    stream_audio,
    wait_until,
    wav_bytes,
    with_silence,
)

# A server load and a Prometheus, tens of seconds of traffic and scrapes.
pytestmark = pytest.mark.slow

CANARY_HASH = "6d4f8b9c7"
SENTENCE = "the quick brown fox jumps over the lazy dog"
SPANISH_SENTENCE = "hola, ¿cómo estás? muy bien, gracias"
SCRAPE_WAIT_S = 60


@pytest.fixture(scope="module")
def canary(tiny_en_model_dir, tmp_path_factory) -> Iterator[tuple[LiveServer, LivePrometheus]]:
    """One canary pod (tiny.en, one stream at a time, every batch request shadowed) and the Prometheus that scrapes
    it. The candidate is tiny.en again, under another version: the local stand-in for a store's candidate."""
    settings = local_settings(
        tiny_en_model_dir.parents[1],
        model=server_model(tiny_en_model_dir.parents[1], "tiny.en"),
        stream={"max_sessions": 1},
        shadow={"version": "2.0.0-candidate", "sample_rate": 1.0, "profile": "tiny.en"},
    )
    with _canary_pod(settings, tmp_path_factory) as pod:
        yield pod


@pytest.fixture(scope="module")
def disagreeing_canary(
    tiny_en_model_dir, bundled_model_dir, tmp_path_factory
) -> Iterator[tuple[LiveServer, LivePrometheus]]:
    """A canary pod serving the English-only tiny.en with the multilingual base as its shadow candidate. Given
    Spanish, tiny.en writes the sounds it hears as English words and the candidate, told the clip is English as the
    served answer says, translates it: the two transcripts share almost no words. Only the test that needs this pod
    starts it, so the other tests pay for one pod."""
    settings = local_settings(
        tiny_en_model_dir.parents[1],
        model=server_model(tiny_en_model_dir.parents[1], "tiny.en"),
        shadow={"version": "2.0.0-candidate", "sample_rate": 1.0, "profile": "base"},
    )
    with _canary_pod(settings, tmp_path_factory) as pod:
        yield pod


@contextlib.contextmanager
def _canary_pod(settings: Settings, tmp_path_factory) -> Iterator[tuple[LiveServer, LivePrometheus]]:
    with live_server(settings) as server:
        wait_until(lambda: server.app.state.serving.shadow.is_loaded, 300, "the shadow candidate to load")
        labels = {"namespace": service.KUBERNETES_NAMESPACE, HASH_SERIES_LABEL: CANARY_HASH}
        target = server.base_url.removeprefix("http://")
        with live_prometheus(tmp_path_factory.mktemp("prometheus"), target, labels, service.METRICS_PATH) as prom:
            prom.wait_for('up{job="speech"}', lambda v: v == 1, SCRAPE_WAIT_S, "the first scrape")
            yield server, prom


def _gate(name: str, thresholds: GateThresholds | None = None) -> Gate:
    (gate,) = [g for g in gates(thresholds or GateThresholds(window_minutes=1)) if g.name == name]
    return gate


def _canary_query(gate: Gate) -> str:
    return gate.query.replace(f"{{{{args.{HASH_ARG}}}}}", CANARY_HASH)


def _good_traffic(server: LiveServer, speech) -> None:
    """A batch transcription and a whole stream (its finals: the gates read requests and finals), both answered."""
    response = httpx.post(f"{server.base_url}{service.BATCH_PATH}", content=wav_bytes(speech), timeout=120)
    assert response.status_code == 200, response.text
    outcome = asyncio.run(stream_audio(server.ws_url + "?interim_results=false", with_silence(speech), realtime=None))
    assert outcome.close_code == 1000 and outcome.final_text


def _scraped(prom: LivePrometheus, series: str, at_least: float) -> None:
    prom.wait_for(f"sum({series})", lambda v: v >= at_least, SCRAPE_WAIT_S, f"{series} >= {at_least} to be scraped")


def test_the_error_rate_gate_passes_good_traffic_and_fails_once_the_canary_refuses_streams(canary, synthesize):
    server, prom = canary
    gate, speech = _gate("error-rate"), synthesize(SENTENCE, engine="flite")
    stream_ok = f'{service.METRIC_REQUESTS}{{route="{service.STREAM_PATH}", status="1000"}}'
    # Twice: a series is born with its first scrape, and rate() sees only what grows after it.
    _good_traffic(server, speech)
    _scraped(prom, stream_ok, 1)
    _good_traffic(server, speech)
    good = prom.wait_for(_canary_query(gate), lambda v: not math.isnan(v), SCRAPE_WAIT_S, "the error rate")
    assert gate.passes(good), f"error rate {good} after good traffic only"

    async def refuse_three() -> list[int | None]:
        # The stream holding the one slot sends silence until the refusals are in, then ends normally: what it says
        # does not matter, and speech would only cost decodes and seconds of real time after them.
        refused = asyncio.get_running_loop().create_future()
        holder = asyncio.create_task(stream_audio(server.ws_url, silence(0.1), then=(refused, silence(0.1))))
        while server.app.state.serving.streams.active < 1:
            await asyncio.sleep(0.05)
        codes = [(await close_of(server.ws_url))[0] for _ in range(3)]
        refused.set_result(None)
        assert (await holder).close_code == 1000
        return codes

    assert asyncio.run(refuse_three()) == [1013, 1013, 1013]
    _scraped(prom, f'{service.METRIC_REQUESTS}{{route="{service.STREAM_PATH}", status="1013"}}', 3)
    failing = prom.query(_canary_query(gate))
    assert not gate.passes(failing), f"error rate {failing} after three refused streams"
    assert failing > GateThresholds().max_error_rate


def test_the_latency_and_real_time_factor_gates_pass_generous_thresholds_and_fail_strict_ones_on_real_decodes(
    canary, synthesize
):
    server, prom = canary
    speech = synthesize(SENTENCE, engine="flite")
    for _ in range(2):
        outcome = asyncio.run(stream_audio(server.ws_url, with_silence(speech), realtime=None))
        assert outcome.of_type("final")
    # Stack config either side of any real decode, through the same thresholds-to-gates mapping the Rollout uses:
    # an hour per decode and a thousand engine seconds per audio second hold, while a decode taking no time at all
    # is impossible, so zero is breached by whatever the machine's speed.
    generous = GateThresholds(window_minutes=1, max_p99_latency_s=3600.0, max_real_time_factor=1000.0)
    strict = GateThresholds(window_minutes=1, max_p99_latency_s=0.0, max_real_time_factor=0.0)
    for name in ("stream-latency-p99", "real-time-factor"):
        value = prom.wait_for(_canary_query(_gate(name)), lambda v: not math.isnan(v), SCRAPE_WAIT_S, name)
        assert 0 < value < math.inf, f"{name} = {value}"
        assert _gate(name, generous).passes(value), f"{name} = {value} against {generous}"
        assert not _gate(name, strict).passes(value), f"{name} = {value} against {strict}"


def test_the_shadow_wer_gate_reads_the_canarys_comparisons_and_passes_an_agreeing_candidate(canary, synthesize):
    server, prom = canary
    speech = synthesize(SENTENCE, engine="flite")
    compared = f"{service.METRIC_SHADOW_WER}_count"
    # Twice, a scrape apart: rate() sees only what grows after a series' first scrape.
    for round_ in (1, 2):
        response = httpx.post(f"{server.base_url}{service.BATCH_PATH}", content=wav_bytes(speech), timeout=120)
        assert response.status_code == 200, response.text
        _scraped(prom, compared, round_)
    gate = _gate("shadow-wer")
    value = prom.wait_for(_canary_query(gate), lambda v: not math.isnan(v), SCRAPE_WAIT_S, "the shadow WER")
    assert value == 0 and gate.passes(value), "the same weights under another version transcribe alike"


def test_the_shadow_wer_gate_fails_a_candidate_whose_transcripts_disagree_with_the_canarys(
    disagreeing_canary, synthesize
):
    server, prom = disagreeing_canary
    speech = synthesize(SPANISH_SENTENCE, voice="es")
    compared = f"{service.METRIC_SHADOW_WER}_count"
    for round_ in (1, 2):
        response = httpx.post(f"{server.base_url}{service.BATCH_PATH}", content=wav_bytes(speech), timeout=120)
        assert response.status_code == 200, response.text
        _scraped(prom, compared, round_)
    gate = _gate("shadow-wer")
    value = prom.wait_for(_canary_query(gate), lambda v: not math.isnan(v), SCRAPE_WAIT_S, "the shadow WER")
    assert not gate.passes(value), f"shadow WER {value} between transcripts of Spanish that share almost no words"
    assert value > GateThresholds().max_shadow_wer


def test_a_gate_over_another_pods_hash_sees_nothing_and_passes(canary):
    _, prom = canary
    stable = _gate("error-rate").query.replace(f"{{{{args.{HASH_ARG}}}}}", "stable-hash")
    assert math.isnan(prom.query(stable)), "the stable pods' series are not the canary's"
    assert _gate("error-rate").passes(prom.query(stable)), "a canary without traffic yet is not failed"
