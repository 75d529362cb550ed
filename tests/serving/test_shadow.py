"""The shadow candidate: compared off the response path on sampled batch requests, shed when the replica is busy."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contract import service
from serving import smoke
from serving.engine import DecodeOptions, Transcription
from serving.inference import InferencePool
from serving.metrics import ServingMetrics
from serving.model_manager import ModelCatalog
from serving.settings import ConfigError, load_settings
from serving.shadow import ShadowModel, transcript_wer
from tests.serving.server_fixtures import (
    LiveServer,
    live_server,
    local_settings,
    sample,
    scrape,
    server_model,
    wait_until,
    wav_bytes,
)

pytestmark = pytest.mark.slow  # two models loaded into one server
REPO = Path(__file__).resolve().parents[2]
SENTENCE = "please send the quarterly report to the finance team before friday"


@pytest.fixture(scope="module")
def shadowed(bundled_model_dir, tiny_en_model_dir) -> Iterator[LiveServer]:
    """Serves base as every test server does (greedy, one thread, windows fitted with 5 s: ``server_model``); shadows
    every batch request with tiny.en (the local stand-in for a candidate version)."""
    settings = local_settings(
        bundled_model_dir.parents[1],
        model=server_model(bundled_model_dir.parents[1]),
        shadow={"version": "2.0.0-candidate", "sample_rate": 1.0, "profile": "tiny.en"},
        inference_threads=1,
    )
    with live_server(settings) as live:
        wait_until(lambda: live.app.state.serving.shadow.is_loaded, 300, "the shadow candidate to load")
        yield live


def _shadow_counts(live: LiveServer) -> tuple[float, float]:
    samples = scrape(live.base_url)
    compared = sum(v for (name, _), v in samples.items() if name == f"{service.METRIC_SHADOW_WER}_count")
    skipped = sum(v for (name, _), v in samples.items() if name == service.METRIC_SHADOW_SKIPPED)
    return compared, skipped


def test_a_sampled_request_is_answered_by_the_served_model_and_compared_with_the_candidate(
    shadowed, synthesize, monkeypatch
):
    candidate = shadowed.app.state.serving.shadow._engine
    decoded_with: list[DecodeOptions] = []

    def transcribe(audio, language=None, **kwargs):
        decoded_with.append(kwargs["options"])
        return type(candidate).transcribe(candidate, audio, language, **kwargs)

    monkeypatch.setattr(candidate, "transcribe", transcribe)
    before, _ = _shadow_counts(shadowed)
    response = httpx.post(
        f"{shadowed.base_url}{service.BATCH_PATH}", content=wav_bytes(synthesize(SENTENCE)), timeout=120
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "whisper-base", "the answer is the served model's, never the candidate's"
    wait_until(lambda: _shadow_counts(shadowed)[0] > before, 120, "the shadow comparison to be recorded")
    samples = scrape(shadowed.base_url)
    labels = {"region": "local", "model_version": body["model_version"], "candidate_version": "2.0.0-candidate"}
    wer_sum = sample(samples, f"{service.METRIC_SHADOW_WER}_sum", **labels)
    assert 0 <= wer_sum < 0.5 * (_shadow_counts(shadowed)[0]), "two Whisper models agree on clear speech"
    assert sample(samples, f"{service.METRIC_SHADOW_LATENCY_DIFFERENCE}_count", **labels) >= 1
    # Like with like: the candidate searched and windowed as the served model was (this server: greedy, fitted).
    served = shadowed.settings.model
    assert [(o.beam_size, o.window_pad_s) for o in decoded_with] == [(served.beam_size, served.window_pad_s)]


def test_samples_are_shed_while_the_inference_threads_or_the_candidate_are_busy(tiny_en_model_dir, synthesize):
    """The real candidate, pool and metrics: a thread held by other work, then two offers in one event-loop turn."""
    settings = local_settings(
        tiny_en_model_dir.parents[1], shadow={"version": "2.0.0", "sample_rate": 1.0, "profile": "tiny.en"}
    )
    metrics, pool = ServingMetrics("local"), InferencePool(1)
    shadow = ShadowModel(settings.shadow, ModelCatalog(settings, metrics).asr, pool, metrics)
    clip = synthesize(SENTENCE)
    served = Transcription(SENTENCE, "en", "1.0.0", len(clip) / 16_000)
    release = threading.Event()

    async def scenario() -> list[bool]:
        assert not shadow.offer(clip, "en", served, 0.1), "not loaded yet"
        await shadow.load()
        holder = asyncio.ensure_future(pool.run(release.wait))
        await asyncio.sleep(0)  # the holder's job is on the one inference thread
        busy_pool = shadow.offer(clip, "en", served, 0.1)
        release.set()
        await holder
        first, second = shadow.offer(clip, "en", served, 0.1), shadow.offer(clip, "en", served, 0.1)
        while shadow.is_busy:
            await asyncio.sleep(0.05)
        return [busy_pool, first, second]

    try:
        assert asyncio.run(scenario()) == [False, True, False]
    finally:
        shadow.close()
        pool.shutdown()
    samples = {(name, labels): value for (name, labels), value in _samples(metrics).items()}
    for reason in ("not_loaded", "inference_busy", "shadow_busy"):
        assert samples[(service.METRIC_SHADOW_SKIPPED, reason)] == 1, reason
    assert samples[(f"{service.METRIC_SHADOW_WER}_count", "")] == 1


def test_a_candidate_that_cannot_take_the_served_language_counts_as_answering_nothing(tiny_en_model_dir):
    """An English-only candidate shadowing a multilingual model: Spanish it refuses is a WER of 1, never a skip."""
    settings = local_settings(
        tiny_en_model_dir.parents[1], shadow={"version": "2.0.0", "sample_rate": 1.0, "profile": "tiny.en"}
    )
    metrics, pool = ServingMetrics("local"), InferencePool(1)
    shadow = ShadowModel(settings.shadow, ModelCatalog(settings, metrics).asr, pool, metrics)
    clip = np.zeros(16_000, dtype=np.float32)
    served = Transcription("hola, ¿cómo estás?", "es", "1.0.0", 1.0)

    async def scenario() -> bool:
        await shadow.load()
        offered = shadow.offer(clip, "es", served, 0.1)
        while shadow.is_busy:
            await asyncio.sleep(0.05)
        return offered

    try:
        assert asyncio.run(scenario())
    finally:
        shadow.close()
        pool.shutdown()
    samples = _samples(metrics)
    assert samples[(f"{service.METRIC_SHADOW_WER}_count", "")] == 1
    assert samples[(f"{service.METRIC_SHADOW_WER}_sum", "")] == 1.0
    assert (service.METRIC_SHADOW_SKIPPED, "candidate_failed") not in samples


def _samples(metrics: ServingMetrics) -> dict[tuple[str, str], float]:
    """Each sample by name and its ``reason`` label (empty for the comparison's histograms)."""
    return {
        (s.name, s.labels.get("reason", "")): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if "le" not in s.labels
    }


def test_wer_between_transcripts_uses_whispers_normaliser():
    assert transcript_wer("Mr. Smith's 2 cats.", "mister smith's two cats", "en") == 0.0
    assert transcript_wer("send the report today", "send the report", "en") == 0.25
    assert transcript_wer("", "", "en") == 0.0 and transcript_wer("", "noise", "en") == 1.0


def test_a_shadow_of_the_served_version_is_refused_at_start_up():
    with pytest.raises(ConfigError, match=re.escape("SPEECH_SHADOW__VERSION='1.0.0' is the served version")):
        load_settings(model={"version": "1.0.0"}, shadow={"version": "1.0.0"})
    with pytest.raises(ConfigError, match=re.escape("SPEECH_SHADOW__SAMPLE_RATE=1.5")):
        load_settings(shadow={"version": "1.1.0", "sample_rate": 1.5})


def test_the_smoke_check_passes_a_good_server_and_fails_on_a_wer_bound_it_misses(shadowed):
    ok = subprocess.run(
        [sys.executable, "-m", "serving.smoke", "--url", shadowed.base_url, "--header", "canary=true"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("smoke check passed: WER")
    # The served base model mishears a word or two of the clip (it is synthetic speech): above a bound of 0.
    assert smoke.main(["--url", shadowed.base_url, "--max-wer", "0"]) == 1


def test_the_smoke_check_reports_no_transcript_from_a_closed_port(capsys):
    assert smoke.main(["--url", "http://127.0.0.1:9", "--timeout", "5"]) == 2
    assert "no transcript" in capsys.readouterr().out
