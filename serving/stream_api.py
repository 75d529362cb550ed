"""``WS /v1/asr/stream``: the wire protocol of a streaming session, and close codes for every way it ends.

Client -> server: binary frames of 16 kHz mono little-endian PCM16 (20 ms = 640 bytes is the intended size), then
the text message ``{"type": "stop"}`` to finish. Server -> client: ``ready`` once, ``partial`` and ``final``
messages per utterance, ``error`` (with the full explanation) just before any abnormal close. Close codes:
1000 done, 1003 unsupported data, 1008 policy (auth, tenant residency, idle), 1009 frame too big, 1011 internal error,
1013 try again later (max sessions, model loading, overloaded).

The handshake is always accepted so a refused client gets a close code and reason it can read; refusing the HTTP
upgrade would only show it a bare 403.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from contract.service import STREAM_PATH
from serving.api import LANGUAGE_PATTERN
from serving.auth import UNAUTHORIZED_DETAIL
from serving.engine import SAMPLE_RATE
from serving.registry import EngineLease, RegistryClosedError
from serving.residency import Misdirected
from serving.state import ServingState, serving_state
from serving.streaming import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED_DATA,
    StreamError,
    StreamSession,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["asr"])
ROUTE = STREAM_PATH
_MAX_REASON_BYTES = 123  # RFC 6455: a close frame's reason fits in 125 bytes with the code


class _ClientGone(Exception):
    """The client disconnected; there is nobody left to tell anything."""


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
    refusal = _refusal(state, websocket)
    if refusal is not None:
        state.metrics.error(version, refusal[0])
        await _close(websocket, StreamError(*refusal[1:]))
        state.metrics.request(version, ROUTE, refusal[1], time.perf_counter() - started)
        return
    try:
        lease = state.models.registry.acquire()
    except RegistryClosedError as exc:
        state.streams.close()
        await _close(websocket, StreamError(CLOSE_TRY_AGAIN_LATER, "server is stopping", str(exc)))
        return
    code = CLOSE_NORMAL
    with lease:
        version = lease.info.version
        state.metrics.stream_opened(version)
        try:
            code = await _serve(websocket, state, lease, language)
        finally:
            state.metrics.stream_closed(version)
            state.streams.close()
            state.metrics.request(version, ROUTE, code, time.perf_counter() - started)


def _misdirected(state: ServingState, websocket: WebSocket) -> Misdirected | None:
    """Why an authenticated tenant may not stream here (before a single frame is read), or None."""
    if not state.auth.is_allowed(websocket.headers):
        return None  # _refusal answers it as unauthorized
    return state.residency.refusal(state.auth.home_jurisdiction(websocket.headers))


def _refusal(state: ServingState, websocket: WebSocket) -> tuple[str, int, str, str] | None:
    """(error kind, code, reason, detail) when this stream may not start; takes a stream slot when it may."""
    if not state.auth.is_allowed(websocket.headers):
        return "unauthorized", CLOSE_POLICY_VIOLATION, "missing or invalid API key", UNAUTHORIZED_DETAIL
    if not state.models.is_ready:
        return "not_ready", CLOSE_TRY_AGAIN_LATER, "model is loading; retry shortly", "the model is still loading"
    if not state.streams.try_open():
        limit = state.streams.limit
        detail = f"the server is at its limit of {limit} concurrent streams (SPEECH_STREAM__MAX_SESSIONS); retry later"
        return "overloaded", CLOSE_TRY_AGAIN_LATER, "too many streams; retry later", detail
    return None


async def _serve(websocket: WebSocket, state: ServingState, lease: EngineLease, language: str | None) -> int:
    """Run one session to its end and close the socket; return the close code used."""
    settings = state.settings.stream
    vad = state.vad.stream(settings.vad_threshold, settings.end_silence_ms)
    session = StreamSession(lease, vad, settings, state.inference_pool, state.metrics, language)
    languages = lease.engine.languages
    if language is not None and language not in languages:
        detail = f"language {language!r} is not supported by {lease.info.name}; use one of {', '.join(languages)}"
        await _close(websocket, StreamError(CLOSE_POLICY_VIOLATION, f"unsupported language {language!r}", detail))
        return CLOSE_POLICY_VIOLATION
    await websocket.send_json(
        {"type": "ready", "model": lease.info.name, "model_version": lease.info.version, "sample_rate": SAMPLE_RATE}
    )
    ending: StreamError | None = None
    is_client_gone = False
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_read_frames(websocket, session, settings.idle_timeout_s))
            tasks.create_task(session.run(websocket.send_json))
    except* StreamError as group:
        ending = group.exceptions[0]
        state.metrics.error(lease.info.version, _error_kind(ending.code))
    except* (_ClientGone, WebSocketDisconnect):
        is_client_gone = True
    except* Exception as group:
        log.error("stream failed", exc_info=group.exceptions[0])
        state.metrics.error(lease.info.version, "internal")
        ending = StreamError(CLOSE_INTERNAL_ERROR, "internal error")
    if not is_client_gone:
        await _close(websocket, ending)
    return ending.code if ending else CLOSE_NORMAL


async def _read_frames(websocket: WebSocket, session: StreamSession, idle_timeout_s: float) -> None:
    while True:
        try:
            async with asyncio.timeout(idle_timeout_s):
                message = await websocket.receive()
        except TimeoutError:
            raise StreamError(
                CLOSE_POLICY_VIOLATION,
                "idle: no message received",
                f'no message for {idle_timeout_s:g} s; send audio frames continuously and {{"type": "stop"}} to end',
            ) from None
        if message["type"] == "websocket.disconnect":
            raise _ClientGone()
        if message.get("bytes") is not None:
            await session.put_frame(message["bytes"])
        elif _is_stop(message.get("text")):
            await session.put_end()
            return
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


def _error_kind(code: int) -> str:
    return {
        CLOSE_TRY_AGAIN_LATER: "overloaded",
        CLOSE_INTERNAL_ERROR: "engine",
        CLOSE_POLICY_VIOLATION: "idle",
    }.get(code, "bad_frame")
