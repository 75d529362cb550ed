"""The gRPC server of one app: ``speech.v1.Speech`` and ``grpc.health.v1.Health`` on the gRPC port.

It runs on the app's own event loop (``grpc.aio``), started and stopped by the app's lifespan, so both protocols
share one state: the same stream slots, engine leases, thread pools and metrics. The health service answers what
``/readyz`` answers: SERVING once the model is loaded and warmed, NOT_SERVING before that and from the moment the
server drains (SIGTERM), for the whole server (``""``) and for ``speech.v1.Speech``; Kubernetes' gRPC probe and
gRPC-aware load balancers read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from contract.service import ENV_GRPC_PORT, GRPC_SERVICE
from serving.grpc_api import generated
from serving.grpc_api.service import SpeechService
from serving.state import ServingState

log = logging.getLogger(__name__)
# How often readiness is pushed to Health.Watch streams: a watcher sees a drain within this long (Check reads it live).
_READINESS_POLL_S = 0.1
# Room for a message's framing and config beside the largest upload SPEECH_LIMITS__MAX_UPLOAD_BYTES allows.
_MESSAGE_OVERHEAD_BYTES = 64 * 1024


class GrpcServerError(RuntimeError):
    """The gRPC port could not be bound."""


class _ReadinessHealth(health.aio.HealthServicer):
    """``grpc.health.v1.Health`` answering the state's readiness: ``Check`` reads it when asked, so a probe right after
    ``/readyz`` turned ready (or a drain began) never sees the previous status; ``Watch`` streams get it from
    :meth:`GrpcServer._track_readiness`."""

    def __init__(self, state: ServingState) -> None:
        super().__init__()
        self._state = state
        self._published: int | None = None

    def readiness(self) -> int:
        ready = self._state.models.is_ready and not self._state.is_draining
        return health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING

    async def publish(self) -> None:
        """Set the status of the server and of the speech service to the readiness of now (ignored once the server
        shuts down: every service is then NOT_SERVING for good)."""
        status = self.readiness()
        if status != self._published:
            self._published = status
            for name in ("", GRPC_SERVICE):
                await self.set(name, status)

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext):
        await self.publish()
        return await super().Check(request, context)


class GrpcServer:
    """Serves the gRPC API of ``state`` from :meth:`start` to :meth:`stop`; ``port`` is the bound port."""

    def __init__(self, state: ServingState) -> None:
        self._state = state
        self._messages, self._services = generated.load()  # fails at app build, before anything listens
        self._server: grpc.aio.Server | None = None
        self._health = _ReadinessHealth(state)
        self._tracker: asyncio.Task | None = None
        self.port: int | None = None

    async def start(self) -> None:
        settings = self._state.settings
        message_limit = settings.limits.max_upload_bytes + _MESSAGE_OVERHEAD_BYTES
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", message_limit), ("grpc.so_reuseport", 0)])
        self._services.add_SpeechServicer_to_server(SpeechService(self._state, self._messages), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"{settings.grpc.host}:{settings.grpc.port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise GrpcServerError(
                f"cannot listen for gRPC on {address} ({exc}); free the port or choose another with {ENV_GRPC_PORT} "
                "(0: any free port)"
            ) from exc
        await self._health.publish()
        await server.start()
        self._server = server
        self._tracker = asyncio.create_task(self._track_readiness(), name="grpc-health")
        log.info("gRPC API (%s, grpc.health.v1) listening on %s:%d", GRPC_SERVICE, settings.grpc.host, self.port)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls and give those still running ``grace_s`` (streams were drained before, on SIGTERM)."""
        if self._tracker is not None:
            self._tracker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tracker
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(grace_s)

    async def _track_readiness(self) -> None:
        while True:
            await self._health.publish()
            await asyncio.sleep(_READINESS_POLL_S)
