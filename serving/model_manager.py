"""Finding, loading, warming and hot-swapping the served model.

With a bucket configured, models come from the regional store (checked against the jurisdiction at start-up);
without one, the bundled model is built into the local cache on first start. Either way a model serves traffic only
after it has loaded and decoded a warm-up clip, so a version that cannot run never replaces one that can. Loading
runs on the default thread pool, not the inference pool, so a reload does not stall live requests.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from serving.engine import AsrEngine
from serving.metrics import ServingMetrics
from serving.model_dir import SPEECH_CLIP, ModelError, cache_root
from serving.model_store import ModelStore, ModelStoreError
from serving.registry import EngineRegistry, ModelInfo
from serving.settings import Settings

log = logging.getLogger(__name__)


class ReloadInProgressError(RuntimeError):
    """Another reload is running; reloads are serialised so two versions never race to become current."""


def public_reason(exc: Exception) -> str:
    """Why a model could not be installed, in words fit for a client: no cache paths, bucket keys or SDK errors
    (those go to the log)."""
    if isinstance(exc, ModelStoreError):
        return exc.public
    if isinstance(exc, ModelError):
        return "the model failed verification or could not be loaded"
    return "the model could not be loaded"


@dataclass(frozen=True)
class ReloadResult:
    previous: ModelInfo | None
    current: ModelInfo

    @property
    def is_changed(self) -> bool:
        return self.previous is None or self.previous.version != self.current.version


class ModelManager:
    """Owns the engine registry and every way a model gets into it."""

    def __init__(self, settings: Settings, metrics: ServingMetrics) -> None:
        self._settings = settings.model
        self._metrics = metrics
        self.registry = EngineRegistry()
        self.store: ModelStore | None = None
        bucket = settings.model.bucket
        if bucket is not None and settings.region is not None:
            self.store = ModelStore(
                bucket,
                settings.region,
                cache_root(self._settings.cache_dir) / "s3" / bucket,
                topology=settings.topology,
                endpoint_url=settings.model.endpoint_url,
            )
        self.is_ready = False
        self.load_error: str | None = None
        self._reload_lock = asyncio.Lock()

    async def check_store(self) -> None:
        """Refuse a bucket outside this replica's jurisdiction before anything is pulled from it."""
        if self.store is not None:
            home = await asyncio.to_thread(self.store.check_jurisdiction)
            log.info("model bucket %s is in %s (%s)", self.store.bucket, home.aws_region, home.jurisdiction)

    async def load_initial(self) -> None:
        """Load the configured model and flip readiness; a failure is kept for /healthz instead of raised."""
        try:
            await self.reload(self._settings.version)
        except Exception as exc:  # the lifespan's background task: nothing above it would see the error
            # /healthz is open to anyone, so it says what failed, not where: the log has paths and keys.
            self.load_error = f"{public_reason(exc)}; the server log says why"
            log.exception("the model could not be loaded; /healthz reports failure until the pod restarts")
            return
        self.is_ready = True

    async def reload(self, version: str | None = None) -> ReloadResult:
        """Install ``version`` (None: the store's newest, or the bundled model) unless it is already current."""
        if self._reload_lock.locked():
            raise ReloadInProgressError("a model reload is already running; try again when it has finished")
        async with self._reload_lock:
            current = self.registry.current
            if self.store is not None:
                version = version or await asyncio.to_thread(self.store.latest_version, self._settings.name)
                if current is not None and current.version == version:
                    self._metrics.model_reload(version, "unchanged")
                    return ReloadResult(current, current)
            try:
                engine, info = await asyncio.to_thread(self._load, version)
            except Exception:
                # Labelled with the version still serving: a requested version that never loaded is not a label.
                self._metrics.model_reload(current.version if current else "none", "failed")
                raise
            previous = self.registry.swap(engine, info)
            if previous is not None and previous.version != info.version:
                self._metrics.model_unloaded(previous.name, previous.version)
            self._metrics.model_loaded(info.name, info.version)
            self._metrics.model_reload(info.version, "swapped")
            return ReloadResult(previous, info)

    async def poll(self) -> None:
        """Swap to the store's newest version whenever one appears; runs until cancelled."""
        interval = self._settings.poll_interval_s
        if self.store is None or interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                result = await self.reload()
            except ReloadInProgressError:
                continue
            except Exception:
                log.exception(
                    "polling %s for a new model version failed; keeping the current one",
                    self.store.url(self._settings.name),
                )
                continue
            if result.is_changed:
                log.info("polling found version %s; it now serves new requests", result.current.version)

    def close(self) -> None:
        self.registry.close()

    def _load(self, version: str | None) -> tuple[AsrEngine, ModelInfo]:
        from serving.whisper_onnx import load_engine

        if self.store is not None and version is not None:
            model_dir, source = (
                self.store.pull(self._settings.name, version),
                self.store.url(self._settings.name, version),
            )
        else:
            model_dir, source = self._bundled_dir(), "bundled"
        engine = load_engine(model_dir)
        try:
            speech, _ = sf.read(SPEECH_CLIP, dtype="float32")
            engine.transcribe(speech, "en")
            engine.transcribe(speech, "en", draft=True)  # streaming partials take the short-window path
        except Exception:
            engine.close()
            raise
        log.info("loaded and warmed %s %s from %s", engine.name, engine.version, source)
        return engine, ModelInfo(engine.name, engine.version, source)

    def _bundled_dir(self) -> Path:
        # Imported here: the exporter pulls in torch, which replicas serving from the store never need.
        from serving.export import ensure_bundled_model

        return ensure_bundled_model(self._settings.profile, self._settings.cache_dir)
