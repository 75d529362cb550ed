"""WS /v1/asr/stream on the real server: partials then finals per utterance, backpressure, limits, close codes."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import numpy as np
import pytest

from serving.export import MODEL_VERSION
from serving.settings import StreamSettings
from tests.serving.server_fixtures import (
    close_of,
    live_server,
    local_settings,
    sample,
    scrape,
    silence,
    stream_audio,
    with_silence,
)

MAX_SESSIONS = 2
IDLE_TIMEOUT_S = 1.5
PARTIAL_EVERY_S = StreamSettings().partial_interval_ms / 1000
FIRST = "Please call Stella and ask her to bring these things with her from the store."
SECOND = "Can you turn off the lights in the kitchen before you leave?"


@pytest.fixture(scope="module")
def server(bundled_model_dir):
    settings = local_settings(
        bundled_model_dir.parents[1],
        stream={"max_sessions": MAX_SESSIONS, "idle_timeout_s": IDLE_TIMEOUT_S, "max_frame_bytes": 3200},
    )
    with live_server(settings) as live:
        yield live


def two_utterances(synthesize, engine: str = "flite") -> np.ndarray:
    return np.concatenate(
        [with_silence(synthesize(FIRST, engine=engine)), silence(0.3), with_silence(synthesize(SECOND, engine=engine))]
    )


def test_a_stream_in_real_time_gets_partials_then_a_final_per_utterance(server, synthesize, word_error_rate):
    outcome = asyncio.run(stream_audio(server.ws_url, two_utterances(synthesize), realtime=1.0))
    assert outcome.ready["type"] == "ready" and outcome.ready["model_version"] == MODEL_VERSION
    assert (outcome.close_code, outcome.close_reason) == (1000, "end of stream")
    finals = outcome.of_type("final")
    assert [f["utterance"] for f in finals] == [0, 1], outcome.messages
    for utterance, final in enumerate(finals):
        kinds = [m["type"] for m in outcome.messages if m["utterance"] == utterance]
        assert kinds[-1] == "final" and "partial" in kinds[:-1], f"utterance {utterance}: {kinds}"
        assert final["end_s"] > final["start_s"] and final["model_version"] == MODEL_VERSION
    assert finals[0]["end_s"] <= finals[1]["start_s"]
    partials = outcome.of_type("partial")
    cadence = max(b["end_s"] - a["end_s"] for a, b in itertools.pairwise(partials) if a["utterance"] == b["utterance"])
    wer = word_error_rate([FIRST, SECOND], [f["text"] for f in finals])
    print(f"stream WER through the server (flite, real time): {wer:.1%}; {len(partials)} partials, "
          f"largest gap between partials {cadence:.2f} s of audio")  # fmt: skip
    assert wer <= 0.15, finals
    assert cadence <= PARTIAL_EVERY_S + 1e-9, f"partials fell behind real time: {partials}"


def test_a_client_sending_faster_than_real_time_is_held_back_and_loses_no_final(server, synthesize, word_error_rate):
    outcome = asyncio.run(stream_audio(server.ws_url, two_utterances(synthesize, "espeak-ng"), realtime=None))
    assert outcome.close_code == 1000, outcome.messages[-1:]
    finals = outcome.of_type("final")
    assert [f["utterance"] for f in finals] == [0, 1]
    wer = word_error_rate([FIRST, SECOND], [f["text"] for f in finals])
    print(f"stream WER through the server (espeak-ng, unpaced): {wer:.1%}")


def test_streams_beyond_the_session_limit_are_told_to_retry_later(server, synthesize):
    async def scenario():
        speech = with_silence(synthesize(SECOND, engine="flite"))
        holders = [asyncio.create_task(stream_audio(server.ws_url, speech, realtime=1.0)) for _ in range(MAX_SESSIONS)]
        await asyncio.sleep(1.0)  # both holders are connected and streaming
        refused = await close_of(server.ws_url)
        held = await asyncio.gather(*holders)
        return refused, held

    (code, reason, messages), held = asyncio.run(scenario())
    assert (code, reason) == (1013, "too many streams; retry later")
    assert messages[-1]["type"] == "error" and "limit of 2 concurrent streams" in messages[-1]["detail"]
    assert all(outcome.close_code == 1000 and outcome.of_type("final") for outcome in held)


@pytest.mark.parametrize(
    ("send", "code", "reason", "detail"),
    [
        ([b"\x00" * 3202], 1009, "frame of 3202 bytes exceeds 3200", "send 20 ms frames"),
        ([b"\x00" * 641], 1003, "frame is not whole PCM16 samples", "641 bytes is not a whole number"),
        (["hello"], 1003, "unsupported text message", "send binary PCM16 frames"),
        ([json.dumps({"type": "pause"})], 1003, "unsupported text message", "then {\"type\": \"stop\"}"),
        ([b"\x00" * 640], 1008, "idle: no message received", f"no message for {IDLE_TIMEOUT_S:g} s"),
    ],
)  # fmt: skip
def test_bad_frames_close_the_stream_with_a_clear_code(server, send, code, reason, detail):
    got_code, got_reason, messages = asyncio.run(close_of(server.ws_url, send))
    assert (got_code, got_reason) == (code, reason)
    assert messages[0]["type"] == "ready"
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == code and detail in messages[-1]["detail"]
    assert httpx.get(server.base_url + "/readyz").status_code == 200


def test_an_unknown_language_is_refused_before_any_audio(server):
    code, reason, messages = asyncio.run(close_of(server.ws_url.replace("/stream", "/stream?language=xx")))
    assert (code, reason) == (1008, "unsupported language 'xx'")
    assert "use one of af, am, ar" in messages[-1]["detail"] and " en," in messages[-1]["detail"]


def test_the_server_still_transcribes_streams_after_every_refused_one(server, synthesize, word_error_rate):
    outcome = asyncio.run(stream_audio(server.ws_url, with_silence(synthesize(SECOND, engine="flite")), realtime=None))
    assert outcome.close_code == 1000
    assert word_error_rate([SECOND], [outcome.final_text]) <= 0.15, outcome.final_text


def test_stream_metrics_count_streams_and_partials(server):
    samples = scrape(server.base_url)
    fixed = {"region": "local", "model_version": MODEL_VERSION}
    assert sample(samples, "speech_active_streams", **fixed) == 0
    assert sample(samples, "speech_requests_total", **fixed, route="/v1/asr/stream", status="1000") >= 2
    assert sample(samples, "speech_requests_total", **fixed, route="/v1/asr/stream", status="1013") >= 1
    assert sample(samples, "speech_real_time_factor_ratio_count", **fixed, kind="partial") >= 1
    assert sample(samples, "speech_real_time_factor_ratio_count", **fixed, kind="final") >= 2
