"""A per-region circuit breaker: stop sending to a region that keeps failing, and probe it again later.

Closed: requests flow; ``failure_threshold`` failures in a row open it. Open: the region is skipped without a
connection attempt, so a dead region costs callers nothing; after ``reset_timeout_s`` it turns half-open. Half-open:
up to ``half_open_probes`` requests are let through; a success closes the breaker, a failure opens it again for
another ``reset_timeout_s``.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from speech_client.errors import ConfigurationError


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class BreakerPolicy:
    """When a region's breaker opens and how soon it is probed again."""

    failure_threshold: int = 3
    reset_timeout_s: float = 10.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ConfigurationError(f"failure_threshold={self.failure_threshold} must be at least 1")
        if self.reset_timeout_s <= 0:
            raise ConfigurationError(f"reset_timeout_s={self.reset_timeout_s} must be positive (seconds)")
        if self.half_open_probes < 1:
            raise ConfigurationError(f"half_open_probes={self.half_open_probes} must be at least 1")


class CircuitBreaker:
    """One region's breaker. Thread-safe: a sync client may be shared by threads."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current()

    def allow(self) -> bool:
        """Whether a request may go to this region now; in half-open, taking one of the probe slots."""
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and self._probes < self._policy.half_open_probes:
                self._probes += 1
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._state, self._failures, self._probes = BreakerState.CLOSED, 0, 0

    def record_failure(self) -> None:
        with self._lock:
            state = self._current()
            self._failures += 1
            if state is BreakerState.HALF_OPEN or self._failures >= self._policy.failure_threshold:
                self._state, self._opened_at, self._probes = BreakerState.OPEN, self._clock(), 0

    def release(self) -> None:
        """A request that was let through ended without a verdict on the region (the caller gave up)."""
        with self._lock:
            self._probes = max(0, self._probes - 1)

    def _current(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._policy.reset_timeout_s:
            self._state, self._probes = BreakerState.HALF_OPEN, 0
        return self._state
