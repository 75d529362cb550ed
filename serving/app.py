"""The app factory: ``python -m serving`` (or ``uvicorn --factory serving.app:create_app``, without the drain).

Nothing happens at import time. Each app owns its settings, metrics registry, thread pools and model registry on
``app.state.serving``, so tests build apps with their own settings and never patch a module. The gRPC API
(``serving/grpc_api/``, ``app.state.grpc``; None when ``SPEECH_GRPC__ENABLED=false``) runs on the same state and
event loop, started and stopped by the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from starlette.exceptions import HTTPException

from serving import api, openai_api, stream_api, tts_api, web
from serving.auth import ApiKeyVerifier
from serving.cpu import single_threaded_blas
from serving.gate import RegionHeader, RequestGate, RequestMetrics, RouteTemplates
from serving.grpc_api.server import GrpcServer
from serving.inference import InferencePool
from serving.metrics import ServingMetrics
from serving.model_manager import ModelCatalog
from serving.openai_errors import on_http_exception
from serving.residency import ResidencyGuard
from serving.settings import Settings, load_settings
from serving.shadow import ShadowModel
from serving.shutdown import UVICORN_CLOSE_S
from serving.speakers import api as speaker_api
from serving.speakers.service import EMBEDDER_NAME, SpeakerService
from serving.state import BatchSlots, ServingState
from serving.stream_control import StreamRegistry
from serving.tts_cache import TtsCache
from serving.vad import SileroVad

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    single_threaded_blas()  # here, before any model loads on a thread (serving/cpu.py)
    metrics = ServingMetrics(settings.region_label)
    keys = settings.auth.keys()
    homes = {digest: code for digest, code in keys.items() if code is not None}
    state = ServingState(
        settings=settings,
        metrics=metrics,
        auth=ApiKeyVerifier(frozenset(keys), homes),
        admin_auth=ApiKeyVerifier(settings.auth.admin_hashes()),
        residency=ResidencyGuard.from_settings(settings, set(homes.values())),
        models=ModelCatalog(settings, metrics),
        speakers=SpeakerService(settings.speakers),
        vad=SileroVad(),
        streams=StreamRegistry(settings.stream.max_sessions),
        batch_slots=BatchSlots(settings.inference_threads + settings.limits.max_queued_requests, metrics),
        tts_cache=TtsCache(settings.cache, metrics),
        inference=InferencePool(settings.inference_threads),
        decode_pool=ThreadPoolExecutor(settings.limits.max_concurrent_decodes, thread_name_prefix="decode"),
        # One thread: Silero takes well under a millisecond a window, and streams must not compete with Whisper.
        vad_pool=ThreadPoolExecutor(1, thread_name_prefix="vad"),
    )
    if settings.shadow.version is not None:
        state.shadow = ShadowModel(settings.shadow, state.models.asr, state.inference, metrics)
    app = FastAPI(title="speech serving", version="1", lifespan=_lifespan)
    app.state.serving = state
    app.state.grpc = GrpcServer(state) if settings.grpc.enabled else None
    metrics.model_loaded("speaker", EMBEDDER_NAME, state.speakers.version)
    # OpenAI's clients read errors from {"error": {...}}; every other route keeps {"detail": ...}.
    app.add_exception_handler(HTTPException, on_http_exception)
    routers = (
        api.probes,
        api.v1,
        api.admin,
        openai_api.router,
        stream_api.router,
        tts_api.router,
        speaker_api.router,
        web.router,
    )
    for router in routers:
        app.include_router(router)
    routes = RouteTemplates.of(routers)
    # Added innermost first: metrics see every answer, including the gate's refusals.
    app.add_middleware(
        RequestGate,
        state=state,
        admin_paths=api.ADMIN_PATHS,
        upload_paths=api.UPLOAD_PATHS | openai_api.UPLOAD_PATHS | speaker_api.UPLOAD_PATHS,
        routes=routes,
    )
    app.add_middleware(RequestMetrics, state=state, routes=routes)
    app.add_middleware(RegionHeader, region=settings.region_label)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Check the store (a refused bucket stops start-up), then load and warm every model in the background.

    Loading in the background keeps /healthz answering while a first start pulls large models from the store,
    so a liveness probe does not kill the pod that is doing exactly what it should.
    """
    state: ServingState = app.state.serving
    grpc_server: GrpcServer | None = app.state.grpc
    await state.models.check_store()
    if grpc_server is not None:
        await grpc_server.start()
    # The shadow candidate loads after readiness: users never wait for it.
    when_ready = state.shadow.load if state.shadow is not None else None
    background = asyncio.create_task(state.models.load_then_poll(when_ready), name="model-load")
    try:
        yield
    finally:
        background.cancel()
        await asyncio.gather(background, return_exceptions=True)
        if grpc_server is not None:
            # After the drain (serving/shutdown.py): what is left are calls that outlived its grace.
            await grpc_server.stop(UVICORN_CLOSE_S)
        await state.tts_cache.close()
        await state.speakers.close()
        state.close()
