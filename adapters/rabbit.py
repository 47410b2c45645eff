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
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from adapters.settings import Settings
from schemas.events import PAYLOADS, PitbossEvent

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


class EventPublisher:
    """One publisher-confirms channel on the events exchange, opened on first use and reopened
    after a failure. A publish returns once the broker has the message."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._lock = asyncio.Lock()

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

    async def publish(self, event: PitbossEvent) -> None:
        try:
            exchange = await self._open()
            await asyncio.wait_for(
                publish(exchange, event.type, event.model_dump_json().encode(), str(event.event_id)),
                timeout=PUBLISH_TIMEOUT,
            )
        except BaseException:
            connection, self._connection, self._exchange = self._connection, None, None
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
            raise
