"""The part of the client that does no I/O: the chain, the breakers, and the verdict on every answer.

:class:`SpeechClient` and :class:`AsyncSpeechClient` differ only in how they send; both walk a :class:`Plan` from
:meth:`Core.plan`, report each answer to it, and let it decide: done, retry here after a pause, next region, or
raise. So the two behave identically, and the rules live in one place.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from contract.service import CACHE_HEADER, REGION_HEADER, STREAM_PATH
from contract.topology import DEFAULT_TOPOLOGY, Region, Topology
from speech_client import routing
from speech_client.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from speech_client.errors import (
    ApiError,
    AuthenticationError,
    MisdirectedError,
    NoRegionAvailable,
    StreamClosedError,
)
from speech_client.results import Speech
from speech_client.retry import CLOSE_TRY_AGAIN_LATER, FAILOVER_STATUSES, RETRY_STATUSES, RetryPolicy, retry_after_s
from speech_client.routing import Caller

CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008
MAX_STREAM_MESSAGE_BYTES = 1 << 20


@dataclass(frozen=True)
class Attempt:
    """One try: a region of the chain, after waiting ``delay_s``."""

    region: Region
    base_url: str
    delay_s: float

    @property
    def stream_url(self) -> str:
        return self.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + STREAM_PATH


@dataclass(frozen=True)
class _Verdict:
    reason: str
    is_retryable: bool  # retry in this region (after a pause); else move on along the chain
    retry_after_s: float | None = None


class Plan:
    """The attempts of one call, in order. Iterate it; report each attempt's outcome before taking the next.

    Iteration ends after :meth:`succeeded`; raises :class:`NoRegionAvailable` when the chain is exhausted.
    """

    def __init__(self, core: Core[Any]) -> None:
        self._core = core
        self._reasons: dict[str, str] = {}
        self._verdict: _Verdict | None = None
        self._is_done = False

    def __iter__(self) -> Iterator[Attempt]:
        core = self._core
        for region in core.regions:
            breaker = core.breakers[region.key]
            if not breaker.allow():
                self._reasons[region.key] = f"circuit {breaker.state}"
                continue
            delay = 0.0
            for retry in range(core.retry.attempts_per_region):
                self._verdict = None
                try:
                    yield Attempt(region, core.endpoints[region.key], delay)
                finally:
                    if self._verdict is None and not self._is_done:
                        breaker.release()  # the caller stopped mid-attempt: no verdict on the region
                if self._is_done:
                    return
                verdict = self._verdict
                if verdict is None:
                    raise RuntimeError("an attempt ended without succeeded(), failed() or answered()")
                self._reasons[region.key] = verdict.reason
                next_delay = (
                    core.retry.delay_s(retry, verdict.retry_after_s, core.rng) if verdict.is_retryable else None
                )
                if next_delay is None or retry + 1 == core.retry.attempts_per_region:
                    breaker.record_failure()
                    break
                delay = next_delay
        raise NoRegionAvailable(core.chain, self._reasons)

    def succeeded(self, attempt: Attempt, served_by: str | None) -> str:
        """The attempt was answered; check where (raises ResidencyError) and return the region that served it."""
        self._is_done = True
        self._core.breakers[attempt.region.key].record_success()
        routing.check_served_by(self._core.topology, self._core.jurisdiction, attempt.region, served_by)
        return served_by or attempt.region.key

    def failed(self, attempt: Attempt, error: BaseException) -> None:
        """The region could not be reached, or the connection broke: move on along the chain."""
        self._verdict = _Verdict(f"{type(error).__name__}: {error}".rstrip(": "), is_retryable=False)

    def answered(self, attempt: Attempt, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """An HTTP answer other than success: retry, move on, or raise what the caller must fix."""
        detail = _detail(body)
        if status in RETRY_STATUSES:
            self._verdict = _Verdict(f"{status} {detail}", True, retry_after_s(headers.get("retry-after")))
            return
        if status in FAILOVER_STATUSES:
            self._verdict = _Verdict(f"{status} {detail}", is_retryable=False)
            return
        self._core.breakers[attempt.region.key].record_success()  # the region answered; the request is at fault
        self._is_done = True
        region = attempt.region.key
        if status == 401:
            raise AuthenticationError(region, status, detail)
        if status == 421:
            raise MisdirectedError(region, status, detail, tuple(_json(body).get("endpoints", ())))
        raise ApiError(region, status, detail)

    def refused_stream(self, attempt: Attempt, code: int, reason: str, detail: str | None) -> None:
        """A stream closed before ``ready``: 1013 is retried, a policy close raised, anything else moves on."""
        if code == CLOSE_TRY_AGAIN_LATER:
            self._verdict = _Verdict(f"closed {code} {reason}", is_retryable=True)
            return
        if code == CLOSE_POLICY_VIOLATION:
            self._core.breakers[attempt.region.key].record_success()
            self._is_done = True
            if "API key" in reason:
                raise AuthenticationError(attempt.region.key, code, detail or reason)
            raise StreamClosedError(attempt.region.key, code, reason, detail)
        self._verdict = _Verdict(f"closed {code} {reason}", is_retryable=False)


PoolT = TypeVar("PoolT")


class Core(Generic[PoolT]):
    """Configuration and shared state of one client: chain, endpoints, breakers, policies, connection pools.

    ``endpoints`` maps region keys to base URLs (``{"eu-west": "https://eu-west.speech.example.com"}``); or give
    ``domain`` and every region is ``https://<region key>.<domain>``. ``caller`` decides the failover chain (see
    :class:`Caller`): a caller bound to the EU only ever talks to EU regions. ``topology`` is the platform's own when
    it runs other regions. ``clock`` drives the breakers (monotonic seconds; a simulation may pass its own).
    """

    def __init__(
        self,
        endpoints: Mapping[str, str] | None = None,
        *,
        domain: str | None = None,
        caller: Caller | None = None,
        api_key: str | None = None,
        topology: Topology = DEFAULT_TOPOLOGY,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        timeout_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topology = topology
        self.caller = caller or Caller()
        self.jurisdiction = routing.bound_jurisdiction(topology, self.caller)
        self.regions = routing.chain_for(topology, self.caller)
        self.endpoints = routing.endpoints_for(topology, self.regions, endpoints, domain)
        self.retry = retry or RetryPolicy()
        policy = breaker or BreakerPolicy()
        self.breakers = {r.key: CircuitBreaker(policy, clock) for r in self.regions}
        self.timeout_s = timeout_s
        self.rng = random.Random()
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One connection pool per region, opened by the sync or async layer on first use and reused after.
        self._pools: dict[str, PoolT] = {}
        self._pools_lock = threading.Lock()

    @property
    def chain(self) -> tuple[str, ...]:
        """The region keys this client tries, in order."""
        return tuple(r.key for r in self.regions)

    def _plan(self) -> Plan:
        return Plan(self)

    def breaker_state(self, region: str) -> BreakerState:
        """The breaker state of one region of the chain."""
        return self.breakers[region].state

    @staticmethod
    def served_by(headers: Mapping[str, str]) -> str | None:
        return headers.get(REGION_HEADER)

    @staticmethod
    def batch_params(sample_rate: int | None, language: str | None) -> dict[str, str | int]:
        params: dict[str, str | int] = {}
        if sample_rate is not None:
            params["sample_rate"] = sample_rate
        if language is not None:
            params["language"] = language
        return params

    @staticmethod
    def tts_body(text: str, voice: str | None, audio_format: str, speed: float) -> dict[str, object]:
        body: dict[str, object] = {"text": text, "format": audio_format, "speed": speed}
        if voice is not None:
            body["voice"] = voice
        return body

    @staticmethod
    def stream_query(language: str | None, interim_results: bool = True) -> str:
        params = {"language": language} if language else {}
        if not interim_results:
            params["interim_results"] = "false"  # finals only: the server decodes no partial
        return f"?{urlencode(params)}" if params else ""

    @staticmethod
    def speech_from(content: bytes, headers: Mapping[str, str], region: str) -> Speech:
        return Speech(
            audio=content,
            media_type=headers.get("content-type", ""),
            is_cache_hit=headers.get(CACHE_HEADER, "").lower() == "hit",
            region=region,
        )


def parse_stream_message(raw: str | bytes) -> dict:
    message = json.loads(raw)
    if not isinstance(message, dict) or "type" not in message:
        raise ValueError(f"unexpected stream message {str(raw)[:80]!r}")
    return message


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _detail(body: bytes) -> str:
    detail = _json(body).get("detail")
    if isinstance(detail, str):
        return detail
    if detail is not None:
        return json.dumps(detail)[:300]
    return body[:300].decode(errors="replace")
