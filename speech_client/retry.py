"""Retries inside one region: exponential backoff with full jitter, bounded, and the server's Retry-After honoured.

Only answers that say "this region is busy, try again" are retried in place: HTTP 503 and 429, and a stream closed
with 1013 before it started. Anything else either moves to the next region at once (a connection failure, other
5xx) or is the caller's to fix (other 4xx).
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

from speech_client.errors import ConfigurationError

RETRY_STATUSES = frozenset({429, 503})
FAILOVER_STATUSES = frozenset({500, 502, 504})
CLOSE_TRY_AGAIN_LATER = 1013


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a busy region before moving on along the chain.

    The n-th retry waits a random time in [0, min(max_delay_s, base_delay_s * 2**n)] (full jitter, so clients that
    failed together do not return together), or the server's Retry-After when that is longer. A Retry-After beyond
    ``max_retry_after_s`` means the region is busy for longer than the caller will wait: the client moves on.
    """

    attempts_per_region: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 2.0
    max_retry_after_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts_per_region < 1:
            raise ConfigurationError(f"attempts_per_region={self.attempts_per_region} must be at least 1")
        for name in ("base_delay_s", "max_delay_s", "max_retry_after_s"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name}={getattr(self, name)} must not be negative (seconds)")

    def delay_s(self, retry: int, retry_after_s: float | None, rng: random.Random) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based), or None to stop retrying this region."""
        if retry_after_s is not None and retry_after_s > self.max_retry_after_s:
            return None
        jittered = rng.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**retry))
        return max(jittered, retry_after_s or 0.0)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
