"""The long-lived objects of one app, kept on ``app.state.serving`` and read by small getters."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from serving.auth import ApiKeyVerifier
from serving.metrics import ServingMetrics
from serving.model_manager import ModelManager
from serving.residency import ResidencyGuard
from serving.settings import Settings
from serving.streaming import StreamLimiter
from serving.vad import SileroVad


@dataclass
class BatchSlots:
    """Batch requests admitted: running on an inference thread or waiting for one; beyond ``limit`` they get 503."""

    limit: int
    metrics: ServingMetrics
    active: int = 0

    def try_enter(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        self.metrics.batch_in_flight(self.active)
        return True

    def leave(self) -> None:
        self.active -= 1
        self.metrics.batch_in_flight(self.active)


@dataclass
class ServingState:
    settings: Settings
    metrics: ServingMetrics
    auth: ApiKeyVerifier
    residency: ResidencyGuard
    models: ModelManager
    vad: SileroVad
    streams: StreamLimiter
    batch_slots: BatchSlots
    # Blocking inference runs here, never on the event loop: health checks must answer while transcribing.
    inference_pool: ThreadPoolExecutor

    def current_version(self) -> str:
        """The ``model_version`` label for work no engine served (rejected before one was acquired)."""
        current = self.models.registry.current
        return current.version if current else "none"


def serving_state(connection: HTTPConnection) -> ServingState:
    """FastAPI dependency (HTTP and WebSocket alike): this app's state."""
    return connection.app.state.serving
