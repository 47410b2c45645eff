"""`EventConsumer`: a Ray actor that drains the platform-events queue into the shards.

Messages are buffered into batches (size or time bound), applied through the router (one
call per shard per batch), and acknowledged only after the router answered, i.e. after the
effect is durable. Unparseable or unacceptable messages go to the dead-letter queue with the
reason; a batch that could not be stored is requeued, and event ids make the retry safe.
An event for a player not registered yet is retried a few times before it is dead-lettered,
since several consumers may reorder a player's first events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter

from actors.router import PlayerRouter
from adapters import rabbit
from adapters.settings import Settings
from domain.errors import PitbossError
from schemas.events import EnvelopeError, EventEnvelope, parse_envelope

log = logging.getLogger("pitboss.consumer")

CONSUMED = Counter("pitboss_consumer_messages_total", "Bus messages by outcome", ["outcome"])
UNKNOWN_PLAYER = "player_id: unknown player"
MAX_ATTEMPTS = 5


class EventConsumer:
    def __init__(self, region: str, index: int, env: dict[str, str] | None = None) -> None:
        os.environ.update(env or {})
        self.settings = Settings()
        self.region = region
        self.index = index
        self.buffer: list[AbstractIncomingMessage] = []
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.counts: dict[str, int] = {}
        self.router: PlayerRouter | None = None
        self.failed_in_a_row = 0  # batches not stored since the last one that was

    async def start(self) -> bool:
        """Idempotent: starts the consume loop if it is not running."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return True

    async def status(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "running": bool(self.task and not self.task.done()),
            "buffered": len(self.buffer),
            "counts": dict(self.counts),
        }

    async def _run(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("consumer %s lost its connection; reconnecting", self.index, exc_info=True)
                await asyncio.sleep(1.0)

    async def _consume(self) -> None:
        if self.router is None:
            self.router = PlayerRouter(self.settings)
        s = self.settings
        connection = await aio_pika.connect_robust(s.rabbitmq_url, timeout=10)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=s.consumer_batch * 2)
            exchange, queue = await rabbit.declare(channel, s)
            self.wake = asyncio.Event()
            self.buffer = []
            await queue.consume(self._on_message)
            while not connection.is_closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=s.consumer_flush_ms / 1000)
                self.wake.clear()
                if self.buffer:
                    batch, self.buffer = self.buffer[: s.consumer_batch], self.buffer[s.consumer_batch :]
                    await self._flush(channel, exchange, batch)
                    if len(self.buffer) >= s.consumer_batch:
                        self.wake.set()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.buffer.append(message)
        if len(self.buffer) >= self.settings.consumer_batch and self.wake is not None:
            self.wake.set()

    def _count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n
        CONSUMED.labels(outcome).inc(n)

    async def _flush(self, channel: Any, exchange: Any, batch: list[AbstractIncomingMessage]) -> None:
        assert self.router is not None
        valid: list[tuple[AbstractIncomingMessage, EventEnvelope]] = []
        for msg in batch:
            try:
                valid.append((msg, parse_envelope(msg.body)))
            except EnvelopeError as exc:
                await rabbit.dead_letter(channel, self.settings, msg.body, exc.reason, msg.routing_key or "")
                self._count("dead_lettered")
        if valid:
            try:
                outcomes = await self.router.apply_events([env for _, env in valid])
            except PitbossError as exc:
                self.failed_in_a_row += 1
                log.warning("batch of %s not stored (%s); requeued", len(valid), exc.detail)
                # Backing off: while Cassandra is down every batch fails, and requeued messages
                # come straight back (26,000 redeliveries in a one-minute outage at a fixed 0.5 s).
                await asyncio.sleep(min(5.0, 0.5 * 2 ** (self.failed_in_a_row - 1)))
                await batch[-1].nack(multiple=True, requeue=True)
                self._count("requeued", len(batch))
                return
            self.failed_in_a_row = 0
            for (msg, env), (status, reason) in zip(valid, outcomes, strict=True):
                if status != "rejected":
                    self._count(status)
                    continue
                attempts = int(str((msg.headers or {}).get("x-pitboss-attempts", 0) or 0)) + 1
                if reason == UNKNOWN_PLAYER and attempts < MAX_ATTEMPTS:
                    await rabbit.publish(
                        exchange, env.type, msg.body, str(env.event_id), {"x-pitboss-attempts": attempts}
                    )
                    self._count("retried")
                else:
                    await rabbit.dead_letter(channel, self.settings, msg.body, reason or "rejected", env.type)
                    self._count("dead_lettered")
        await batch[-1].ack(multiple=True)
