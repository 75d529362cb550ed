"""Finding, loading, warming and hot-swapping every served model: one manager per configured model.

With a bucket configured, models come from the regional store (checked against the jurisdiction at start-up);
without one, each model's bundled build is loaded from the local cache, where ``scripts/setup.sh`` put it (the
server never builds one: that needs torch, which the image leaves out). Either way a model serves traffic only after
it has loaded and done one real run, so a version that cannot run never replaces one that can. Loading runs on the
default thread pool, not the inference pool, so a reload does not stall live requests. What a model *is* (Whisper,
a voice) is its kind's business (``serving/engine_kinds.py``); this module only moves versions in and out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from serving.engine import Engine
from serving.engine_kinds import ENGINE_KINDS, EngineKind
from serving.metrics import ServingMetrics
from serving.model_dir import ModelError, cache_root
from serving.model_store import ModelStore, ModelStoreError
from serving.registry import EngineRegistry, ModelInfo
from serving.settings import ModelSpec, Settings

log = logging.getLogger(__name__)


class ReloadInProgressError(RuntimeError):
    """Another reload is running; reloads are serialised so two versions never race to become current."""


class ModelNotBuiltError(ModelError):
    """No model store is configured and the bundled model was never built into the local cache."""

    def __init__(self, message: str, public: str) -> None:
        super().__init__(message)
        self.public = public


def public_reason(exc: Exception) -> str:
    """Why a model could not be installed, in words fit for a client: no cache paths, bucket keys or SDK errors
    (those go to the log)."""
    if isinstance(exc, ModelStoreError | ModelNotBuiltError):
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
    """Owns the engine registry of one configured model and every way a version of it gets in."""

    def __init__(
        self,
        spec: ModelSpec,
        kind: EngineKind,
        metrics: ServingMetrics,
        *,
        store: ModelStore | None,
        cache_dir: Path | None,
        poll_interval_s: float | None,
    ) -> None:
        self.spec = spec
        self.kind = kind
        self.store = store
        self._metrics = metrics
        self._cache_dir = cache_dir
        self._poll_interval_s = poll_interval_s
        self.registry: EngineRegistry[Engine] = EngineRegistry()
        self.is_ready = False
        self.load_error: str | None = None
        self._reload_lock = asyncio.Lock()

    @property
    def current_version(self) -> str:
        current = self.registry.current
        return current.version if current else "none"

    async def load_initial(self) -> None:
        """Load the configured version and flip readiness; a failure is kept for /healthz instead of raised."""
        try:
            await self.reload(self.spec.version)
        except Exception as exc:  # the lifespan's background task: nothing above it would see the error
            # /healthz is open to anyone, so it says what failed, not where: the log has paths and keys.
            self.load_error = f"{public_reason(exc)}; the server log says why"
            log.exception(
                "the %s model %s could not be loaded; /healthz reports failure until the pod restarts",
                self.spec.kind,
                self.spec.name,
            )
            return
        self.is_ready = True

    async def reload(self, version: str | None = None) -> ReloadResult:
        """Install ``version`` (None: the store's newest, or the bundled model) unless it is already current."""
        if self._reload_lock.locked():
            raise ReloadInProgressError("a model reload is already running; try again when it has finished")
        async with self._reload_lock:
            current = self.registry.current
            if self.store is not None:
                version = version or await asyncio.to_thread(self.store.latest_version, self.spec.name)
                if current is not None and current.version == version:
                    self._reloaded(version, "unchanged")
                    return ReloadResult(current, current)
            try:
                engine, info = await asyncio.to_thread(self._load, version)
            except Exception:
                # Labelled with the version still serving: a requested version that never loaded is not a label.
                self._reloaded(self.current_version, "failed")
                raise
            previous = self.registry.swap(engine, info)
            if previous is not None and previous.version != info.version:
                self._metrics.model_unloaded(info.kind, previous.name, previous.version)
            self._metrics.model_loaded(info.kind, info.name, info.version)
            self._reloaded(info.version, "swapped")
            return ReloadResult(previous, info)

    async def poll(self) -> None:
        """Swap to the store's newest version whenever one appears; runs until cancelled."""
        interval = self._poll_interval_s
        if self.store is None or interval is None or self.spec.version is not None:
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
                    self.store.url(self.spec.name),
                )
                continue
            if result.is_changed:
                log.info("polling found version %s; it now serves new requests", result.current.version)

    async def load_detached(self, version: str, profile: str | None = None) -> tuple[Engine, ModelInfo]:
        """Pull, verify, load and warm ``version`` as the served one would be, without installing it.

        Without a store, the bundled build of ``profile`` (default: the served one's) stands in for the version.
        """
        return await asyncio.to_thread(self._load, version, profile)

    def close(self) -> None:
        self.registry.close()

    def _reloaded(self, version: str, outcome: str) -> None:
        self._metrics.model_reload(self.spec.kind, self.spec.name, version, outcome)

    def _load(self, version: str | None, profile: str | None = None) -> tuple[Engine, ModelInfo]:
        if self.store is not None and version is not None:
            model_dir, source = self.store.pull(self.spec.name, version), self.store.url(self.spec.name, version)
        else:
            model_dir, source = self._bundled_dir(profile or self.spec.profile), "bundled"
        engine = self.kind.load(model_dir, self.spec)
        try:
            self.kind.warm(engine, self.spec)
        except Exception:
            engine.close()
            raise
        log.info("loaded and warmed %s %s %s from %s", self.spec.kind, engine.name, engine.version, source)
        return engine, ModelInfo(engine.name, engine.version, source, self.spec.kind)

    def _bundled_dir(self, profile: str) -> Path:
        spec = replace(self.spec, profile=profile)
        model_dir = self.kind.bundled_dir(spec, self._cache_dir)
        if not model_dir.is_dir():
            command = self.kind.build_command(spec)
            raise ModelNotBuiltError(
                f"no model store is configured (SPEECH_MODEL__BUCKET) and the bundled {spec.kind} model "
                f"{spec.profile!r} is not built in {model_dir}; build it with `{command}` (scripts/setup.sh does, "
                "with the build extra) or set SPEECH_MODEL__BUCKET to the regional model store",
                f"no model store is configured and the bundled {spec.kind} model was never built; run `{command}`",
            )
        return model_dir


