"""The batch transcription pipeline every upload route runs: ``POST /v1/asr`` and the OpenAI-compatible
``POST /v1/audio/transcriptions`` differ only in how a request names its audio and options, and how the answer is
shaped.

Admission, reading the body and decoding it are the steps every upload route shares (``serving/uploads.py``, the
speaker routes' too). A request takes its queue slot and a model reference before its upload is read; the body,
turned into a :class:`BatchJob` by the route, is decoded to 16 kHz on a decoder thread, routed to the model of its
language where the server has one (``speech:model.languages``), and transcribed on an inference thread; every
refusal is counted in the metrics. The gRPC ``Recognize`` (``serving/grpc_api/``) runs the same engine step.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import numpy as np
from fastapi import HTTPException, Request

from serving.engine import SAMPLE_RATE, DecodeOptions, Transcription
from serving.model_manager import ModelManager
from serving.registry import EngineLease, RegistryClosedError
from serving.state import ServingState
from serving.uploads import admitted, decode_body, read_body

log = logging.getLogger(__name__)


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
    with admitted(state), acquire(state, state.models.asr) as lease:
        request.state.model_version = lease.info.version
        job = await read_job(await read_body(request, state, lease.info.version), lease)
        clip = await decode_body(state, job.body, job.sample_rate, lease.info.version)
        decoded = time.perf_counter()
        specialised, language = await _language_model(state, lease, clip, job.language)
        routed = time.perf_counter()
        with specialised or contextlib.nullcontext(lease) as chosen:
            request.state.model_version = chosen.info.version
            result, engine_seconds = await run_engine(state, chosen, clip, language, job.options)
    # The shadow candidate is a version of the multilingual model: compared only with what that model answered.
    if state.shadow is not None and chosen.info.name == state.models.asr.spec.name:
        # Off the response path: schedules or skips.
        state.shadow.offer(clip, language, result, engine_seconds, served_options(state, job.options))
    timings = {"audio_decode": decoded - started, **result.timings, "engine": engine_seconds}
    if state.models.languages:
        timings["language_routing"] = routed - decoded
    timings["total"] = time.perf_counter() - started
    return BatchResult(
        transcription=result,
        model=chosen.info.name,
        audio_seconds=round(len(clip) / SAMPLE_RATE, 3),
        timings={stage: round(seconds, 4) for stage, seconds in timings.items()},
    )


def acquire(state: ServingState, manager: ModelManager) -> EngineLease:
    """A reference on ``manager``'s current engine; 503 while models load or the registry is closing."""
    if not state.models.is_ready:
        state.metrics.error("none", "not_ready")
        raise HTTPException(503, "the model is still loading; retry shortly", {"Retry-After": "2"})
    try:
        return manager.registry.acquire()
    except RegistryClosedError as exc:
        raise HTTPException(503, str(exc), {"Retry-After": "2"}) from exc


async def _language_model(
    state: ServingState, lease: EngineLease, clip: np.ndarray, language: str | None
) -> tuple[EngineLease | None, str | None]:
    """A lease on the model specialised for the clip's language, when this server has one, and the language.

    Without ``language`` the multilingual model (``lease``) detects it first, but only when some language has a
    model of its own: one encoder pass, repaid when an English-only model then decodes English faster and better.
    """
    if not state.models.languages:
        return None, language
    if language is None:
        try:
            language = await state.inference.run(lease.engine.detect_language, clip)
        except ValueError as exc:
            state.metrics.error(lease.info.version, "bad_audio")
            raise HTTPException(422, str(exc)) from exc
    manager = state.models.asr_for(language)
    return (None if manager is state.models.asr else acquire(state, manager)), language


def served_options(state: ServingState, options: DecodeOptions | None) -> DecodeOptions:
    """A route's options (prompt, temperature) with the server's beam and window settings: how batch requests are
    decoded, and how the shadow candidate decodes the same request to compare like with like."""
    model = state.settings.model
    return replace(options or DecodeOptions(), beam_size=model.beam_size, window_pad_s=model.window_pad_s)


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
    options = served_options(state, options)
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
    state.metrics.inference(lease.info.name, version, "batch", len(clip) / SAMPLE_RATE, engine_seconds)
    return result, engine_seconds
