"""The outbound half's bus consumer: `ticket.message_added` from the gateway's own durable queue
(`PITBOSS_HELPDESK_MAIL_QUEUE`, bound to the events exchange) into `ReplySender`.

Conventions as `actors.consumer`: acknowledge only after the outcome is durable; a message that
cannot be parsed, or a reply that can never be sent (the relay refused it with 5xx, or it still
could not take it after every SMTP attempt with backoff, or the ticket has no address), goes to
`<queue>.dlq` with the reason in `x-pitboss-reason`. A failure of our own side (Cassandra down)
is retried: the message is published again to the queue with `x-pitboss-attempts` + 1 after a
growing pause, and dead-lettered after `MAX_ATTEMPTS`. Replaying a dead letter (move it back to
the queue) is safe: the send record makes it send at most once more, under the same Message-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from prometheus_client import Counter

from adapters.email_outbound import SmtpUnavailable
from adapters.settings import Settings
from domain.errors import InvalidInput
from serve_apps.helpdesk_mail.gateway import ReplySender, reply_payload

log = logging.getLogger("pitboss.helpdesk.mail")

ROUTING_KEY = "ticket.message_added"
PREFETCH = 16
MAX_ATTEMPTS = 8
RETRY_PAUSE_SECONDS = 1.0
REPLIES = Counter("pitboss_helpdesk_mail_replies_total", "ticket.message_added events by outcome", ["outcome"])


def dlq_name(settings: Settings) -> str:
    return f"{settings.helpdesk_mail_queue}.dlq"


class ReplyConsumer:
    def __init__(self, settings: Settings, sender: ReplySender) -> None:
        self.settings = settings
        self.sender = sender
        self.counts: dict[str, int] = {}
        self.connected = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        REPLIES.labels(outcome).inc()

    async def run(self) -> None:
        """Consume until cancelled, reconnecting after a lost connection."""
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("mail consumer lost its connection; reconnecting", exc_info=True)
            self.connected = False
            await asyncio.sleep(2.0)

    async def _consume(self) -> None:
        s = self.settings
        connection = await aio_pika.connect_robust(s.rabbitmq_url, timeout=10)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=PREFETCH)
            exchange = await channel.declare_exchange(s.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(s.helpdesk_mail_queue, durable=True)
            await queue.bind(exchange, routing_key=ROUTING_KEY)
            await channel.declare_queue(dlq_name(s), durable=True)
            self.connected = True
            log.info("mail consumer on queue %s", s.helpdesk_mail_queue)
            async with queue.iterator() as messages:
                async for message in messages:
                    # One task per message (bounded by the prefetch): a slow relay delays only its reply.
                    task = asyncio.get_running_loop().create_task(self._one(channel, message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _dead_letter(self, channel: AbstractChannel, message: AbstractIncomingMessage, reason: str) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id,
                headers={**(message.headers or {}), "x-pitboss-reason": reason[:1000],
                         "x-pitboss-routing-key": message.routing_key or ROUTING_KEY},
            ),
            routing_key=dlq_name(self.settings),
        )
        log.warning("reply event %s dead-lettered: %s", message.message_id, reason)
        self._count("dead_lettered")

    async def _one(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        try:
            await self._handle(channel, message)
        except Exception:
            # The channel failed under us: unacknowledged, the broker redelivers it.
            log.warning("reply event %s left unacknowledged", message.message_id, exc_info=True)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)

    async def _handle(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        try:
            raw: Any = json.loads(message.body)
            if not isinstance(raw, dict):
                raise ValueError("the event is not a JSON object")
            payload = reply_payload(raw)
        except (ValueError, InvalidInput) as exc:
            reason = exc.detail if isinstance(exc, InvalidInput) else f"not a ticket.message_added event: {exc}"
            await self._dead_letter(channel, message, reason)
            await message.ack()
            return
        try:
            sent = await self.sender.handle(payload)
        except (InvalidInput, SmtpUnavailable) as exc:
            # SmtpRejected / Undeliverable (InvalidInput), SmtpUnavailable after every attempt: the
            # send record says `failed`; an operator replays the dead letter once the cause is fixed.
            await self._dead_letter(channel, message, f"{type(exc).__name__}: {exc.detail}")
            await message.ack()
            return
        except Exception as exc:
            attempts = int(str((message.headers or {}).get("x-pitboss-attempts", 0) or 0)) + 1
            if attempts >= MAX_ATTEMPTS:
                await self._dead_letter(channel, message, f"gave up after {attempts} attempts: {exc}")
            else:
                log.warning("reply event %s failed (attempt %s): %s; retrying", message.message_id, attempts, exc)
                await asyncio.sleep(min(60.0, RETRY_PAUSE_SECONDS * 2 ** (attempts - 1)))
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        message.body,
                        content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=message.message_id,
                        headers={**(message.headers or {}), "x-pitboss-attempts": attempts},
                    ),
                    routing_key=self.settings.helpdesk_mail_queue,
                )
                self._count("retried")
            await message.ack()
            return
        self._count(sent.outcome)
        await message.ack()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
