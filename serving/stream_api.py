"""``WS /v1/asr/stream``: the wire protocol of a streaming session, and close codes for every way it ends.

Client -> server: binary frames of 16 kHz mono little-endian PCM16 (20 ms = 640 bytes is the intended size), then
the text message ``{"type": "stop"}`` to finish. Server -> client: ``ready`` once, ``partial`` and ``final``
messages per utterance, ``error`` (with the full explanation) just before any abnormal close. Close codes:
1000 done, 1001 server shutting down (after the open utterance's final), 1003 unsupported data, 1008 policy (auth,
tenant residency, language, idle), 1009 frame too big, 1011 internal error, 1013 try again later (max sessions, model
loading, shutting down, or held back by backpressure too long: after the finals of the audio already taken).

The handshake is always accepted so a refused client gets a close code and reason it can read; refusing the HTTP
upgrade would only show it a bare 403. Audio is read at most ``max_realtime_factor`` times faster than real time
(``serving/stream_control.py``): beyond that the reader sleeps, nothing is read and TCP holds the client back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TypeVar

from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from contract.service import STREAM_PATH
from serving.api import LANGUAGE_PATTERN
from serving.auth import UNAUTHORIZED_DETAIL
from serving.engine import SAMPLE_RATE
from serving.metrics import ServingMetrics
from serving.registry import EngineLease, RegistryClosedError
from serving.residency import Misdirected
from serving.settings import StreamSettings
from serving.state import ServingState, serving_state
from serving.stream_control import AudioPacer, LiveStream
from serving.streaming import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED_DATA,
    StreamError,
    StreamSession,
)

log = logging.getLogger(__name__)
E = TypeVar("E", bound=BaseException)
router = APIRouter(tags=["asr"])
ROUTE = STREAM_PATH
CLIENT_ABORT = "client_abort"  # the metrics status of a stream the client left without a close we sent
_MAX_REASON_BYTES = 123  # RFC 6455: a close frame's reason fits in 125 bytes with the code
_PCM16_BYTES_PER_SECOND = 2 * SAMPLE_RATE
# Codes the WebSocket protocol layer closes with on the server's behalf (bad framing, invalid UTF-8, a message
# over ws_max_size); any other disconnect is the client leaving, whatever code it sent.
_PROTOCOL_CLOSE_CODES = frozenset({1002, 1007, CLOSE_TOO_BIG})


@router.websocket(ROUTE)
async def stream(websocket: WebSocket, language: str | None = Query(default=None, pattern=LANGUAGE_PATTERN)) -> None:
    state = serving_state(websocket)
    started = time.perf_counter()
    await websocket.accept()
    version = state.current_version()
    misdirected = _misdirected(state, websocket)
    if misdirected is not None:
        state.metrics.residency_refused(version, misdirected.jurisdiction, ROUTE)
        await _close(websocket, StreamError(CLOSE_POLICY_VIOLATION, misdirected.reason, misdirected.detail))
        state.metrics.request(version, ROUTE, CLOSE_POLICY_VIOLATION, time.perf_counter() - started)
        return
    admitted = _admit(state, websocket)
    if isinstance(admitted, tuple):
        kind, refusal = admitted
        state.metrics.error(version, kind)
        await _close(websocket, refusal)
        state.metrics.request(version, ROUTE, refusal.code, time.perf_counter() - started)
        return
    live = admitted
    try:
        lease = state.models.asr.registry.acquire()
    except RegistryClosedError as exc:
        state.streams.close(live)
        await _close(websocket, StreamError(CLOSE_TRY_AGAIN_LATER, "server is stopping", str(exc)))
        state.metrics.request(version, ROUTE, CLOSE_TRY_AGAIN_LATER, time.perf_counter() - started)
        return
    status: int | str = CLOSE_INTERNAL_ERROR
    with lease:
        version = lease.info.version
        state.metrics.stream_opened(version)
        try:
            status = await _serve(websocket, state, lease, language, live)
        finally:
            state.metrics.stream_closed(version)
            state.metrics.request(version, ROUTE, status, time.perf_counter() - started)
            state.streams.close(live)  # last: whoever waits for the slot to free sees the stream fully counted


def _misdirected(state: ServingState, websocket: WebSocket) -> Misdirected | None:
    """Why an authenticated tenant may not stream here (before a single frame is read), or None."""
    if not state.auth.is_allowed(websocket.headers):
        return None  # _admit answers it as unauthorized
    return state.residency.refusal(state.auth.home_jurisdiction(websocket.headers))


def _admit(state: ServingState, websocket: WebSocket) -> LiveStream | tuple[str, StreamError]:
    """A stream slot, or (error kind, why not) when this stream may not start."""
    if not state.auth.is_allowed(websocket.headers):
        return "unauthorized", StreamError(CLOSE_POLICY_VIOLATION, "missing or invalid API key", UNAUTHORIZED_DETAIL)
    if state.is_draining:
        detail = "the server is shutting down; reconnect (another replica will answer)"
        return "shutting_down", StreamError(CLOSE_TRY_AGAIN_LATER, "server is shutting down; reconnect", detail)
    if not state.models.is_ready:
        loading = "the model is still loading"
        return "not_ready", StreamError(CLOSE_TRY_AGAIN_LATER, "model is loading; retry shortly", loading)
    live = state.streams.try_open()
    if live is None:
        limit = state.streams.limit
        detail = f"the server is at its limit of {limit} concurrent streams (SPEECH_STREAM__MAX_SESSIONS); retry later"
        return "overloaded", StreamError(CLOSE_TRY_AGAIN_LATER, "too many streams; retry later", detail)
    return live


async def _serve(
    websocket: WebSocket, state: ServingState, lease: EngineLease, language: str | None, live: LiveStream
) -> int | str:
    """Run one session to its end and close the socket; return the metrics status (close code or client abort)."""
    settings = state.settings.stream
    vad = state.vad.stream(settings.vad_threshold, settings.end_silence_ms)
    session = StreamSession(lease, vad, settings, state.inference, state.vad_pool, state.metrics, language)
    languages = lease.engine.languages
    if language is not None and language not in languages:
        detail = f"language {language!r} is not supported by {lease.info.name}; use one of {', '.join(languages)}"
        await _close(websocket, StreamError(CLOSE_POLICY_VIOLATION, f"unsupported language {language!r}", detail))
        return CLOSE_POLICY_VIOLATION
    ready = {"type": "ready", "model": lease.info.name, "model_version": lease.info.version, "sample_rate": SAMPLE_RATE}
    ending: StreamError | None = None
    departure: WebSocketDisconnect | None = None
    reader = None
    try:
        await websocket.send_json(ready)
        async with asyncio.TaskGroup() as tasks:
            reader = tasks.create_task(_read_frames(websocket, session, settings, state.metrics))
            live.attach(session, reader)
            tasks.create_task(session.run(websocket.send_json))
    except* StreamError as group:
        ending = _first(group, StreamError)
    except* WebSocketDisconnect as group:
        departure = _first(group, WebSocketDisconnect)
    except* Exception as group:
        log.error("stream failed", exc_info=_first(group, Exception))
        ending = StreamError(CLOSE_INTERNAL_ERROR, "internal error")
    if departure is not None:
        return _status_of_disconnect(departure.code)
    if ending is None:
        # The session sent every final; the stream ends for the reason its input ended.
        ending = live.ending or (None if reader is None or reader.cancelled() else reader.result())
    if ending is not None and ending.code != CLOSE_GOING_AWAY:
        state.metrics.error(lease.info.version, _error_kind(ending.code))
    await _close(websocket, ending)
    return ending.code if ending else CLOSE_NORMAL


async def _read_frames(
    websocket: WebSocket, session: StreamSession, settings: StreamSettings, metrics: ServingMetrics
) -> StreamError | None:
    """Feed the session until the client says stop (None), or until the client has been held back too long (the
    reason to close with once the session has sent its finals). Protocol errors raise and end the stream at once."""
    pacer = AudioPacer(settings.max_realtime_factor, settings.burst_s)
    while True:
        if (wait := pacer.delay()) > 0:
            metrics.stream_held_back(session.model_version, wait)
            await asyncio.sleep(wait)
        try:
            async with asyncio.timeout(settings.idle_timeout_s):
                message = await websocket.receive()
        except TimeoutError:
            raise StreamError(
                CLOSE_POLICY_VIOLATION,
                "idle: no message received",
                f'no message for {settings.idle_timeout_s:g} s; send audio frames continuously and {{"type": "stop"}} '
                "to end",
            ) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1005))
        if message.get("bytes") is not None:
            frame = message["bytes"]
            if not await session.put_frame(frame):
                session.end_input()
                timeout = settings.backpressure_timeout_s
                return StreamError(
                    CLOSE_TRY_AGAIN_LATER,
                    "server overloaded; retry later",
                    f"the server fell behind: this stream's audio backlog stayed full for {timeout:g} s, so it stopped "
                    "reading; every final of the audio it took was sent. Send audio no faster than real time, or retry "
                    "later",
                )
            pacer.consume(len(frame) / _PCM16_BYTES_PER_SECOND)
        elif _is_stop(message.get("text")):
            session.end_input()
            return None
        else:
            text = message.get("text") or ""
            raise StreamError(
                CLOSE_UNSUPPORTED_DATA,
                "unsupported text message",
                f'unsupported text message {text[:40]!r}; send binary PCM16 frames, then {{"type": "stop"}}',
            )


def _is_stop(text: str | None) -> bool:
    try:
        return isinstance(message := json.loads(text or ""), dict) and message.get("type") == "stop"
    except ValueError:
        return False


async def _close(websocket: WebSocket, error: StreamError | None) -> None:
    """Tell the client why (an ``error`` message, then the close frame), unless it has already gone."""
    if websocket.client_state != WebSocketState.CONNECTED:
        return
    try:
        if error is None:
            await websocket.close(CLOSE_NORMAL, "end of stream")
            return
        await websocket.send_json({"type": "error", "code": error.code, "detail": error.detail})
        reason = error.reason.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")
        await websocket.close(error.code, reason)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left while we were saying goodbye


def _first(group: BaseExceptionGroup, kind: type[E]) -> E:
    """The first ``kind`` in ``group``, however deep: the session's own task group nests its errors one level down."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            with contextlib.suppress(LookupError):
                return _first(exc, kind)
        elif isinstance(exc, kind):
            return exc
    raise LookupError(f"no {kind} in {group!r}")


def _status_of_disconnect(code: int | None) -> int | str:
    return code if code in _PROTOCOL_CLOSE_CODES else CLIENT_ABORT


def _error_kind(code: int) -> str:
    return {
        CLOSE_TRY_AGAIN_LATER: "overloaded",
        CLOSE_INTERNAL_ERROR: "engine",
        CLOSE_POLICY_VIOLATION: "idle",
    }.get(code, "bad_frame")
