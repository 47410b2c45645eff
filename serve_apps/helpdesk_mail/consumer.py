"""The outbound half's bus consumer: `ticket.message_added` from the gateway's own durable queue
(`PITBOSS_HELPDESK_MAIL_QUEUE`, bound to the events exchange) into `ReplySender`.

Queue conventions in `adapters.bus_consumer.QueueConsumer`: acknowledge only after the outcome
is durable; a message that cannot be parsed, or a reply that can never be sent (the relay refused
it with 5xx, or it still could not take it after every SMTP attempt with backoff, or the ticket
has no address), goes to `<queue>.dlq` with the reason in `x-pitboss-reason`. A failure of our
own side (Cassandra down) is retried with `x-pitboss-attempts` + 1 after a growing pause, and
dead-lettered after `MAX_ATTEMPTS`. Replaying a dead letter (move it back to the queue) is safe:
the send record makes it send at most once more, under the same Message-ID.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from adapters.bus_consumer import DeadLetter, QueueConsumer
from adapters.email_outbound import SmtpUnavailable
from adapters.settings import Settings
from domain.errors import InvalidInput
from serve_apps.helpdesk_mail.gateway import ReplySender, reply_payload

ROUTING_KEY = "ticket.message_added"
PREFETCH = 16
MAX_ATTEMPTS = 8
RETRY_PAUSE_SECONDS = 1.0
REPLIES = Counter("pitboss_helpdesk_mail_replies_total", "ticket.message_added events by outcome", ["outcome"])


def dlq_name(settings: Settings) -> str:
    return f"{settings.helpdesk_mail_queue}.dlq"


class ReplyConsumer(QueueConsumer):
    label = "reply"

    def __init__(self, settings: Settings, sender: ReplySender) -> None:
        super().__init__(settings, settings.helpdesk_mail_queue, (ROUTING_KEY,), REPLIES, prefetch=PREFETCH,
                         max_attempts=MAX_ATTEMPTS, retry_pause_seconds=RETRY_PAUSE_SECONDS)
        self.sender = sender

    async def handle(self, raw: dict[str, Any]) -> str:
        try:
            payload = reply_payload(raw)
        except (ValueError, InvalidInput) as exc:
            reason = exc.detail if isinstance(exc, InvalidInput) else f"not a ticket.message_added event: {exc}"
            raise DeadLetter(reason) from exc
        try:
            sent = await self.sender.handle(payload)
        except (InvalidInput, SmtpUnavailable) as exc:
            # SmtpRejected / Undeliverable (InvalidInput), SmtpUnavailable after every attempt: the
            # send record says `failed`; an operator replays the dead letter once the cause is fixed.
            raise DeadLetter(f"{type(exc).__name__}: {exc.detail}") from exc
        return sent.outcome
