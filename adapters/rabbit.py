"""RabbitMQ topology and publishing.

- `pitboss.events` (topic, durable): every event, routing key = event type. The platform
  publishes its events here and Pitboss publishes its own decisions here too.
- `pitboss.platform-events` (durable queue): bound to the platform's event types only.
- `pitboss.platform-events.dlq` (durable queue, via the default exchange): messages that
  cannot be parsed or applied, with the reason in the `x-pitboss-reason` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from adapters.settings import Settings
from schemas.events import PAYLOADS, PitbossEvent

if TYPE_CHECKING:
    from adapters.cassandra.parked_events import ParkedEvents

PLATFORM_TYPES = tuple(PAYLOADS)


def dlq_name(settings: Settings) -> str:
    return f"{settings.events_queue}.dlq"


async def declare(channel: AbstractChannel, settings: Settings) -> tuple[AbstractExchange, AbstractQueue]:
    exchange = await channel.declare_exchange(settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(settings.events_queue, durable=True)
    for type_ in PLATFORM_TYPES:
        await queue.bind(exchange, routing_key=type_)
    await channel.declare_queue(dlq_name(settings), durable=True)
    return exchange, queue


async def publish(
    exchange: AbstractExchange,
    routing_key: str,
    body: bytes,
    message_id: str | None = None,
    headers: dict[str, Any] | None = None,
) -> None:
    await exchange.publish(
        aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            headers=headers or {},
        ),
        routing_key=routing_key,
    )


async def dead_letter(
    channel: AbstractChannel,
    settings: Settings,
    body: bytes,
    reason: str,
    routing_key: str,
    headers: dict[str, Any] | None = None,
) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={**(headers or {}), "x-pitboss-reason": reason[:1000], "x-pitboss-routing-key": routing_key},
        ),
        routing_key=dlq_name(settings),
    )


PUBLISH_TIMEOUT = 5.0
BROKER_RETRY_SECONDS = 5.0  # after a failed publish, events are parked without trying the broker this long
log = logging.getLogger("pitboss.bus")


class EventPublisher:
    """One publisher-confirms channel on the events exchange, opened on first use and reopened
    after a failure. A publish returns once the broker has the message, or, given `parked`, once
    the event is parked in Cassandra because the broker could not take it: the request that
    decided the event succeeds, and `publish_parked` (the help-desk worker's loop) sends it
    later. While the broker is known to be down, events are parked without trying it first."""

    def __init__(self, settings: Settings, parked: ParkedEvents | None = None) -> None:
        self.settings = settings
        self.parked = parked
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._lock = asyncio.Lock()
        self._down_until = 0.0

    async def _open(self) -> aio_pika.abc.AbstractExchange:
        async with self._lock:
            if self._exchange is None or self._connection is None or self._connection.is_closed:
                connection = await aio_pika.connect_robust(self.settings.rabbitmq_url, timeout=PUBLISH_TIMEOUT)
                channel = await connection.channel(publisher_confirms=True)
                self._exchange = await channel.declare_exchange(
                    self.settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
                self._connection = connection
            return self._exchange

    async def _send(self, type_: str, body: bytes, event_id: UUID) -> None:
        try:
            exchange = await self._open()
            await asyncio.wait_for(publish(exchange, type_, body, str(event_id)), timeout=PUBLISH_TIMEOUT)
        except BaseException:
            connection, self._connection, self._exchange = self._connection, None, None
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
            raise

    async def publish(self, event: PitbossEvent) -> None:
        body = event.model_dump_json().encode()
        if self.parked is None:
            await self._send(event.type, body, event.event_id)
            return
        if time.monotonic() >= self._down_until:
            try:
                await self._send(event.type, body, event.event_id)
                return
            except Exception as exc:
                self._down_until = time.monotonic() + BROKER_RETRY_SECONDS
                log.warning("the broker did not take event %s (%r); parking events for %.0f s",
                            event.event_id, exc, BROKER_RETRY_SECONDS)
        await self.parked.park(event.event_id, event.type, body)

    async def publish_parked(self) -> int:
        """Publish the parked events, oldest first, each deleted once the broker confirmed it; how
        many. Raises while the broker is still down (the rows stay for the next call)."""
        if self.parked is None:
            return 0
        sent = 0
        while batch := await self.parked.oldest():
            for row in batch:
                await self._send(row.type, row.body, row.event_id)
                await self.parked.done(row.parked_id)
                sent += 1
        if sent:
            self._down_until = 0.0
            log.info("published %s parked events", sent)
        return sent
