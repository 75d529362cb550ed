"""``WS /v1/asr/stream``: the wire protocol of a streaming session, and close codes for every way it ends.

Query parameters: ``language`` (fixed for the stream; without it, detected once on the first speech), ``codec``
(``pcm16``, the default, or ``opus``) and ``interim_results`` (``false``: finals only, and no partial is decoded).
Client -> server: binary frames, each 16 kHz mono little-endian PCM16 (20 ms = 640 bytes is the intended size) or one
Opus packet (``serving/stream_codec.py``); the text message ``{"type": "flush"}`` to end the open utterance now and get
its final; ``{"type": "stop"}`` to finish. Server -> client: ``ready`` once, ``partial`` and ``final`` messages per
utterance (each with the stream's ``language``; a partial's ``committed`` text starts every later partial of its
utterance), ``error`` (with the full explanation) just before any abnormal close.
Close codes:
1000 done, 1001 server shutting down (after the open utterance's final), 1003 unsupported data, 1008 policy (auth,
tenant residency, language, idle), 1009 frame too big, 1011 internal error, 1013 try again later (max sessions, model
loading, shutting down, or held back by backpressure too long: after the finals of the audio already taken).

The handshake is always accepted so a refused client gets a close code and reason it can read; refusing the HTTP
upgrade would only show it a bare 403. Audio is read at most ``max_realtime_factor`` times faster than real time
(``serving/stream_control.py``): beyond that the reader sleeps, nothing is read and TCP holds the client back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from contract.service import STREAM_PATH, STREAM_SUBPROTOCOL
from serving.api import LANGUAGE_PATTERN
from serving.auth import STREAM_UNAUTHORIZED_DETAIL
from serving.engine import SAMPLE_RATE
from serving.registry import EngineLease
from serving.state import ServingState, serving_state
from serving.stream_codec import Codec
from serving.stream_control import LiveStream
from serving.stream_core import (
    FLUSH,
    MISDIRECTED,
    UNAUTHORIZED,
    Flush,
    Refusal,
    admit,
    count_refusal,
    error_kind,
    feed,
    first_of,
    new_session,
    release,
    unsupported_language,
)
from serving.streaming import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED_DATA,
    StreamError,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["asr"])
ROUTE = STREAM_PATH
CLIENT_ABORT = "client_abort"  # the metrics status of a stream the client left without a close we sent
_MAX_REASON_BYTES = 123  # RFC 6455: a close frame's reason fits in 125 bytes with the code
_HOW_TO_END = '{"type": "stop"} to end'
_FRAME_NAMES = {"pcm16": "PCM16", "opus": "Opus packet"}
# Codes the WebSocket protocol layer closes with on the server's behalf (bad framing, invalid UTF-8, a message
# over ws_max_size); any other disconnect is the client leaving, whatever code it sent.
_PROTOCOL_CLOSE_CODES = frozenset({1002, 1007, CLOSE_TOO_BIG})


@router.websocket(ROUTE)
async def stream(
    websocket: WebSocket,
    language: str | None = Query(default=None, pattern=LANGUAGE_PATTERN),
    codec: Annotated[Codec, Query(description="what binary frames hold: pcm16 or opus")] = "pcm16",
    interim_results: Annotated[
        bool, Query(description="false: finals only; no partial is decoded or sent (gRPC's interim_results)")
    ] = True,
) -> None:
    state = serving_state(websocket)
    started = time.perf_counter()
    # A browser fails the handshake unless the server selects one of the subprotocols it offered; the one selected
    # is never the key's.
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=STREAM_SUBPROTOCOL if STREAM_SUBPROTOCOL in offered else None)
    admitted = admit(state, websocket.headers, language)
    if isinstance(admitted, Refusal):
        count_refusal(state, admitted, ROUTE)
        code = CLOSE_POLICY_VIOLATION if admitted.kind in (UNAUTHORIZED, MISDIRECTED) else CLOSE_TRY_AGAIN_LATER
        detail = STREAM_UNAUTHORIZED_DETAIL if admitted.kind == UNAUTHORIZED else admitted.detail
        await _close(websocket, StreamError(code, admitted.reason, detail))
        state.metrics.request(state.current_version(), ROUTE, code, time.perf_counter() - started)
        return
    status: int | str = CLOSE_INTERNAL_ERROR
    try:
        status = await _serve(websocket, state, admitted.lease, language, codec, admitted.live, interim_results)
    finally:
        state.metrics.request(admitted.lease.info.version, ROUTE, status, time.perf_counter() - started)
        release(state, admitted)


async def _serve(
    websocket: WebSocket,
    state: ServingState,
    lease: EngineLease,
    language: str | None,
    codec: Codec,
    live: LiveStream,
    interim_results: bool,
) -> int | str:
    """Run one session to its end and close the socket; return the metrics status (close code or client abort)."""
    settings = state.settings.stream
    session = new_session(state, lease, language, codec, interim_results=interim_results)
    unsupported = unsupported_language(lease, language)
    if unsupported is not None:
        await _close(websocket, StreamError(CLOSE_POLICY_VIOLATION, f"unsupported language {language!r}", unsupported))
        return CLOSE_POLICY_VIOLATION
    ready = {
        "type": "ready",
        "model": lease.info.name,
        "model_version": lease.info.version,
        "sample_rate": SAMPLE_RATE,
        "codec": codec,
        "language": session.language,  # None: detected on the first speech, then in every partial and final
    }
    ending: StreamError | None = None
    departure: WebSocketDisconnect | None = None
    reader = None
    try:
        await websocket.send_json(ready)
        async with asyncio.TaskGroup() as tasks:
            reader = tasks.create_task(
                feed(session, partial(_next_frame, websocket, session.codec), settings, state.metrics, _HOW_TO_END)
            )
            live.attach(session, reader)
            tasks.create_task(session.run(websocket.send_json))
    except* StreamError as group:
        ending = first_of(group, StreamError)
    except* WebSocketDisconnect as group:
        departure = first_of(group, WebSocketDisconnect)
    except* Exception as group:
        log.error("stream failed", exc_info=first_of(group, Exception))
        ending = StreamError(CLOSE_INTERNAL_ERROR, "internal error")
    if departure is not None:
        return _status_of_disconnect(departure.code)
    if ending is None:
        # The session sent every final; the stream ends for the reason its input ended.
        ending = live.ending or (None if reader is None or reader.cancelled() else reader.result())
    if ending is not None and ending.code != CLOSE_GOING_AWAY:
        state.metrics.error(lease.info.version, error_kind(ending.code))
    await _close(websocket, ending)
    return ending.code if ending else CLOSE_NORMAL


async def _next_frame(websocket: WebSocket, codec: str) -> bytes | Flush | None:
    """The next binary frame, ``FLUSH`` when the client asks for a final now, or None once it says stop; anything
    else ends the stream at once."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1005))
    if message.get("bytes") is not None:
        return message["bytes"]
    control = _control_of(message.get("text"))
    if control == "flush":
        return FLUSH
    if control == "stop":
        return None
    text = message.get("text") or ""
    raise StreamError(
        CLOSE_UNSUPPORTED_DATA,
        "unsupported text message",
        f"unsupported text message {text[:40]!r}; send binary {_FRAME_NAMES[codec]} frames "
        '({"type": "flush"} ends an utterance now), then {"type": "stop"}',
    )


def _control_of(text: str | None) -> str | None:
    """The ``type`` of a control message (``flush``, ``stop``), else None."""
    try:
        message = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return message.get("type") if isinstance(message, dict) else None


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


def _status_of_disconnect(code: int | None) -> int | str:
    return code if code in _PROTOCOL_CLOSE_CODES else CLIENT_ABORT
