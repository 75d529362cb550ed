"""The app factory: ``uvicorn --factory serving.app:create_app`` (or ``python -m serving``).

Nothing happens at import time. Each app owns its settings, metrics registry, thread pool and model registry on
``app.state.serving``, so tests build apps with their own settings and never patch a module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from contract.service import HEALTH_PATH, METRICS_PATH, READINESS_PATH
from serving import api, stream_api
from serving.auth import ApiKeyVerifier
from serving.metrics import ServingMetrics
from serving.model_manager import ModelManager
from serving.residency import MISDIRECTED, MisdirectedError, ResidencyGuard
from serving.settings import Settings, load_settings
from serving.state import BatchSlots, ServingState
from serving.streaming import StreamLimiter
from serving.vad import SileroVad

log = logging.getLogger(__name__)
# Probes and scrapes are frequent and uninteresting; counting them would drown the traffic that matters.
_UNMEASURED_PATHS = frozenset({HEALTH_PATH, READINESS_PATH, METRICS_PATH})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    metrics = ServingMetrics(settings.region_label)
    keys = settings.auth.keys()
    homes = {digest: code for digest, code in keys.items() if code is not None}
    state = ServingState(
        settings=settings,
        metrics=metrics,
        auth=ApiKeyVerifier(frozenset(keys), homes),
        residency=ResidencyGuard.from_settings(settings, set(homes.values())),
        models=ModelManager(settings, metrics),
        vad=SileroVad(),
        streams=StreamLimiter(settings.stream.max_sessions),
        batch_slots=BatchSlots(settings.inference_threads + settings.limits.max_queued_requests, metrics),
        inference_pool=ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference"),
    )
    app = FastAPI(title="speech serving", version="1", lifespan=_lifespan)
    app.state.serving = state
    app.include_router(api.probes)
    app.include_router(api.v1)
    app.include_router(stream_api.router)
    app.middleware("http")(_measure_requests)
    app.add_exception_handler(MisdirectedError, _misdirected)
    return app


async def _misdirected(request: Request, exc: Exception) -> Response:
    """421 with the tenant's regional endpoints, so a client (or a person) can retry where its data may go."""
    refusal = exc.refusal if isinstance(exc, MisdirectedError) else None
    if refusal is None:
        raise exc
    return JSONResponse(refusal.body(), status_code=MISDIRECTED)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Check the store (a refused bucket stops start-up), then load and warm in the background.

    Loading in the background keeps /healthz answering while a first start builds the bundled model (minutes),
    so a liveness probe does not kill the pod that is doing exactly what it should.
    """
    state: ServingState = app.state.serving
    await state.models.check_store()
    background = asyncio.create_task(_load_then_poll(state), name="model-load")
    try:
        yield
    finally:
        background.cancel()
        await asyncio.gather(background, return_exceptions=True)
        state.models.close()
        state.inference_pool.shutdown(wait=False, cancel_futures=True)


async def _load_then_poll(state: ServingState) -> None:
    await state.models.load_initial()
    if state.models.is_ready:
        await state.models.poll()


async def _measure_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    if request.url.path not in _UNMEASURED_PATHS:
        state: ServingState = request.app.state.serving
        route = getattr(request.scope.get("route"), "path", "unmatched")
        version = getattr(request.state, "model_version", None) or state.current_version()
        state.metrics.request(version, route, response.status_code, time.perf_counter() - started)
    return response
