"""The platform API (`/platform/v1`): what the casino platform calls.

Bound at the bottom by `build_app`, deployed from the Serve config in `cluster/serve/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aio_pika
from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from actors.router import PlayerRouter, call
from actors.runtime import ensure_consumers
from adapters.cassandra.apikeys import ApiKeyStore
from adapters.cassandra.session import aexecute, connect
from adapters.redis_pool import redis_client
from adapters.settings import get_settings
from serve_apps import problems
from serve_apps.apikeys import KeyCache
from serve_apps.middleware import PitbossMiddleware
from serve_apps.platform import deps, routes_events, routes_ops, routes_players

log = logging.getLogger("pitboss.platform")

app = FastAPI(
    title="Pitboss platform API",
    version="1",
    description="Player registration, responsible-gambling limits, exclusions, deposit authorization and "
    "event ingestion for the casino platform. Authenticate with `Authorization: Bearer <brand API key>`. "
    "Errors are application/problem+json.",
)
problems.install(app)
app.include_router(routes_players.router)
app.include_router(routes_events.router)
app.include_router(routes_ops.router)
app.add_middleware(PitbossMiddleware, app_name="platform", max_body_bytes=get_settings().max_body_bytes)


@serve.deployment(name="PlatformAPI")
@serve.ingress(app)
class PlatformAPI:
    def __init__(self) -> None:
        self.settings = get_settings()
        self.router = PlayerRouter(self.settings)
        self.consumers = ensure_consumers(self.settings)
        self.cluster, self.session = connect(self.settings, self.settings.cassandra_keyspace)
        self.keys = ApiKeyStore(self.session)
        self.key_cache = KeyCache(self.settings.api_key_cache_seconds)
        self.redis = redis_client(self.settings, socket_timeout=2)
        self._amqp: Any = None
        self._closing: set[asyncio.Task[None]] = set()
        for brand, key in self.settings.bootstrap_keys():
            self.keys.install_blocking(brand, key, "bootstrap (PITBOSS_BOOTSTRAP_API_KEYS)")
        for consumer in self.consumers:
            consumer.start.remote()
        deps.bind(self)

    async def check_health(self) -> None:
        """Called by Serve every few seconds: also restarts the loop of a consumer Ray restarted."""
        for consumer in self.consumers:
            consumer.start.remote()

    async def probe_cassandra(self) -> None:
        await aexecute(self.session, "SELECT release_version FROM system.local", op="health")

    async def probe_redis(self) -> None:
        await self.redis.ping()

    async def probe_rabbitmq(self) -> None:
        """A round trip to the broker (a channel opened and closed): a hung broker keeps its TCP
        connection open, so the connection's state alone would still say up."""
        if self._amqp is None or self._amqp.is_closed:
            self._amqp = await aio_pika.connect(self.settings.rabbitmq_url, timeout=2)
        try:
            channel = await self._amqp.channel(publisher_confirms=False)
            await channel.close()
        except BaseException:
            stale, self._amqp = self._amqp, None  # reconnect at the next probe
            closing = asyncio.get_running_loop().create_task(_close_quietly(stale))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            raise

    async def probe_shards(self) -> dict[str, Any]:
        stats = await self.router.stats()
        return {str(s["index"]): {"active": s["active"], "leases": s["leases"], "pid": s["pid"]} for s in stats}

    async def probe_consumers(self) -> dict[str, Any]:
        # Restarted consumers come back idle; a health probe is a cheap place to start them again.
        await asyncio.gather(*(call(c.start.remote(), 2.0) for c in self.consumers))
        states = await asyncio.gather(*(call(c.status.remote(), 2.0) for c in self.consumers))
        if not all(s["running"] for s in states):
            raise RuntimeError("a consumer is not running")
        return {str(s["index"]): s["counts"] for s in states}


async def _close_quietly(connection: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), 5.0)


def build_app(args: dict[str, str]) -> Application:
    return PlatformAPI.bind()  # type: ignore[attr-defined,no-any-return]
