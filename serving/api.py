"""HTTP routes: batch transcription, model listing and reload, health, readiness and metrics.

Authentication, body-size limits and upload timeouts are applied before a route runs (``serving/gate.py``), so
the handlers here only ever see requests that may proceed and bodies that stay within bounds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from contract.service import BATCH_PATH, HEALTH_PATH, METRICS_PATH, READINESS_PATH
from serving.batch import BatchJob, transcribe_request
from serving.metrics import CONTENT_TYPE
from serving.model_dir import ModelError
from serving.model_manager import ModelManager, ReloadInProgressError, public_reason
from serving.model_store import ModelStoreError
from serving.names import ModelName, ModelVersion
from serving.registry import EngineLease, ModelInfo
from serving.state import ServingState, serving_state

log = logging.getLogger(__name__)
State = Annotated[ServingState, Depends(serving_state)]
LANGUAGE_PATTERN = r"^[a-z]{2,3}$"
UPLOAD_PATHS = frozenset({BATCH_PATH})
ADMIN_PATHS = frozenset({"/v1/models/reload"})

probes = APIRouter(tags=["operations"])
v1 = APIRouter(prefix="/v1", tags=["asr"])
admin = APIRouter(prefix="/v1", tags=["admin"])


@probes.get(HEALTH_PATH)
def healthz(state: State) -> JSONResponse:
    """Liveness: the process serves HTTP; fails only when the model can never load (restart the pod)."""
    if state.models.load_error is not None:
        return JSONResponse({"status": "failed", "detail": state.models.load_error}, status_code=503)
    return JSONResponse({"status": "ok"})


@probes.get(READINESS_PATH)
def readyz(state: State) -> JSONResponse:
    """Readiness: every served model is loaded and has done its warm-up run, and the server is not shutting down.

    ``model`` and ``model_version`` name the multilingual ASR model; ``models`` lists every served model with its
    kind; ``languages``, when the server has models specialised for languages, which serves which."""
    if state.is_draining:
        detail = "the server is shutting down; send new work to another replica"
        return JSONResponse({"status": "draining", "detail": detail}, status_code=503)
    current = state.models.asr.registry.current
    if not state.models.is_ready or current is None:
        status = "failed" if state.models.load_error else "loading"
        return JSONResponse({"status": status, "detail": state.models.load_error}, status_code=503)
    served = [m.registry.current for m in state.models.managers.values()]
    models = [{"kind": info.kind, "name": info.name, "version": info.version} for info in served if info is not None]
    body: dict[str, object] = {
        "status": "ready",
        "model": current.name,
        "model_version": current.version,
        "models": models,
    }
    if state.models.languages:
        body["languages"] = {language: m.spec.name for language, m in state.models.languages.items()}
    return JSONResponse({**body, "region": state.settings.region_label})


@probes.get(METRICS_PATH)
def metrics(state: State) -> Response:
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)


class SegmentResponse(BaseModel):
    start: float = Field(description="seconds from the start of the audio")
    end: float
    text: str


class TranscriptionResponse(BaseModel):
    text: str = Field(description="empty when the audio holds no speech (silence or noise)")
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
    """Transcribe one recording (at most ``SPEECH_LIMITS__MAX_AUDIO_S`` seconds) sent as the request body."""

    async def job_of(body: bytes, _: EngineLease) -> BatchJob:
        return BatchJob(body, sample_rate=sample_rate, language=language)

    done = await transcribe_request(request, state, job_of)
    result = done.transcription
    return TranscriptionResponse(
        text=result.text,
        language=result.language,
        model=done.model,
        model_version=result.model_version,
        audio_seconds=done.audio_seconds,
        segments=[SegmentResponse(start=s.start, end=s.end, text=s.text) for s in result.segments],
        timings=done.timings,
    )


@v1.get("/models")
async def list_models(state: State) -> dict:
    """Every served model: the version serving new work, older ones still draining live work, and what the store
    offers. The top-level keys describe the multilingual ASR model; ``models`` lists each model of every kind the
    same way; ``languages`` names the ASR model specialised for each language that has one."""
    listings = [await _listing(state, manager) for manager in state.models.managers.values()]
    (asr,) = (
        listing for listing in listings if (listing["kind"], listing["name"]) == ("asr", state.models.asr.spec.name)
    )
    languages = {language: m.spec.name for language, m in state.models.languages.items()}
    return {**asr, "models": listings, "languages": languages}


async def _listing(state: ServingState, manager: ModelManager) -> dict:
    registry, store, name = manager.registry, manager.store, manager.spec.name
    loaded = [
        {"name": info.name, "version": info.version, "source": info.source, "holders": holders}
        for info, holders in registry.loaded()
    ]
    body: dict = {"kind": manager.spec.kind, "name": name, "current": _info(registry.current), "loaded": loaded}
    body["store"] = None
    if store is not None:
        try:
            versions = await asyncio.to_thread(store.versions, name)
        except ModelStoreError as exc:
            log.warning("listing the model store failed: %s", exc)
            versions, body["store_error"] = [], exc.public
        body["store"] = {"bucket": store.bucket, "url": store.url(name), "versions": versions}
    return body


class ReloadRequest(BaseModel):
    version: ModelVersion | None = Field(default=None, description="default: the newest")
    model: ModelName | None = Field(default=None, description="which served model (GET /v1/models); default: ASR")


@admin.post("/models/reload")
async def reload_model(state: State, request: Annotated[ReloadRequest | None, Body()] = None) -> dict:
    """Pull, verify, load and warm a version, then swap it in; live streams finish on the version they started on.

    An administrative route: it needs an admin key (``SPEECH_AUTH__ADMIN_KEY_HASHES``) and is off without one.
    """
    if state.models.store is None:
        raise HTTPException(
            409, "no model store is configured (SPEECH_MODEL__BUCKET); the bundled model cannot be reloaded"
        )
    requested = request.version if request else None
    manager = _manager_named(state, request.model if request else None)
    try:
        result = await manager.reload(requested)
    except ReloadInProgressError as exc:
        raise HTTPException(409, str(exc)) from exc
    except (ModelStoreError, ModelError) as exc:
        log.warning("reload of %s version %s failed: %s", manager.spec.name, requested or "(newest)", exc)
        state.metrics.error(state.current_version(), "model_store")
        which = f"version {requested}" if requested else "the newest version"
        raise HTTPException(
            502,
            f"reload of {which} failed: {public_reason(exc)}; still serving version {manager.current_version}",
        ) from exc
    return {"changed": result.is_changed, "previous": _info(result.previous), "current": _info(result.current)}


def _manager_named(state: ServingState, name: str | None) -> ModelManager:
    if name is None:
        return state.models.asr
    found = [manager for (_, served), manager in state.models.managers.items() if served == name]
    if not found:
        served = ", ".join(sorted(served for _, served in state.models.managers))
        raise HTTPException(404, f"model {name!r} is not served here; served models: {served}")
    return found[0]


def _info(info: ModelInfo | None) -> dict | None:
    return None if info is None else {"name": info.name, "version": info.version, "source": info.source}
