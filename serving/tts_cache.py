"""The synthesized-audio cache: Redis when configured, else an in-process LRU bounded in bytes.

A key is the SHA-256 of everything that decides the audio's bytes: the normalized text, the voice, the voice
model's *version*, the format and the speed. A new version therefore never finds the old version's audio: it
misses, synthesizes and stores under its own key, while the old entries age out (Redis TTL, or LRU eviction).

Redis is an optimisation, never a dependency: every call is bounded by a short timeout, and a failure (down,
slow, refusing) is counted and answered as a miss, so the request is synthesized anyway. After a failure Redis is
left alone for ``retry_after_s`` (each skipped call counted as ``unavailable``) so a dead Redis costs one timeout
per interval, not one per request; then it is tried again and, if it answers, used again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from serving.metrics import ServingMetrics
from serving.settings import CacheSettings

log = logging.getLogger(__name__)
KEY_PREFIX = "speech:tts:"
T = TypeVar("T")


@dataclass(frozen=True)
class CacheKey:
    text: str  # normalized (serving.phonemes.normalize_text)
    voice: str
    model_version: str
    format: str
    speed: float

    def digest(self) -> str:
        fields = [self.text, self.voice, self.model_version, self.format, f"{self.speed:.3f}"]
        return KEY_PREFIX + hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


class _Backend(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, audio: bytes) -> None: ...

    async def close(self) -> None: ...


class MemoryBackend:
    """Least recently used entries go first once the stored audio would exceed ``max_bytes``."""

    name = "memory"

    def __init__(self, max_bytes: int, metrics: ServingMetrics) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._metrics = metrics

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        audio = self._entries.get(key)
        if audio is not None:
            self._entries.move_to_end(key)
        return audio

    async def put(self, key: str, audio: bytes) -> None:
        if len(audio) > self.max_bytes:
            return  # would evict everything else and still not fit
        if key in self._entries:
            self._bytes -= len(self._entries.pop(key))
        self._entries[key] = audio
        self._bytes += len(audio)
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted)
        self._metrics.tts_cache_held(self._bytes)

    async def close(self) -> None:
        self._entries.clear()


class RedisBackend:
    """Entries expire after ``ttl_s``; every call gives up after ``timeout_s``."""

    name = "redis"

    def __init__(self, url: str, ttl_s: int, timeout_s: float) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )

    async def get(self, key: str) -> bytes | None:
        async with asyncio.timeout(self.timeout_s):
            audio = await self.client.get(key)
        return audio if isinstance(audio, bytes) else None  # bytes: the client does not decode responses

    async def put(self, key: str, audio: bytes) -> None:
        async with asyncio.timeout(self.timeout_s):
            await self.client.set(key, audio, ex=self.ttl_s)

    async def close(self) -> None:
        await self.client.aclose()


class TtsCache:
    """Get and put synthesized audio; never raises for the backend's sake."""

    def __init__(self, settings: CacheSettings, metrics: ServingMetrics) -> None:
        self._metrics = metrics
        self._retry_after_s = settings.retry_after_s
        self._skip_until = 0.0
        self.backend: _Backend
        if settings.redis_url is not None:
            self.backend = RedisBackend(settings.redis_url, settings.ttl_s, settings.timeout_s)
        else:
            self.backend = MemoryBackend(settings.max_bytes, metrics)

    async def get(self, key: CacheKey) -> bytes | None:
        """The cached audio, or None on a miss (and on any backend failure)."""
        digest = key.digest()
        _, audio = await self._guarded("get", lambda: self.backend.get(digest))
        if audio is None:
            self._metrics.tts_cache_lookup(key.model_version, "miss", 0)
        else:
            self._metrics.tts_cache_lookup(key.model_version, "hit", len(audio))
        return audio

    async def put(self, key: CacheKey, audio: bytes) -> None:
        digest = key.digest()
        is_stored, _ = await self._guarded("put", lambda: self.backend.put(digest, audio))
        if is_stored:
            self._metrics.tts_cache_written(key.model_version, len(audio))

    async def close(self) -> None:
        await self.backend.close()

    async def _guarded(self, operation: str, call: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, the call's result), or (False, None) when the backend failed or is being left alone."""
        if time.monotonic() < self._skip_until:
            self._metrics.tts_cache_error(self.backend.name, operation, "unavailable")
            return False, None
        try:
            return True, await call()
        except (RedisError, OSError, TimeoutError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else "error"
            self._metrics.tts_cache_error(self.backend.name, operation, reason)
            self._skip_until = time.monotonic() + self._retry_after_s
            log.warning(
                "TTS cache %s %s failed (%s: %s); synthesizing without it for %g s",
                self.backend.name, operation, type(exc).__name__, exc, self._retry_after_s,
            )  # fmt: skip
            return False, None
