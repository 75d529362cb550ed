"""The batch transcription pipeline every upload route runs: ``POST /v1/asr`` and the OpenAI-compatible
``POST /v1/audio/transcriptions`` differ only in how a request names its audio and options, and how the answer is
shaped.

Admission comes first: a request takes its queue slot and a model reference before its upload is read, so a full
server refuses with 503 at once instead of after reading and decoding megabytes it cannot serve. Then the body is
read (bounded in size and time by ``serving/gate.py``), turned into a :class:`BatchJob` by the route, decoded to
16 kHz on a decoder thread, and transcribed on an inference thread; every refusal is counted in the metrics.
The gRPC ``Recognize`` (``serving/grpc_api/``) runs the same decode and engine steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

from serving import audio
from serving.engine import SAMPLE_RATE, DecodeOptions, Transcription
from serving.registry import EngineLease, RegistryClosedError
from serving.state import ServingState

log = logging.getLogger(__name__)
RETRY = {"Retry-After": "1"}


@dataclass(frozen=True)
class BatchJob:
    """What a route read from its request: the audio container (or raw PCM16 at ``sample_rate``) and options."""

    body: bytes
    sample_rate: int | None = None
    language: str | None = None
    options: DecodeOptions = field(default_factory=DecodeOptions)


@dataclass(frozen=True)
class BatchResult:
    transcription: Transcription
    model: str  # the name of the model that served it
    audio_seconds: float
    timings: dict[str, float]  # seconds per stage, rounded: audio decode, engine stages, engine, total


# A route's reader: the request body and the engine that will serve it in, the job out; it raises HTTPException
# (4xx) for a malformed request.
JobReader = Callable[[bytes, EngineLease], Awaitable[BatchJob]]


async def transcribe_request(request: Request, state: ServingState, read_job: JobReader) -> BatchResult:
    """Admit, read, decode and transcribe one batch request; every failure is an ``HTTPException`` a client can
    act on, and the server's slots and model references are released whatever happens."""
    started = time.perf_counter()
    if state.is_draining:
        state.metrics.error(state.current_version(), "shutting_down")
        raise HTTPException(503, "the server is shutting down; retry (another replica will answer)", RETRY)
    if not state.batch_slots.try_enter():
        state.metrics.error(state.current_version(), "overloaded")
        raise HTTPException(503, "the server is at its limit of queued transcriptions; retry shortly", RETRY)
    try:
        with _acquire(state) as lease:
            request.state.model_version = lease.info.version
            job = await read_job(await _upload(request, state, lease), lease)
            clip = await decode_upload(state, job.body, job.sample_rate)
            decoded = time.perf_counter()
            result, engine_seconds = await run_engine(state, lease, clip, job.language, job.options)
    finally:
        state.batch_slots.leave()
    if state.shadow is not None:  # off the response path: it only schedules, or skips, a comparison
        state.shadow.offer(clip, job.language, result, engine_seconds)
    timings = {"audio_decode": decoded - started, **result.timings, "engine": engine_seconds}
    timings["total"] = time.perf_counter() - started
    return BatchResult(
        transcription=result,
        model=lease.info.name,
        audio_seconds=round(len(clip) / SAMPLE_RATE, 3),
        timings={stage: round(seconds, 4) for stage, seconds in timings.items()},
    )


def _acquire(state: ServingState) -> EngineLease:
    if not state.models.is_ready:
        state.metrics.error("none", "not_ready")
        raise HTTPException(503, "the model is still loading; retry shortly", {"Retry-After": "2"})
    try:
        return state.models.asr.registry.acquire()
    except RegistryClosedError as exc:
        raise HTTPException(503, str(exc), {"Retry-After": "2"}) from exc


async def _upload(request: Request, state: ServingState, lease: EngineLease) -> bytes:
    """The request body; the gate bounds its size and how long it may take (``serving/gate.py``)."""
    try:
        return await request.body()
    except ClientDisconnect:
        state.metrics.error(lease.info.version, "client_abort")
        # 499, as nginx logs it: there is nobody left to read the answer, but the metrics and access log are right.
        raise HTTPException(499, "the client closed the connection before its upload was complete") from None


async def decode_upload(state: ServingState, body: bytes, sample_rate: int | None) -> np.ndarray:
    """The clip at 16 kHz, decoded on a decoder thread (bounded in number), never on the event loop."""
    loop = asyncio.get_running_loop()
    max_audio_s = state.settings.limits.max_audio_s
    try:
        return await loop.run_in_executor(
            state.decode_pool, partial(audio.decode, body, sample_rate=sample_rate, max_audio_s=max_audio_s)
        )
    except audio.AudioError as exc:
        state.metrics.error(state.current_version(), "bad_audio")
        raise HTTPException(exc.status_code, str(exc)) from exc


async def run_engine(
    state: ServingState,
    lease: EngineLease,
    clip: np.ndarray,
    language: str | None,
    options: DecodeOptions | None = None,
) -> tuple[Transcription, float]:
    """``clip`` transcribed on an inference thread, with the engine's seconds; counted in the metrics."""
    queued = time.perf_counter()
    version = lease.info.version
    try:
        result = await state.inference.run(lease.engine.transcribe, clip, language, options=options)
    except ValueError as exc:  # the engine's verdict on the input, e.g. a language this model lacks
        state.metrics.error(version, "bad_audio")
        raise HTTPException(422, str(exc)) from exc
    except Exception as exc:
        log.exception("transcription failed")
        state.metrics.error(version, "engine")
        raise HTTPException(500, "transcription failed; the server logged why") from exc
    engine_seconds = time.perf_counter() - queued
    state.metrics.inference(version, "batch", len(clip) / SAMPLE_RATE, engine_seconds)
    return result, engine_seconds
