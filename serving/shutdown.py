"""Graceful shutdown: stop taking work, finish what is live, then let uvicorn close.

uvicorn, on SIGTERM, stops listening and closes every WebSocket with 1012 at once, so an utterance being spoken
never gets its final. :class:`DrainingServer` runs :func:`drain` first, while it still listens: readiness turns
503 (load balancers stop sending, and a probe can still tell), new streams and batch requests are refused with a
retry hint, every live stream stops reading, finalises its open utterance, sends every pending final and closes
with 1001, and in-flight batch requests finish. All of it within ``SPEECH_SHUTDOWN__GRACE_S``; then uvicorn's own
shutdown closes whatever is left.

Kubernetes: give the pod ``terminationGracePeriodSeconds`` >= preStop sleep + ``SPEECH_SHUTDOWN__GRACE_S`` +
``UVICORN_CLOSE_S`` + a few seconds to unload (README, "Graceful shutdown").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import uvicorn

from serving.state import ServingState
from serving.streaming import CLOSE_GOING_AWAY, StreamError

log = logging.getLogger(__name__)
# uvicorn's own graceful timeout after the drain: what is left by then is idle keep-alive connections.
UVICORN_CLOSE_S = 5
_POLL_S = 0.05
GOING_AWAY = StreamError(
    CLOSE_GOING_AWAY,
    "server is shutting down",
    "the server is shutting down; every final of the audio it took was sent; reconnect to continue "
    "(another replica will answer)",
)


async def drain(state: ServingState, grace_s: float, is_forced: Callable[[], bool] = lambda: False) -> bool:
    """Refuse new work and wait (at most ``grace_s``) for live streams and batch requests to finish.

    Returns whether everything finished in time; ``is_forced`` (a second Ctrl+C) cuts the wait short.
    """
    state.is_draining = True
    streams, requests = state.streams.active, state.batch_slots.active
    log.info("draining: readiness is 503; %d streams and %d batch requests get up to %g s", streams, requests, grace_s)
    state.streams.stop_all(GOING_AWAY)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while state.streams.active or state.batch_slots.active:
        if loop.time() >= deadline or is_forced():
            log.warning(
                "drain cut short with %d streams and %d batch requests still open (SPEECH_SHUTDOWN__GRACE_S=%g)",
                state.streams.active, state.batch_slots.active, grace_s,
            )  # fmt: skip
            return False
        await asyncio.sleep(_POLL_S)
    log.info("drained: no stream or batch request is left")
    return True


class DrainingServer(uvicorn.Server):
    """uvicorn's server with :func:`drain` between the exit signal and uvicorn's own shutdown."""

    def __init__(self, config: uvicorn.Config, state: ServingState) -> None:
        super().__init__(config)
        self._state = state

    async def main_loop(self) -> None:
        await super().main_loop()  # returns once a signal (or should_exit) asks the server to stop
        await drain(self._state, self._state.settings.shutdown.grace_s, lambda: self.force_exit)
