"""The long-lived objects of one app, kept on ``app.state.serving`` and read by small getters."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from serving.auth import ApiKeyVerifier
from serving.inference import InferencePool
from serving.metrics import ServingMetrics
from serving.model_manager import ModelCatalog
from serving.residency import ResidencyGuard
from serving.settings import Settings
from serving.shadow import ShadowModel
from serving.speakers.service import SpeakerService
from serving.stream_control import StreamRegistry
from serving.tts_cache import TtsCache
from serving.vad import SileroVad


@dataclass
class BatchSlots:
    """Batch requests admitted (uploading, decoding, queued or transcribing); beyond ``limit`` new ones get 503."""

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
    admin_auth: ApiKeyVerifier
    models: ModelCatalog
    speakers: SpeakerService
    vad: SileroVad
    streams: StreamRegistry
    batch_slots: BatchSlots
    tts_cache: TtsCache
    # Blocking work never runs on the event loop, so health checks answer while transcribing. Each kind has its
    # own threads: a burst of uploads to decode or of streams to endpoint never queues behind (or ahead of) Whisper.
    inference: InferencePool
    decode_pool: ThreadPoolExecutor
    vad_pool: ThreadPoolExecutor
    # Set on SIGTERM: readiness fails and new work is refused while live work finishes (serving/shutdown.py).
    is_draining: bool = False
    # A candidate version compared off the response path on sampled batch requests (SPEECH_SHADOW__VERSION).
    shadow: ShadowModel | None = None

    def close(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        self.models.close()
        self.inference.shutdown()
        for pool in (self.decode_pool, self.vad_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    def current_version(self) -> str:
        """The ``model_version`` label for work no engine served (rejected before one was acquired): the ASR
        model's, the version most of the traffic is served by."""
        return self.models.asr.current_version


def serving_state(connection: HTTPConnection) -> ServingState:
    """FastAPI dependency (HTTP and WebSocket alike): this app's state."""
    return connection.app.state.serving
