"""The synthesis cache against a real redis-server: hit, miss, TTL, version invalidation, failure and recovery;
and the in-process LRU's byte budget."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import ServingMetrics
from serving.settings import CacheSettings
from serving.tts_cache import CacheKey, TtsCache
from tests.serving.redis_server import RedisServer

AUDIO = b"RIFF" + bytes(range(256)) * 8
RETRY_AFTER_S = 0.2


@pytest.fixture
def running_redis(redis_server) -> RedisServer:
    """The module's redis-server, running (a test before may have stopped it) and empty."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.client().flushall()
    return redis_server


def key(text: str = "Hello there.", version: str = "1.0.0", **changes: object) -> CacheKey:
    fields: dict = {"text": text, "voice": "joe", "model_version": version, "format": "wav", "speed": 1.0}
    return CacheKey(**{**fields, **changes})


def counts(metrics: ServingMetrics, name: str) -> dict[frozenset, float]:
    families = text_string_to_metric_families(metrics.exposition().decode())
    return {
        frozenset((k, v) for k, v in sample.labels.items() if k != "region"): sample.value
        for family in families
        for sample in family.samples
        if sample.name == name
    }


def redis_cache(redis: RedisServer, metrics: ServingMetrics, **settings: object) -> TtsCache:
    fields: dict = {"redis_url": redis.url, "retry_after_s": RETRY_AFTER_S, "timeout_s": 0.5}
    return TtsCache(CacheSettings(**{**fields, **settings}), metrics)


def test_a_miss_then_a_hit_with_the_same_bytes_and_both_counted(running_redis):
    metrics = ServingMetrics("local")
    cache = redis_cache(running_redis, metrics)

    async def scenario():
        miss = await cache.get(key())
        await cache.put(key(), AUDIO)
        hit = await cache.get(key())
        await cache.close()
        return miss, hit

    assert asyncio.run(scenario()) == (None, AUDIO)
    lookups = counts(metrics, "speech_cache_lookups_total")
    assert lookups[frozenset({("model_version", "1.0.0"), ("cache", "tts"), ("result", "miss")})] == 1
    assert lookups[frozenset({("model_version", "1.0.0"), ("cache", "tts"), ("result", "hit")})] == 1
    assert counts(metrics, "speech_tts_cache_served_bytes_total") == {
        frozenset({("model_version", "1.0.0")}): len(AUDIO)
    }
    assert counts(metrics, "speech_tts_cache_written_bytes_total") == {
        frozenset({("model_version", "1.0.0")}): len(AUDIO)
    }


def test_entries_expire_after_the_configured_ttl(running_redis):
    cache = redis_cache(running_redis, ServingMetrics("local"), ttl_s=1)
    client = running_redis.client()

    async def scenario():
        await cache.put(key(), AUDIO)
        assert 0 < client.pttl(key().digest()) <= 1000, "stored with the configured TTL"
        assert await cache.get(key()) == AUDIO
        deadline = time.monotonic() + 10
        while client.exists(key().digest()):
            assert time.monotonic() < deadline, "the entry outlived its TTL"
            await asyncio.sleep(0.1)
        return await cache.get(key())

    assert asyncio.run(scenario()) is None


@pytest.mark.parametrize(
    "changed",
    [{"version": "1.0.1"}, {"voice": "other"}, {"format": "ogg"}, {"speed": 1.5}, {"text": "Hello there!"}],
)
def test_a_new_model_version_or_any_other_field_never_finds_the_old_audio(running_redis, changed):
    cache = redis_cache(running_redis, ServingMetrics("local"))

    async def scenario():
        await cache.put(key(), AUDIO)
        found = await cache.get(key(**changed))
        return found, await cache.get(key())

    assert asyncio.run(scenario()) == (None, AUDIO)


def test_a_redis_that_stops_is_a_counted_miss_and_the_cache_recovers_when_it_returns(running_redis):
    metrics = ServingMetrics("local")
    cache = redis_cache(running_redis, metrics)

    async def scenario():
        await cache.put(key(), AUDIO)
        assert await cache.get(key()) == AUDIO
        running_redis.stop()
        assert await cache.get(key()) is None, "a failure answers as a miss"
        assert await cache.get(key()) is None, "and Redis is left alone for a while"
        await cache.put(key("Another sentence."), AUDIO)
        running_redis.start()
        await asyncio.sleep(RETRY_AFTER_S * 1.5)
        await cache.put(key(), AUDIO)  # the restarted Redis is empty
        return await cache.get(key())

    assert asyncio.run(scenario()) == AUDIO, "the cache works again once Redis is back"
    errors = counts(metrics, "speech_tts_cache_errors_total")
    assert errors[frozenset({("backend", "redis"), ("operation", "get"), ("reason", "error")})] == 1
    assert errors[frozenset({("backend", "redis"), ("operation", "get"), ("reason", "unavailable")})] == 1
    assert errors[frozenset({("backend", "redis"), ("operation", "put"), ("reason", "unavailable")})] == 1


def test_the_memory_cache_evicts_the_least_recently_used_beyond_its_byte_budget():
    metrics = ServingMetrics("local")
    cache = TtsCache(CacheSettings(max_bytes=int(2.5 * len(AUDIO))), metrics)
    first, second, third = key("One."), key("Two."), key("Three.")

    async def scenario():
        await cache.put(first, AUDIO)
        await cache.put(second, AUDIO)
        assert await cache.get(first) == AUDIO  # now the most recently used
        await cache.put(third, AUDIO)
        await cache.put(key("Too big."), AUDIO * 3)  # larger than the whole budget: not stored
        return [await cache.get(k) is not None for k in (first, second, third, key("Too big."))]

    assert asyncio.run(scenario()) == [True, False, True, False]
    assert counts(metrics, "speech_tts_cache_held_bytes") == {frozenset(): 2 * len(AUDIO)}
