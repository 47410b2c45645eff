"""The Redis clients' blocking pool against the real Redis of the stack: a burst of concurrent
commands larger than the pool waits for connections instead of failing with "Too many connections"
(which is what redis-py's default pool did to chat lines under 200 open chats)."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from adapters.redis_pool import redis_client
from adapters.settings import Settings


async def _burst(client: aioredis.Redis, key: str, n: int) -> list[BaseException | int]:
    # BLPOP with a timeout holds its connection for that long: n of them at once need n connections.
    async def one(i: int) -> int:
        await client.blpop([f"{key}:{i}"], timeout=0.2)
        return int(await client.incr(key))

    return list(await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True))


async def test_a_burst_larger_than_the_pool_waits_for_connections(stack: Settings) -> None:
    settings = stack.model_copy(update={"redis_max_connections": 4, "redis_pool_timeout_seconds": 10.0})
    client = redis_client(settings)
    key = f"pitboss:test:pool:{uuid.uuid4()}"
    try:
        results = await _burst(client, key, 40)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert int(await client.get(key) or 0) == 40
    finally:
        await client.delete(key)
        await client.aclose()


async def test_the_default_pool_refuses_the_same_burst(stack: Settings) -> None:
    # The behaviour the blocking pool replaces, shown on the same Redis so this test notices if
    # redis-py ever changes it (the other test would then prove less).
    client = aioredis.from_url(stack.redis_url, max_connections=4)
    key = f"pitboss:test:pool:{uuid.uuid4()}"
    try:
        results = await _burst(client, key, 40)
        assert any(isinstance(r, RedisConnectionError) for r in results)
    finally:
        await client.delete(key)
        await client.aclose()
