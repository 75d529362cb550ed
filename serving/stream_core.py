"""What every streaming transport shares: who may open a stream, its engine lease, and feeding it audio at pace.

The WebSocket route (``serving/stream_api.py``) and the gRPC service (``serving/grpc_api/``) differ only in how
they read frames and how they say why a stream ended (close codes, status codes). Admission (API key, tenant
residency, draining, readiness, the session limit), the engine lease, pacing, idle and backpressure limits, the
:class:`~serving.streaming.StreamSession` itself and the metrics by outcome are the same objects for both, so a
limit or a residency rule holds whichever protocol a client speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from serving.auth import UNAUTHORIZED_DETAIL
from serving.metrics import ServingMetrics
from serving.registry import EngineLease, RegistryClosedError
from serving.settings import StreamSettings
from serving.state import ServingState
from serving.stream_codec import Codec, frame_decoder
from serving.stream_control import AudioPacer, LiveStream
from serving.streaming import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    StreamError,
    StreamSession,
)

E = TypeVar("E", bound=BaseException)


class Flush(enum.Enum):
    """What a transport's frame reader returns for a client's request to end the open utterance now."""

    FLUSH = "flush"


FLUSH = Flush.FLUSH
# Why a stream was refused before it started: the `kind` of speech_errors_total, and what each transport maps.
UNAUTHORIZED, MISDIRECTED, SHUTTING_DOWN, NOT_READY, OVERLOADED = (
    "unauthorized", "misdirected", "shutting_down", "not_ready", "overloaded"
)  # fmt: skip


@dataclass(frozen=True)
class Refusal:
    """Why a call may not start: ``kind`` (one of the constants above), a short ``reason`` and the full ``detail``."""

    kind: str
    reason: str
    detail: str
    jurisdiction: str | None = None  # MISDIRECTED: the tenant's home jurisdiction


@dataclass(frozen=True)
class Admitted:
    """A stream slot and the engine the stream runs on to its end; :func:`release` gives both back."""

    live: LiveStream
    lease: EngineLease


def caller_refusal(state: ServingState, headers: Mapping[str, str]) -> Refusal | None:
    """Whether the caller's key may use the API here: a valid key (when auth is on) of a tenant this replica may
    serve. ``headers`` are HTTP headers or gRPC metadata (lower-case names); the key check is the HTTP API's."""
    if not state.auth.is_allowed(headers):
        return Refusal(UNAUTHORIZED, "missing or invalid API key", UNAUTHORIZED_DETAIL)
    misdirected = state.residency.refusal(state.auth.home_jurisdiction(headers))
    if misdirected is not None:
        return Refusal(MISDIRECTED, misdirected.reason, misdirected.detail, misdirected.jurisdiction)
    return None


def server_refusal(state: ServingState) -> Refusal | None:
    """Whether the server takes new work at all: not while it drains or before its model is warm."""
    if state.is_draining:
        detail = "the server is shutting down; reconnect (another replica will answer)"
        return Refusal(SHUTTING_DOWN, "server is shutting down; reconnect", detail)
    if not state.models.is_ready:
        return Refusal(NOT_READY, "model is loading; retry shortly", "the model is still loading")
    return None


def admit(state: ServingState, headers: Mapping[str, str], language: str | None = None) -> Admitted | Refusal:
    """A stream slot and an engine lease, or why the stream may not start (before a single frame is read).

    A stream that names its ``language`` gets the model specialised for it, if there is one; detecting the language
    would hold the audio back until it is known, so a stream without one runs on the multilingual model.
    """
    refusal = caller_refusal(state, headers) or server_refusal(state)
    if refusal is not None:
        return refusal
    live = state.streams.try_open()
    if live is None:
        limit = state.streams.limit
        detail = f"the server is at its limit of {limit} concurrent streams (SPEECH_STREAM__MAX_SESSIONS); retry later"
        return Refusal(OVERLOADED, "too many streams; retry later", detail)
    try:
        lease = state.models.asr_for(language).registry.acquire()
    except RegistryClosedError as exc:
        state.streams.close(live)
        return Refusal(SHUTTING_DOWN, "server is stopping", str(exc))
    state.metrics.stream_opened(lease.info.version)
    return Admitted(live, lease)


