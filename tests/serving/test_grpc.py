"""The gRPC API with the real grpcio client on loopback: streaming and one-shot recognition, status codes, health.

It runs on the same servers (and so the same session core, limits and keys) as the WebSocket and HTTP tests.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from contract.service import GRPC_SERVICE
from serving.bundled import MODEL_VERSION
from serving.grpc_api import generated
from serving.grpc_api import server as grpc_server_module
from serving.grpc_api.server import GrpcServerError
from serving.grpc_api.service import draft_stability, language_of
from serving.settings import ConfigError, load_settings
from tests.serving.server_fixtures import (
    ENV_KEY,
    FILE_KEY,
    SHARED_STREAM,
    decodes,
    live_server,
    local_settings,
    pcm16,
    sample,
    scrape,
    server_model,
    silence,
    wav_bytes,
    with_silence,
)
from tests.serving.test_streaming import FIRST, SECOND, two_utterances

if TYPE_CHECKING:
    from serving.grpc_api import speech_pb2

pb, pb_grpc = generated.load()
Code = grpc.StatusCode
STREAM_ROUTE = f"/{GRPC_SERVICE}/StreamingRecognize"
UNARY_ROUTE = f"/{GRPC_SERVICE}/Recognize"
FIXED = {"region": "local", "model_version": MODEL_VERSION}
CHUNK_S = 0.1
WER_BOUND = 0.15  # the WebSocket route's bound for the same recording (test_streaming.py)


@pytest.fixture(name="server", scope="module")
def server_fixture(shared_server):
    return shared_server


@dataclass
class Outcome:
    responses: list = field(default_factory=list)
    code: grpc.StatusCode | None = None
    details: str = ""

    @property
    def results(self) -> list:
        return [result for response in self.responses for result in response.results]

    @property
    def finals(self) -> list:
        return [result for result in self.results if result.is_final]


def config(rate: int = 16_000, language: str = "", interim: bool = True) -> speech_pb2.StreamingRecognizeRequest:
    recognition = pb.RecognitionConfig(encoding=pb.RecognitionConfig.LINEAR16, sample_rate_hertz=rate)
    recognition.language_code = language
    return pb.StreamingRecognizeRequest(
        streaming_config=pb.StreamingRecognitionConfig(config=recognition, interim_results=interim)
    )


def audio(chunk: bytes) -> speech_pb2.StreamingRecognizeRequest:
    return pb.StreamingRecognizeRequest(audio_content=chunk)


def paced(
    speech: np.ndarray, first: speech_pb2.StreamingRecognizeRequest | None = None, realtime: float = 1.0
) -> Iterator:
    """The config (``first``), then ``speech`` in 100 ms chunks at ``realtime`` x real time, then a half-close."""
    yield first or config()
    data, step = pcm16(speech), int(CHUNK_S * 32_000)
    started = time.monotonic()
    for offset in range(0, len(data), step):
        yield audio(data[offset : offset + step])
        time.sleep(max(0.0, started + (offset + step) / 32_000 / realtime - time.monotonic()))


def streaming(target: str, requests: Iterator, metadata: tuple = ()) -> Outcome:
    outcome = Outcome()
    with grpc.insecure_channel(target) as channel:
        call = pb_grpc.SpeechStub(channel).StreamingRecognize(requests, metadata=metadata, timeout=120)
        try:
            for response in call:
                outcome.responses.append(response)
        except grpc.RpcError as error:
            outcome.code, outcome.details = error.code(), error.details() or ""
            return outcome
        outcome.code = call.code()
    return outcome


def recognize(target: str, content: bytes, metadata: tuple = (), **recognition: object) -> speech_pb2.RecognizeResponse:
    with grpc.insecure_channel(target) as channel:
        request = pb.RecognizeRequest(
            config=pb.RecognitionConfig(**recognition), audio=pb.RecognitionAudio(content=content)
        )
        return pb_grpc.SpeechStub(channel).Recognize(request, metadata=metadata, timeout=120)


def refusal_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    return raised.value.code(), raised.value.details() or ""


def health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        # The stub package declares HealthStub without the methods grpc sets on it in __init__.
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status  # type: ignore[attr-defined]


def grew(before: dict, after: dict, **labels: str) -> float:
    """How much speech_requests_total with ``labels`` (and this server's fixed ones) grew between two scrapes."""
    key = ("speech_requests_total", frozenset({**FIXED, **labels}.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def transcript(results) -> str:
    return " ".join(result.alternatives[0].transcript for result in results).strip()


def test_a_stream_gets_interim_then_final_results_as_accurate_as_the_websocket_route(
    server, synthesize, word_error_rate
):
    # At the most the server takes without holding the client back: the VAD cuts the same utterances and the finals
    # decode the same audio as in real time (the WebSocket test streams in real time), in a third of the wait.
    pace = server.settings.stream.max_realtime_factor
    outcome = streaming(server.grpc_target, paced(two_utterances(synthesize), realtime=pace))
    assert outcome.code == Code.OK, outcome.details
    assert {response.model_version for response in outcome.responses} == {MODEL_VERSION}
    finals = outcome.finals
    assert [f.utterance for f in finals] == [0, 1], outcome.results
    for utterance, final in enumerate(finals):
        of_it = [r for r in outcome.results if r.utterance == utterance]
        assert of_it[-1].is_final, f"utterance {utterance}: nothing may follow its final"
        assert final.result_end_time.ToMilliseconds() > final.result_start_time.ToMilliseconds()
        assert final.language_code == "en"
    # As on the WebSocket: interim results are shed first under load, but the first utterance's first one always
    # finds an idle decoder.
    assert not next(r for r in outcome.results if r.utterance == 0).is_final
    interims = [r for r in outcome.results if not r.is_final]
    assert all(0.0 <= r.stability <= 1.0 for r in interims)
    assert finals[0].result_end_time.ToMilliseconds() <= finals[1].result_start_time.ToMilliseconds()
    wer = word_error_rate([FIRST, SECOND], [f.alternatives[0].transcript for f in finals])
    print(f"gRPC stream WER (flite, {pace:g}x real time): {wer:.1%}; {len(interims)} interim results")
    assert wer <= WER_BOUND, finals


def test_without_interim_results_a_stream_gets_only_finals_and_no_draft_is_decoded(server, synthesize):
    speech = with_silence(synthesize(SECOND, engine="flite"))
    pace = server.settings.stream.max_realtime_factor
    before = decodes(server.base_url, "partial")
    outcome = streaming(server.grpc_target, paced(speech, config(interim=False, language="en-US"), pace))
    assert outcome.code == Code.OK, outcome.details
    assert outcome.results and all(r.is_final for r in outcome.results)
    assert "lights" in transcript(outcome.finals).lower()
    assert decodes(server.base_url, "partial") == before, "interim results were decoded only to be dropped"


@pytest.mark.parametrize("encoding", ["container", "linear16"])
def test_recognize_transcribes_a_whole_clip(server, synthesize, word_error_rate, encoding):
    speech = with_silence(synthesize(FIRST, engine="flite"))
    if encoding == "container":
        response = recognize(server.grpc_target, wav_bytes(speech))
    else:
        response = recognize(
            server.grpc_target, pcm16(speech), encoding=pb.RecognitionConfig.LINEAR16, sample_rate_hertz=16_000
        )
    assert response.model_version == MODEL_VERSION and response.language_code == "en"
    assert response.total_billed_time.ToMilliseconds() == round(len(speech) / 16)
    assert word_error_rate([FIRST], [transcript(response.results)]) <= WER_BOUND, response


MAX_FRAME_BYTES = SHARED_STREAM["max_frame_bytes"]
IDLE_TIMEOUT_S = SHARED_STREAM["idle_timeout_s"]


def _idle_after_config() -> Iterator:
    yield config()
    time.sleep(IDLE_TIMEOUT_S + 1.5)


@pytest.mark.parametrize(
    ("requests", "code", "detail"),
    [
        (lambda: iter([config(rate=8000)]), Code.INVALID_ARGUMENT, "sample_rate_hertz=8000 is not supported"),
        (lambda: iter([audio(b"\x00" * 640)]), Code.INVALID_ARGUMENT, "first message must be a streaming_config"),
        (lambda: iter([]), Code.INVALID_ARGUMENT, "ended before its first message"),
        (lambda: iter([config(language="xx")]), Code.INVALID_ARGUMENT, "language 'xx' is not supported"),
        (lambda: iter([config(language="english!")]), Code.INVALID_ARGUMENT, "is not an ISO 639-1 code"),
        (lambda: iter([config(), audio(b"\x00" * 641)]), Code.INVALID_ARGUMENT, "641 bytes is not a whole number"),
        (lambda: iter([config(), audio(b"\x00" * (MAX_FRAME_BYTES + 2))]), Code.INVALID_ARGUMENT,
         f"exceeds the limit of {MAX_FRAME_BYTES} bytes"),
        (lambda: iter([config(), audio(b"\x00" * 640), config()]), Code.INVALID_ARGUMENT,
         "only the first message may be a streaming_config"),
        (_idle_after_config, Code.OUT_OF_RANGE, f"no message for {IDLE_TIMEOUT_S:g} s"),
    ],
)  # fmt: skip
def test_a_bad_stream_gets_a_clear_status_and_the_server_keeps_serving(server, requests, code, detail):
    before = scrape(server.base_url)
    outcome = streaming(server.grpc_target, requests())
    assert outcome.code == code and detail in outcome.details, outcome.details
    assert health(server.grpc_target) == health_pb2.HealthCheckResponse.SERVING
    assert grew(before, scrape(server.base_url), route=STREAM_ROUTE, status=code.name) == 1
    assert server.app.state.serving.streams.active == 0


BAD_RECOGNIZE: tuple[tuple[bytes, dict[str, int | str], str], ...] = (  # content, config, what the refusal says
    (b"", {}, "empty"),
    (b"definitely not audio" * 20, {}, ""),
    (b"\x00" * 3200, {"encoding": 1}, "sample_rate_hertz=0 with LINEAR16"),
    (b"\x00" * 3200, {"language_code": "english!"}, "is not an ISO 639-1 code"),
)


def test_bad_audio_or_config_for_recognize_is_invalid_and_the_server_keeps_serving(server, synthesize):
    # Health after each case and one transcription after all of them: every case is refused before the model runs,
    # so a decode after each one would cost four base decodes to prove the same.
    for content, recognition, detail in BAD_RECOGNIZE:
        code, details = refusal_of(recognize, server.grpc_target, content, **recognition)
        assert code == Code.INVALID_ARGUMENT and detail in details, (recognition, details)
        assert health(server.grpc_target) == health_pb2.HealthCheckResponse.SERVING
    response = recognize(server.grpc_target, wav_bytes(with_silence(synthesize(SECOND, engine="flite"))))
    assert "kitchen" in transcript(response.results).lower()


def test_streams_beyond_the_session_limit_get_resource_exhausted_and_held_streams_finish(server):
    limit = SHARED_STREAM["max_sessions"]
    before = scrape(server.base_url)
    release = threading.Event()

    def held() -> Iterator:
        yield config()
        while not release.is_set():
            yield audio(pcm16(silence(CHUNK_S)))
            time.sleep(CHUNK_S)

    results: list[Outcome] = []
    holders = [
        threading.Thread(target=lambda: results.append(streaming(server.grpc_target, held()))) for _ in range(limit)
    ]
    for holder in holders:
        holder.start()
    try:
        deadline = time.monotonic() + 30
        while server.app.state.serving.streams.active < limit:
            assert time.monotonic() < deadline, "the holding streams were never admitted"
            time.sleep(0.05)
        refused = streaming(server.grpc_target, iter([config()]))
    finally:
        release.set()
        for holder in holders:
            holder.join(timeout=60)
    assert refused.code == Code.RESOURCE_EXHAUSTED
    assert f"limit of {limit} concurrent streams (SPEECH_STREAM__MAX_SESSIONS)" in refused.details
    assert [r.code for r in results] == [Code.OK] * limit
    after = scrape(server.base_url)
    assert grew(before, after, route=STREAM_ROUTE, status="OK") == limit
    assert grew(before, after, route=STREAM_ROUTE, status="RESOURCE_EXHAUSTED") == 1
    assert sample(after, "speech_active_streams", **FIXED) == 0


def test_health_reports_serving_for_the_server_and_the_speech_service(server):
    assert health(server.grpc_target) == health_pb2.HealthCheckResponse.SERVING
    assert health(server.grpc_target, GRPC_SERVICE) == health_pb2.HealthCheckResponse.SERVING


def test_calls_without_a_valid_key_are_unauthenticated_and_keys_go_in_metadata(guarded_server, synthesize):
    target = guarded_server.grpc_target
    speech = with_silence(synthesize(SECOND, engine="flite"))
    for metadata in ((), (("authorization", "Bearer not-a-key"),), (("x-api-key", "not-a-key"),)):
        code, details = refusal_of(recognize, target, wav_bytes(speech), metadata)
        assert code == Code.UNAUTHENTICATED and "'Authorization: Bearer <key>'" in details
        refused = streaming(target, iter([config()]), metadata)
        assert refused.code == Code.UNAUTHENTICATED
    response = recognize(target, wav_bytes(speech), (("authorization", f"Bearer {ENV_KEY}"),))
    assert "kitchen" in transcript(response.results).lower()
    pace = guarded_server.settings.stream.max_realtime_factor
    outcome = streaming(target, paced(speech, realtime=pace), (("x-api-key", FILE_KEY),))
    assert outcome.code == Code.OK and "kitchen" in transcript(outcome.finals).lower()
    assert health(target) == health_pb2.HealthCheckResponse.SERVING  # probes need no key
    samples = scrape(guarded_server.base_url)
    version = guarded_server.app.state.serving.current_version()
    labels = {"region": "local", "model_version": version}
    assert sample(samples, "speech_requests_total", **labels, route=UNARY_ROUTE, status="UNAUTHENTICATED") >= 3
    assert sample(samples, "speech_errors_total", **labels, kind="unauthorized") >= 6


def test_on_shutdown_a_stream_gets_the_final_of_its_open_utterance_and_health_turns_not_serving(
    tiny_en_model_dir, synthesize
):
    cache = tiny_en_model_dir.parents[1]
    settings = local_settings(cache, model=server_model(cache, "tiny.en"))
    spoken = synthesize(FIRST, engine="flite")  # no trailing silence: the utterance is still open at shutdown
    stop_sending = threading.Event()

    def speech_then_silence() -> Iterator:
        yield from paced(spoken)
        while not stop_sending.is_set():
            yield audio(pcm16(silence(CHUNK_S)))
            time.sleep(CHUNK_S)

    outcome = Outcome()
    statuses: list[int] = []

    def stream() -> None:
        with grpc.insecure_channel(target) as channel:
            call = pb_grpc.SpeechStub(channel).StreamingRecognize(speech_then_silence(), timeout=120)
            try:
                outcome.responses.extend(call)
            except grpc.RpcError as error:
                outcome.code, outcome.details = error.code(), error.details() or ""

    def watch_health() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not statuses or statuses[-1] == health_pb2.HealthCheckResponse.SERVING):
            statuses.append(health(target))
            time.sleep(0.05)

    with live_server(settings) as live:
        target = live.grpc_target
        streamer = threading.Thread(target=stream)
        streamer.start()
        deadline = time.monotonic() + 60
        while not outcome.responses:
            assert time.monotonic() < deadline and streamer.is_alive(), "no interim result before shutdown"
            time.sleep(0.05)
        statuses.append(health(target))  # before the shutdown begins: Check answers the readiness of the moment
        watcher = threading.Thread(target=watch_health)
        watcher.start()
    stop_sending.set()
    streamer.join(timeout=60)
    watcher.join(timeout=60)
    assert outcome.code == Code.UNAVAILABLE and "shutting down" in outcome.details, outcome.details
    finals = outcome.finals
    # The signal may come early in the sentence: what matters is that the open utterance got its final.
    assert len(finals) == 1 and finals[0].utterance == 0 and transcript(finals).lower().startswith("please")
    assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING, statuses


def test_health_answers_readiness_when_asked_not_at_the_trackers_last_poll(tmp_path, monkeypatch):
    # A probe right after /readyz turned ready, or right after a drain began, must see it: with the tracker that
    # pushes readiness to Watch streams slowed to an hour, Check still follows every flip.
    from serving.app import create_app

    monkeypatch.setattr(grpc_server_module, "_READINESS_POLL_S", 3600)
    app = create_app(local_settings(tmp_path))
    state = app.state.serving

    async def checks() -> list[int]:
        grpc_server = app.state.grpc
        await grpc_server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)

                async def check(service: str = "") -> int:
                    request = health_pb2.HealthCheckRequest(service=service)
                    return (await stub.Check(request, timeout=10)).status  # type: ignore[attr-defined]

                seen = [await check()]
                for manager in state.models.managers.values():  # as each one's load_initial ends
                    manager.is_ready = True
                seen += [await check(), await check(GRPC_SERVICE)]
                state.is_draining = True
                seen += [await check(), await check(GRPC_SERVICE)]
                return seen
        finally:
            await grpc_server.stop(0)

    try:
        statuses = asyncio.run(checks())
    finally:
        state.close()
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert statuses == [not_serving, serving, serving, not_serving, not_serving]


def test_a_taken_grpc_port_stops_start_up_naming_the_variable(tmp_path):
    from serving.app import create_app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = create_app(local_settings(tmp_path, grpc={"port": port}))
        with pytest.raises(GrpcServerError, match=f"cannot listen for gRPC on 127.0.0.1:{port} .*SPEECH_GRPC__PORT"):
            asyncio.run(app.state.grpc.start())
    app.state.serving.close()


def test_a_grpc_port_out_of_range_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("SPEECH_GRPC__PORT", "70000")
    with pytest.raises(ConfigError, match="SPEECH_GRPC__PORT='70000': Input should be less than or equal to 65535"):
        load_settings()


@pytest.mark.parametrize(
    ("previous", "current", "stability"),
    [(None, "please call", 0.0), ("please call", "please call stella", 2 / 3), ("please cost", "please call", 0.5),
     ("please call stella", "please call", 1.0), ("please", "", 0.0)],
)  # fmt: skip
def test_an_interim_results_stability_is_the_share_of_its_words_the_previous_draft_already_had(
    previous, current, stability
):
    assert draft_stability(previous, current) == pytest.approx(stability)


@pytest.mark.parametrize(("code", "language"), [("", None), ("en", "en"), ("en-US", "en"), ("EN-gb", "en")])
def test_a_bcp47_language_code_selects_its_primary_language(code, language):
    assert language_of(code) == language
