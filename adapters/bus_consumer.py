"""`QueueConsumer`: a service's own durable queue on the events exchange, consumed message by
message. The help desk's email replies (serve_apps/helpdesk_mail/consumer.py) and KPI facts
(serve_apps/helpdesk/kpi_facts.py) subclass it with their handler.

Conventions (as `actors.consumer`, the platform-events consumer): a message is acknowledged only
after its outcome is durable; one that cannot be parsed, or that the handler says can never be
applied (`DeadLetter`), goes to `<queue>.dlq` with the reason in `x-pitboss-reason`. Any other
failure (our own side: Cassandra down) is retried: the message is published again to the queue
with `x-pitboss-attempts` + 1 after a growing pause, and dead-lettered after `max_attempts`.
Handlers are idempotent, so a redelivery or a replayed dead letter is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from prometheus_client import Counter

from adapters.settings import Settings

log = logging.getLogger("pitboss.bus")


class DeadLetter(Exception):
    """The message can never be applied: dead-letter it with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class QueueConsumer:
    """Subclasses set `label` and implement `handle(raw) -> outcome` (counted in `counts` and in
    `metric{outcome}`); raise `DeadLetter` for a message that can never be applied."""

    label = "bus"

    def __init__(self, settings: Settings, queue: str, routing_keys: Sequence[str], metric: Counter,
                 prefetch: int = 16, max_attempts: int = 8, retry_pause_seconds: float = 1.0) -> None:
        self.settings = settings
        self.queue = queue
        self.routing_keys = tuple(routing_keys)
        self.metric = metric
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.retry_pause_seconds = retry_pause_seconds
        self.counts: dict[str, int] = {}
        self.connected = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def dlq(self) -> str:
        return f"{self.queue}.dlq"

    async def handle(self, raw: dict[str, Any]) -> str:
        raise NotImplementedError

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        self.metric.labels(outcome).inc()

    async def run(self) -> None:
        """Consume until cancelled, reconnecting after a lost connection."""
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("%s consumer lost its connection; reconnecting", self.label, exc_info=True)
            self.connected = False
            await asyncio.sleep(2.0)

    async def _consume(self) -> None:
        s = self.settings
        connection = await aio_pika.connect_robust(s.rabbitmq_url, timeout=10)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.prefetch)
            exchange = await channel.declare_exchange(s.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(self.queue, durable=True)
            for key in self.routing_keys:
                await queue.bind(exchange, routing_key=key)
            await channel.declare_queue(self.dlq, durable=True)
            self.connected = True
            log.info("%s consumer on queue %s", self.label, self.queue)
            async with queue.iterator() as messages:
                async for message in messages:
                    # One task per message (bounded by the prefetch): a slow one delays only itself.
                    task = asyncio.get_running_loop().create_task(self._one(channel, message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _republish(self, channel: AbstractChannel, message: AbstractIncomingMessage, queue: str,
                         headers: dict[str, Any]) -> None:
        """The message again, as it came, with `headers` added, straight to `queue`."""
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id,
                headers={**(message.headers or {}), **headers},
            ),
            routing_key=queue,
        )

    async def _dead_letter(self, channel: AbstractChannel, message: AbstractIncomingMessage, reason: str) -> None:
        await self._republish(channel, message, self.dlq, {"x-pitboss-reason": reason[:1000],
                                                           "x-pitboss-routing-key": message.routing_key or ""})
        log.warning("%s event %s dead-lettered: %s", self.label, message.message_id, reason)
        self._count("dead_lettered")

    async def _one(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        try:
            await self._handle(channel, message)
        except Exception:
            # The channel failed under us: unacknowledged, the broker redelivers it.
            log.warning("%s event %s left unacknowledged", self.label, message.message_id, exc_info=True)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)

    async def _handle(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        try:
            raw: Any = json.loads(message.body)
            if not isinstance(raw, dict):
                raise DeadLetter("the event is not a JSON object")
            outcome = await self.handle(raw)
        except DeadLetter as exc:
            await self._dead_letter(channel, message, exc.reason)
            await message.ack()
            return
        except ValueError as exc:  # not JSON
            await self._dead_letter(channel, message, f"not a {self.label} event: {exc}")
            await message.ack()
            return
        except Exception as exc:
            attempts = int(str((message.headers or {}).get("x-pitboss-attempts", 0) or 0)) + 1
            if attempts >= self.max_attempts:
                await self._dead_letter(channel, message, f"gave up after {attempts} attempts: {exc}")
            else:
                log.warning("%s event %s failed (attempt %s): %s; retrying", self.label, message.message_id,
                            attempts, exc)
                await asyncio.sleep(min(60.0, self.retry_pause_seconds * 2 ** (attempts - 1)))
                await self._republish(channel, message, self.queue, {"x-pitboss-attempts": attempts})
                self._count("retried")
            await message.ack()
            return
        self._count(outcome)
        await message.ack()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
