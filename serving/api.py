"""HTTP routes: batch transcription, model listing and reload, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from contract.service import HEALTH_PATH, METRICS_PATH, READINESS_PATH
from serving import audio
from serving.auth import UNAUTHORIZED_DETAIL
from serving.engine import SAMPLE_RATE
from serving.metrics import CONTENT_TYPE
from serving.model_dir import ModelError
from serving.model_manager import ReloadInProgressError
from serving.model_store import ModelStoreError
from serving.registry import EngineLease, ModelInfo, RegistryClosedError
from serving.residency import MisdirectedError
from serving.state import ServingState, serving_state

State = Annotated[ServingState, Depends(serving_state)]
LANGUAGE_PATTERN = r"^[a-z]{2,3}$"


def require_api_key(request: Request, state: State) -> None:
    """A valid key whose tenant may be served by this replica; runs before the route reads any of the body."""
    if not state.auth.is_allowed(request.headers):
        state.metrics.error(state.current_version(), "unauthorized")
        raise HTTPException(401, UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": "Bearer"})
    refusal = state.residency.refusal(state.auth.home_jurisdiction(request.headers))
    if refusal is not None:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        state.metrics.residency_refused(state.current_version(), refusal.jurisdiction, route)
        raise MisdirectedError(refusal)


Authorized = Depends(require_api_key)
probes = APIRouter(tags=["operations"])
v1 = APIRouter(prefix="/v1", dependencies=[Authorized], tags=["asr"])


@probes.get(HEALTH_PATH)
def healthz(state: State) -> JSONResponse:
    """Liveness: the process serves HTTP; fails only when the model can never load (restart the pod)."""
    if state.models.load_error is not None:
        return JSONResponse({"status": "failed", "detail": state.models.load_error}, status_code=503)
    return JSONResponse({"status": "ok"})


@probes.get(READINESS_PATH)
def readyz(state: State) -> JSONResponse:
    """Readiness: a model is loaded and has decoded its warm-up clip."""
    current = state.models.registry.current
    if not state.models.is_ready or current is None:
        status = "failed" if state.models.load_error else "loading"
        return JSONResponse({"status": status, "detail": state.models.load_error}, status_code=503)
    return JSONResponse({"status": "ready", "model": current.name, "model_version": current.version})


@probes.get(METRICS_PATH)
def metrics(state: State) -> Response:
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)


class SegmentResponse(BaseModel):
    start: float = Field(description="seconds from the start of the audio")
    end: float
    text: str


class TranscriptionResponse(BaseModel):
    text: str
    language: str
    model: str
    model_version: str
    audio_seconds: float
    segments: list[SegmentResponse] = Field(description="the text in order, with start and end times")
    timings: dict[str, float] = Field(description="seconds per stage: audio decode, queue, engine stages, total")


@v1.post("/asr", response_model=TranscriptionResponse)
async def transcribe(
    request: Request,
    state: State,
    sample_rate: Annotated[
        int | None, Query(description="set for headerless little-endian mono PCM16; leave out for WAV, Ogg, FLAC")
    ] = None,
    language: Annotated[
        str | None, Query(pattern=LANGUAGE_PATTERN, description="ISO 639-1 code; default: detect")
    ] = None,
) -> TranscriptionResponse:
    """Transcribe one clip (at most ``SPEECH_LIMITS__MAX_AUDIO_S`` seconds) sent as the request body."""
    started = time.perf_counter()
    limits = state.settings.limits
    body = await _read_body(request, state, limits.max_upload_bytes)
    try:
        clip = audio.decode(body, sample_rate=sample_rate, max_audio_s=limits.max_audio_s)
    except audio.AudioError as exc:
        state.metrics.error(state.current_version(), "bad_audio")
        raise HTTPException(exc.status_code, str(exc)) from exc
    decoded = time.perf_counter()
    if not state.batch_slots.try_enter():
        state.metrics.error(state.current_version(), "overloaded")
        raise HTTPException(
            503, "the server is at its limit of queued transcriptions; retry shortly", {"Retry-After": "1"}
        )
    try:
        lease = _acquire(state)
        with lease:
            request.state.model_version = lease.info.version
            queued = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(state.inference_pool, lease.engine.transcribe, clip, language)
            except ValueError as exc:  # the engine's verdict on the input, e.g. a language this model lacks
                state.metrics.error(lease.info.version, "bad_audio")
                raise HTTPException(422, str(exc)) from exc
            except Exception as exc:
                state.metrics.error(lease.info.version, "engine")
                raise HTTPException(500, f"transcription failed: {type(exc).__name__}") from exc
            engine_seconds = time.perf_counter() - queued
            state.metrics.inference(lease.info.version, "batch", len(clip) / SAMPLE_RATE, engine_seconds)
    finally:
        state.batch_slots.leave()
    timings = {"audio_decode": decoded - started, **result.timings, "engine": engine_seconds}
    timings["total"] = time.perf_counter() - started
    return TranscriptionResponse(
        text=result.text,
        language=result.language,
        model=lease.info.name,
        model_version=result.model_version,
        audio_seconds=round(len(clip) / SAMPLE_RATE, 3),
        segments=[SegmentResponse(start=s.start, end=s.end, text=s.text) for s in result.segments],
        timings={stage: round(seconds, 4) for stage, seconds in timings.items()},
    )


@v1.get("/models")
async def list_models(state: State) -> dict:
    """The version serving new work, older ones still draining live streams, and what the store offers."""
    registry, store = state.models.registry, state.models.store
    current = registry.current
    loaded = [
        {"name": info.name, "version": info.version, "source": info.source, "holders": holders}
        for info, holders in registry.loaded()
    ]
    body: dict = {"current": _info(current), "loaded": loaded, "store": None}
    if store is not None:
        name = state.settings.model.name
        try:
            versions = await asyncio.to_thread(store.versions, name)
        except ModelStoreError as exc:
            versions, body["store_error"] = [], str(exc)
        body["store"] = {"bucket": store.bucket, "url": store.url(name), "versions": versions}
    return body


class ReloadRequest(BaseModel):
    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$", description="default: the newest")


@v1.post("/models/reload")
async def reload_model(state: State, request: Annotated[ReloadRequest | None, Body()] = None) -> dict:
    """Pull, verify, load and warm a version, then swap it in; live streams finish on the version they started on."""
    if state.models.store is None:
        raise HTTPException(
            409, "no model store is configured (SPEECH_MODEL__BUCKET); the bundled model cannot be reloaded"
        )
    try:
        result = await state.models.reload(request.version if request else None)
    except ReloadInProgressError as exc:
        raise HTTPException(409, str(exc)) from exc
    except (ModelStoreError, ModelError) as exc:
        state.metrics.error(state.current_version(), "model_store")
        raise HTTPException(502, f"reload failed, still serving the previous version: {exc}") from exc
    return {"changed": result.is_changed, "previous": _info(result.previous), "current": _info(result.current)}


def _acquire(state: ServingState) -> EngineLease:
    if not state.models.is_ready:
        state.metrics.error("none", "not_ready")
        raise HTTPException(503, "the model is still loading; retry shortly", {"Retry-After": "2"})
    try:
        return state.models.registry.acquire()
    except RegistryClosedError as exc:
        raise HTTPException(503, str(exc), {"Retry-After": "2"}) from exc


async def _read_body(request: Request, state: ServingState, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (before reading it when declared)."""
    too_big = HTTPException(413, f"the upload exceeds {limit} bytes (SPEECH_LIMITS__MAX_UPLOAD_BYTES)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        state.metrics.error(state.current_version(), "bad_audio")
        if not declared.isdigit():
            raise HTTPException(400, f"Content-Length {declared!r} is not a byte count")
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            state.metrics.error(state.current_version(), "bad_audio")
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _info(info: ModelInfo | None) -> dict | None:
    return None if info is None else {"name": info.name, "version": info.version, "source": info.source}
