"""RabbitMQ topology and publishing.

- `pitboss.events` (topic, durable): every event, routing key = event type. The platform
  publishes its events here and Pitboss publishes its own decisions here too.
- `pitboss.platform-events` (durable queue): bound to the platform's event types only.
- `pitboss.platform-events.dlq` (durable queue, via the default exchange): messages that
  cannot be parsed or applied, with the reason in the `x-pitboss-reason` header.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from adapters.settings import Settings
from schemas.events import PAYLOADS

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
