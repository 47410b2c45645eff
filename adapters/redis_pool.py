"""Redis clients whose pool waits for a free connection instead of failing.

redis-py's default asyncio pool allows 100 connections and raises "Too many connections" on the
101st concurrent command: a burst of chat lines (three commands each, from hundreds of sockets)
hit it, and a failed publish left the line to be found only by a reconnect's replay. A blocking
pool queues the command for up to `PITBOSS_REDIS_POOL_TIMEOUT_SECONDS` instead, and fewer
connections carrying more commands each cost Redis and the replica less than many idle ones.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from adapters.settings import Settings


def redis_client(settings: Settings, *, socket_timeout: float | None = 3.0,
                 health_check_interval: int = 0) -> aioredis.Redis:
    """A client on its own blocking pool of `PITBOSS_REDIS_MAX_CONNECTIONS`; `aclose()` closes the pool.
    `socket_timeout=None` for a subscriber, which blocks on reads by design."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_seconds, socket_timeout=socket_timeout,
        health_check_interval=health_check_interval)
    return aioredis.Redis.from_pool(pool)