def count_refusal(state: ServingState, refusal: Refusal, route: str) -> None:
    """A refused call in the metrics: residency refusals by jurisdiction, the others as errors by kind."""
    version = state.current_version()
    if refusal.jurisdiction is not None:
        state.metrics.residency_refused(version, refusal.jurisdiction, route)
    else:
        state.metrics.error(version, refusal.kind)


def release(state: ServingState, admitted: Admitted) -> None:
    state.metrics.stream_closed(admitted.lease.info.version)
    admitted.lease.release()
    state.streams.close(admitted.live)  # last: whoever waits for the slot to free sees the stream fully counted


def new_session(
    state: ServingState,
    lease: EngineLease,
    language: str | None,
    codec: Codec = "pcm16",
    *,
    interim_results: bool = True,
) -> StreamSession:
    """A session whose frames are in ``codec`` (PCM16 or Opus packets, ``serving/stream_codec.py``); with
    ``interim_results`` False it decodes and sends finals only."""
    settings = state.settings.stream
    vad = state.vad.stream(settings.vad_threshold, settings.end_silence_ms, settings.speculative_final_ms)
    frames = frame_decoder(codec)
    return StreamSession(
        lease, vad, settings, state.inference, state.vad_pool, state.metrics, language, frames,
        interim_results=interim_results,
    )  # fmt: skip


def unsupported_language(lease: EngineLease, language: str | None) -> str | None:
    """Why ``language`` cannot be decoded by the leased engine, or None when it can (or is to be detected)."""
    languages = lease.engine.languages
    if language is None or language in languages:
        return None
    return f"language {language!r} is not supported by {lease.info.name}; use one of {', '.join(languages)}"


async def feed(
    session: StreamSession,
    next_frame: Callable[[], Awaitable[bytes | Flush | None]],
    settings: StreamSettings,
    metrics: ServingMetrics,
    how_to_end: str,
) -> StreamError | None:
    """Feed the session the frames ``next_frame`` returns (``FLUSH``: end the open utterance now) until it returns
    None (the client finished: None), or
    until the client has been held back too long (the reason to end with once the session has sent its finals).

    Audio is taken at most ``max_realtime_factor`` times real time: beyond it nothing is read and the transport's
    flow control holds the client back. ``next_frame`` raises to end the stream at once (a protocol error).
    """
    pacer = AudioPacer(settings.max_realtime_factor, settings.burst_s)
    while True:
        if (wait := pacer.delay()) > 0:
            metrics.stream_held_back(session.model_version, wait)
            await asyncio.sleep(wait)
        try:
            async with asyncio.timeout(settings.idle_timeout_s):
                frame = await next_frame()
        except TimeoutError:
            raise StreamError(
                CLOSE_POLICY_VIOLATION,
                "idle: no message received",
                f"no message for {settings.idle_timeout_s:g} s; send audio continuously and {how_to_end}",
            ) from None
        if frame is None:
            session.end_input()
            return None
        received = session.seconds_received
        if not await (session.flush() if frame is FLUSH else session.put_frame(frame)):
            session.end_input()
            timeout = settings.backpressure_timeout_s
            return StreamError(
                CLOSE_TRY_AGAIN_LATER,
                "server overloaded; retry later",
                f"the server fell behind: this stream's audio backlog stayed full for {timeout:g} s, so it stopped "
                "reading; every final of the audio it took was sent. Send audio no faster than real time, or retry "
                "later",
            )
        pacer.consume(session.seconds_received - received)


def first_of(group: BaseExceptionGroup, kind: type[E]) -> E:
    """The first ``kind`` in ``group``, however deep: the session's own task group nests its errors one level down."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            with contextlib.suppress(LookupError):
                return first_of(exc, kind)
        elif isinstance(exc, kind):
            return exc
    raise LookupError(f"no {kind} in {group!r}")


def error_kind(code: int) -> str:
    """The speech_errors_total kind of a stream that ended with ``code`` (a WebSocket close code)."""
    return {
        CLOSE_TRY_AGAIN_LATER: OVERLOADED,
        CLOSE_INTERNAL_ERROR: "engine",
        CLOSE_POLICY_VIOLATION: "idle",
    }.get(code, "bad_frame")
