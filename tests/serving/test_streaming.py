"""WS /v1/asr/stream on the real server: partials then finals per utterance, pacing, limits, close codes."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from serving.bundled import MODEL_VERSION
from tests.serving.server_fixtures import (
    SHARED_STREAM,
    close_of,
    decodes,
    opus_packets,
    pcm16,
    sample,
    scrape,
    silence,
    stream_audio,
    stream_messages,
    with_silence,
)

MAX_SESSIONS = SHARED_STREAM["max_sessions"]
IDLE_TIMEOUT_S = SHARED_STREAM["idle_timeout_s"]
MAX_FRAME_BYTES = SHARED_STREAM["max_frame_bytes"]
FIXED = {"region": "local", "model_version": MODEL_VERSION}
FIRST = "Please call Stella and ask her to bring these things with her from the store."
SECOND = "Can you turn off the lights in the kitchen before you leave?"
THIRD = "The birch canoe slid on the smooth planks."


@pytest.fixture(name="server", scope="module")
def server_fixture(shared_server):
    return shared_server


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
        assert kinds[-1] == "final", f"utterance {utterance}: nothing may follow its final: {kinds}"
        assert final["end_s"] > final["start_s"] and final["model_version"] == MODEL_VERSION
    # Partials are optional under load (they are shed first), but the first utterance's first one always finds
    # an idle decoder: nothing else is decoding yet.
    assert next(m["type"] for m in outcome.messages if m["utterance"] == 0) == "partial", outcome.messages
    assert finals[0]["end_s"] <= finals[1]["start_s"]
    partials = outcome.of_type("partial")
    for earlier, later in itertools.pairwise(partials):
        if earlier["utterance"] == later["utterance"]:
            assert earlier["end_s"] < later["end_s"], "a partial covers more audio than the one before it"
    for partial in partials:
        final = finals[partial["utterance"]]
        assert partial["start_s"] == final["start_s"] and partial["end_s"] <= final["end_s"]
    wer = word_error_rate([FIRST, SECOND], [f["text"] for f in finals])
    print(f"stream WER through the server (flite, real time): {wer:.1%}; {len(partials)} partials")
    assert wer <= 0.15, finals


def test_a_stream_without_interim_results_gets_its_finals_and_no_partial_is_decoded(
    server, synthesize, word_error_rate
):
    before = decodes(server.base_url, "partial")
    url, pace = server.ws_url + "?interim_results=false", server.settings.stream.max_realtime_factor
    outcome = asyncio.run(stream_audio(url, two_utterances(synthesize), realtime=pace))
    assert outcome.close_code == 1000 and [m["type"] for m in outcome.messages] == ["final", "final"], outcome.messages
    assert word_error_rate([FIRST, SECOND], [f["text"] for f in outcome.of_type("final")]) <= 0.15, outcome.messages
    assert decodes(server.base_url, "partial") == before, "a stream without interim results decoded drafts"


def test_a_client_sending_faster_than_real_time_is_held_back_and_loses_no_final(server, synthesize, word_error_rate):
    outcome = asyncio.run(stream_audio(server.ws_url, two_utterances(synthesize, "espeak-ng"), realtime=None))
    assert outcome.close_code == 1000, outcome.messages[-1:]
    finals = outcome.of_type("final")
    assert [f["utterance"] for f in finals] == [0, 1]
    wer = word_error_rate([FIRST, SECOND], [f["text"] for f in finals])
    print(f"stream WER through the server (espeak-ng, unpaced): {wer:.1%}")


def test_streams_beyond_the_session_limit_are_told_to_retry_later_and_every_stream_is_counted(server, synthesize):
    route = {**FIXED, "route": "/v1/asr/stream"}
    before = scrape(server.base_url)

    async def scenario():
        speech = with_silence(synthesize(SECOND, engine="flite"))
        holders = [asyncio.create_task(stream_audio(server.ws_url, speech, realtime=1.0)) for _ in range(MAX_SESSIONS)]
        while server.app.state.serving.streams.active < MAX_SESSIONS:
            await asyncio.sleep(0.05)  # both holders are connected and streaming
        refused = await close_of(server.ws_url)
        held = await asyncio.gather(*holders)
        return refused, held

    (code, reason, messages), held = asyncio.run(scenario())
    assert (code, reason) == (1013, "too many streams; retry later")
    assert messages[-1]["type"] == "error" and "limit of 2 concurrent streams" in messages[-1]["detail"]
    assert all(outcome.close_code == 1000 and outcome.of_type("final") for outcome in held)
    after = scrape(server.base_url)

    def grew(metric: str, **labels: str) -> float:
        key = (metric, frozenset(labels.items()))
        return after[key] - before.get(key, 0.0)

    assert sample(after, "speech_active_streams", **FIXED) == 0
    assert grew("speech_requests_total", **route, status="1000") == MAX_SESSIONS
    assert grew("speech_requests_total", **route, status="1013") == 1
    assert grew("speech_real_time_factor_ratio_count", **FIXED, model="whisper-base", kind="final") >= MAX_SESSIONS


@pytest.mark.parametrize(
    ("send", "code", "reason", "detail"),
    [
        ([b"\x00" * (MAX_FRAME_BYTES + 2)], 1009, f"frame of {MAX_FRAME_BYTES + 2} bytes exceeds {MAX_FRAME_BYTES}",
         "send 20 ms frames"),
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


def test_a_client_flooding_audio_is_held_back_while_another_stream_and_health_are_served(server, synthesize):
    """The attack: one client sends 12 s of audio as fast as TCP allows. It is read at a few times real time and
    the rest waits in its socket; a real-time stream beside it gets its final and /healthz answers meanwhile."""
    before = scrape(server.base_url)
    spoken_text = "Rice is often served in round bowls."

    async def scenario():
        flood = asyncio.create_task(stream_audio(server.ws_url, silence(12.0), realtime=None, frame_bytes=3200))
        speaker = asyncio.create_task(stream_audio(server.ws_url, with_silence(synthesize(spoken_text))))
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            health = await http.get("/healthz")
            flood_was_running = not flood.done()
        return health, flood_was_running, await flood, await speaker

    health, flood_was_running, flooded, spoken = asyncio.run(scenario())
    assert health.status_code == 200 and flood_was_running
    assert flooded.close_code == 1000 and flooded.of_type("final") == [], "silence makes no utterance"
    assert spoken.close_code == 1000 and "round bowls" in spoken.final_text.lower(), spoken.messages
    held_back = sample(scrape(server.base_url), "speech_stream_held_back_seconds_total", **FIXED)
    earlier = before.get(("speech_stream_held_back_seconds_total", frozenset(FIXED.items())), 0.0)
    assert held_back - earlier > 1.0, "the flooding client was read faster than the pace allows"


async def _abort(url: str, *, send_close: bool) -> None:
    """Open a stream, send a little audio, then leave without ``stop``: closing politely, or dropping the TCP link."""
    async with connect(url) as ws:
        await ws.recv()
        await ws.send(pcm16(silence(0.1)))
        if send_close:
            await ws.close()
        else:
            ws.transport.abort()


def test_stream_metrics_record_the_real_close_code_of_every_ending(server):
    def count(samples, status: str) -> float:
        key = ("speech_requests_total", frozenset({**FIXED, "route": "/v1/asr/stream", "status": status}.items()))
        return samples.get(key, 0.0)

    statuses = ("1003", "1008", "1009", "client_abort")
    before = scrape(server.base_url)

    async def scenario():
        for ending in (
            close_of(server.ws_url, ["hello"]),  # 1003
            close_of(server.ws_url, [b"\x00" * 640]),  # idle: 1008
            close_of(server.ws_url, [b"\x00" * (MAX_FRAME_BYTES + 2)]),  # refused by the session: 1009
            close_of(server.ws_url, [b"\x00" * 70_000]),  # refused by the protocol layer (ws_max_size): 1009
            _abort(server.ws_url, send_close=True),
            _abort(server.ws_url, send_close=False),
        ):
            await ending
            while server.app.state.serving.streams.active:  # the server has finished with (and counted) it
                await asyncio.sleep(0.05)

    asyncio.run(scenario())
    after = scrape(server.base_url)
    assert {status: count(after, status) - count(before, status) for status in statuses} == {
        "1003": 1, "1008": 1, "1009": 2, "client_abort": 2,
    }  # fmt: skip


def test_every_message_of_an_english_stream_says_english_though_the_client_named_no_language(server, synthesize):
    """The old failure: the first partial, detected on half a second, came back in Arabic script."""
    speech, pace = with_silence(synthesize(FIRST, engine="flite")), server.settings.stream.max_realtime_factor
    outcome = asyncio.run(stream_audio(server.ws_url, speech, realtime=pace))
    assert outcome.ready["language"] is None and outcome.ready["codec"] == "pcm16"
    spoken = outcome.of_type("partial") + outcome.of_type("final")
    assert outcome.of_type("partial") and outcome.of_type("final"), outcome.messages
    assert {m["language"] for m in spoken} == {"en"}, outcome.messages


def test_an_opus_stream_at_16_kbps_is_transcribed_about_as_well_as_pcm(server, synthesize, word_error_rate):
    packets = opus_packets(two_utterances(synthesize), bitrate=16_000)
    assert sum(map(len, packets)) * 8 / (len(packets) * 0.02) < 20_000, "about 16 kbps: 16x less than PCM16"
    pace = server.settings.stream.max_realtime_factor  # what the server takes without holding the client back
    outcome = asyncio.run(stream_messages(server.ws_url + "?codec=opus", list(packets), realtime=pace))
    assert outcome.ready["codec"] == "opus" and outcome.close_code == 1000, outcome.messages[-1:]
    finals = outcome.of_type("final")
    assert [f["utterance"] for f in finals] == [0, 1], outcome.messages
    assert word_error_rate([FIRST, SECOND], [f["text"] for f in finals]) <= 0.15, finals


def _two_frame_packet(first: bytes, second: bytes) -> bytes:
    """RFC 6716 code 2: two frames of one configuration, the first one's length in the second byte."""
    return bytes([(first[0] & ~3) | 2, len(first) - 1]) + first[1:] + second[1:]


def test_bad_or_truncated_opus_packets_close_the_stream_with_1003_and_the_server_keeps_serving(server, synthesize):
    packets = opus_packets(synthesize(THIRD, engine="flite"))
    whole = _two_frame_packet(packets[30], packets[31])
    url = server.ws_url + "?codec=opus"
    for bad, what in ((whole[: len(packets[30]) - 4], "truncated"), (b"\xff\xfe\xfd", "garbage")):
        code, reason, messages = asyncio.run(close_of(url, [*packets[:20], bad]))
        assert (code, reason) == (1003, "bad Opus frame"), what
        assert messages[-1]["type"] == "error" and "could not be decoded" in messages[-1]["detail"], messages
    code, _, messages = asyncio.run(close_of(url, [*packets[:20], whole, json.dumps({"type": "stop"})]))
    assert code == 1000, f"the whole two-frame packet decodes: {messages}"
    assert httpx.get(server.base_url + "/readyz").status_code == 200
