"""Where voiceprints live: one record per (tenant, speaker), the embeddings of its enrolment clips.

Every operation takes the tenant, so one tenant can never read, match against or delete another's speakers, even
under the same speaker id. Two implementations: :class:`MemorySpeakerStore` (this process only) and
:class:`RedisSpeakerStore` (the region's Redis, shared by its replicas). Neither writes to disk or to the model
bucket, which replicates; deleting a speaker removes every embedding it had.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import numpy as np
import redis.asyncio as redis
from redis.exceptions import RedisError

from serving.settings import SpeakerSettings

KEY_PREFIX = "speech:speaker:"
_DTYPE = np.dtype("<f4")


class SpeakerStoreError(RuntimeError):
    """The store could not be reached or answered badly; the request may be retried."""


class SpeakerStore(Protocol):
    async def add(self, tenant: str, speaker: str, vector: np.ndarray) -> int:
        """Keep ``vector`` as one more clip of the speaker (dropping the oldest beyond the limit); the clip count."""
        ...

    async def vectors(self, tenant: str, speaker: str) -> list[np.ndarray]:
        """The speaker's clip embeddings, oldest first; empty when the tenant has no such speaker."""
        ...

    async def delete(self, tenant: str, speaker: str) -> bool:
        """Remove every embedding of the speaker; whether there was one."""
        ...

    async def close(self) -> None: ...


def speaker_key(tenant: str, speaker: str) -> str:
    """The Redis key of a speaker: tenant and speaker id are both checked names, so neither can contain ':'."""
    return f"{KEY_PREFIX}{tenant}:{speaker}"


class MemorySpeakerStore:
    """Voiceprints in this process: gone on restart and not shared between replicas."""

    def __init__(self, max_clips: int) -> None:
        self._max_clips = max_clips
        self._records: dict[tuple[str, str], list[np.ndarray]] = {}
        self._lock = asyncio.Lock()

    async def add(self, tenant: str, speaker: str, vector: np.ndarray) -> int:
        async with self._lock:
            record = self._records.setdefault((tenant, speaker), [])
            record.append(vector.astype(_DTYPE))
            del record[: -self._max_clips]
            return len(record)

    async def vectors(self, tenant: str, speaker: str) -> list[np.ndarray]:
        return list(self._records.get((tenant, speaker), ()))

    async def delete(self, tenant: str, speaker: str) -> bool:
        async with self._lock:
            return self._records.pop((tenant, speaker), None) is not None

    async def close(self) -> None:
        self._records.clear()


class RedisSpeakerStore:
    """Voiceprints in the region's Redis: a list of float32 embeddings per speaker key, trimmed to the limit."""

    def __init__(self, url: str, max_clips: int) -> None:
        self._client = redis.Redis.from_url(url)
        self._max_clips = max_clips
        self._where = url.split("@")[-1]  # no credentials in messages or logs

    async def add(self, tenant: str, speaker: str, vector: np.ndarray) -> int:
        key = speaker_key(tenant, speaker)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, vector.astype(_DTYPE).tobytes())
                pipe.ltrim(key, -self._max_clips, -1)
                pipe.llen(key)
                *_, count = await pipe.execute()
        except RedisError as exc:
            raise self._failed("store the voiceprint", exc) from exc
        return int(count)

    async def vectors(self, tenant: str, speaker: str) -> list[np.ndarray]:
        try:
            stored = await self._client.lrange(speaker_key(tenant, speaker), 0, -1)
        except RedisError as exc:
            raise self._failed("read the voiceprint", exc) from exc
        # Replies are bytes (the client leaves decode_responses off); redis-py types them as bytes or str either way.
        return [np.frombuffer(cast("bytes", raw), dtype=_DTYPE) for raw in stored]

    async def delete(self, tenant: str, speaker: str) -> bool:
        try:
            return bool(await self._client.delete(speaker_key(tenant, speaker)))
        except RedisError as exc:
            raise self._failed("delete the voiceprint", exc) from exc

    async def close(self) -> None:
        await self._client.aclose()

    def _failed(self, action: str, exc: RedisError) -> SpeakerStoreError:
        return SpeakerStoreError(f"could not {action} in the speaker store at {self._where}: {exc}")


def store_from(settings: SpeakerSettings) -> SpeakerStore:
    if settings.redis_url is not None:
        return RedisSpeakerStore(settings.redis_url, settings.max_clips)
    return MemorySpeakerStore(settings.max_clips)
