"""The speaker stores keep records per tenant, bounded, and delete all of a speaker; Redis failures are named."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.speakers.store import MemorySpeakerStore, RedisSpeakerStore, SpeakerStoreError


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(256).astype(np.float32)


def test_the_memory_store_keeps_the_newest_clips_per_tenant_and_forgets_on_delete():
    async def scenario() -> None:
        store = MemorySpeakerStore(max_clips=2)
        assert [await store.add("tenant-a", "alice", vector(i)) for i in range(3)] == [1, 2, 2]
        kept = await store.vectors("tenant-a", "alice")
        assert [v.tolist() for v in kept] == [vector(1).tolist(), vector(2).tolist()]
        assert await store.vectors("tenant-b", "alice") == []
        assert not await store.delete("tenant-b", "alice")
        assert await store.delete("tenant-a", "alice")
        assert await store.vectors("tenant-a", "alice") == []

    asyncio.run(scenario())


def test_an_unreachable_redis_is_a_named_store_error_without_credentials(tmp_path):
    async def scenario() -> None:
        store = RedisSpeakerStore(f"unix://user:secret@{tmp_path}/absent.sock", max_clips=2)
        try:
            with pytest.raises(SpeakerStoreError, match="could not store the voiceprint in the speaker store") as error:
                await store.add("tenant-a", "alice", vector(0))
            assert "secret" not in str(error.value)
        finally:
            await store.close()

    asyncio.run(scenario())