class ModelCatalog:
    """Every model the server is configured to serve, one :class:`ModelManager` each, sharing one store client.

    The server is ready only when every one of them has loaded and warmed: a replica that can transcribe but not
    speak (or the reverse) must not take traffic for both.
    """

    def __init__(self, settings: Settings, metrics: ServingMetrics, kinds: dict[str, EngineKind] | None = None) -> None:
        kinds = ENGINE_KINDS if kinds is None else kinds
        model = settings.model
        self.store: ModelStore | None = None
        if model.bucket is not None and settings.region is not None:
            self.store = ModelStore(
                model.bucket,
                settings.region,
                cache_root(model.cache_dir) / "s3" / model.bucket,
                topology=settings.topology,
                endpoint_url=model.endpoint_url,
            )
        self._asr_name = model.name
        self._languages = dict(model.languages)
        self.managers: dict[tuple[str, str], ModelManager] = {}
        for spec in settings.served_models():
            if spec.kind not in kinds:
                raise ModelError(f"no engine serves models of kind {spec.kind!r}; known kinds: {', '.join(kinds)}")
            self.managers[(spec.kind, spec.name)] = ModelManager(
                spec,
                kinds[spec.kind],
                metrics,
                store=self.store,
                cache_dir=model.cache_dir,
                poll_interval_s=model.poll_interval_s,
            )

    def of_kind(self, kind: str) -> list[ModelManager]:
        return [manager for (k, _), manager in self.managers.items() if k == kind]

    @property
    def asr(self) -> ModelManager:
        """The speech-recognition model for every language (SPEECH_MODEL__NAME), which also detects languages."""
        return self.managers[("asr", self._asr_name)]

    @property
    def languages(self) -> dict[str, ModelManager]:
        """The ASR models specialised for one language (SPEECH_MODEL__LANGUAGES), by language code."""
        return {language: self.managers[("asr", name)] for language, name in sorted(self._languages.items())}

    def asr_for(self, language: str | None) -> ModelManager:
        """The model that transcribes ``language``: its specialised one if there is one, else the multilingual one."""
        name = self._languages.get(language or "", self._asr_name)
        return self.managers[("asr", name)]

    @property
    def is_ready(self) -> bool:
        return all(manager.is_ready for manager in self.managers.values())

    @property
    def load_error(self) -> str | None:
        """The first model's failure, if any (each names its model where the store is involved)."""
        return next((m.load_error for m in self.managers.values() if m.load_error is not None), None)

    async def check_store(self) -> None:
        """Refuse a bucket outside this replica's jurisdiction before anything is pulled from it."""
        if self.store is not None:
            home = await asyncio.to_thread(self.store.check_jurisdiction)
            log.info("model bucket %s is in %s (%s)", self.store.bucket, home.aws_region, home.jurisdiction)

    async def load_then_poll(self, when_ready: Callable[[], Awaitable[None]] | None = None) -> None:
        """Load every model (side by side), then, once all are ready, run ``when_ready`` (the shadow candidate's
        load, which no user waits for) and poll the store for each; until cancelled."""
        managers = list(self.managers.values())
        await asyncio.gather(*(manager.load_initial() for manager in managers))
        if self.is_ready:
            if when_ready is not None:
                await when_ready()
            await asyncio.gather(*(manager.poll() for manager in managers))

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()
