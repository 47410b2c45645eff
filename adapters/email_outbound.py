"""Help-desk outbound email: replies sent over SMTP with the threading headers of the domain.

Transport: the stdlib `smtplib` run in a worker thread (`asyncio.to_thread`); aiosmtplib is not a
dependency of the project. One connection per message: replies are few (agents type them), so a
pool would add state without a measurable gain.

Delivery outcome per recipient (RFC 5321 reply classes):
- 2xx: delivered to the relay; removed from the pending set.
- 4xx (or the connection failing, timing out, or dropping): retried, only for the recipients
  still pending, up to `max_attempts` with exponential backoff and jitter; a message accepted for
  some recipients is never sent to them again.
- 5xx: not retried. When no recipient accepted it, `SmtpRejected` (422) with the reply code and
  text; when some did, the refused ones are in `SendResult.refused`.
When attempts are exhausted with recipients still pending: `SmtpUnavailable` (503); the caller
keeps the reply queued and tries again later with the same `message_id` (a relay that got it
twice shows it as one thread message in the player's client, since the Message-ID is the same).
"""

from __future__ import annotations

import asyncio
import logging
import random
import smtplib
import ssl
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from domain.email_threading import TicketLike, new_message_id, parse_message_ids, reply_headers
from domain.errors import InvalidInput, Unavailable
from schemas.email import OutboundAttachment, OutboundEmail

log = logging.getLogger("pitboss.email.outbound")


class SmtpRejected(InvalidInput):
    """The relay refused the message permanently (5xx): retrying will not help."""

    title = "Email rejected"
    slug = "email-rejected"


class SmtpUnavailable(Unavailable):
    """The relay could not take the message now (4xx, connection failure) after every attempt."""

    title = "Email relay unavailable"
    slug = "email-unavailable"


@dataclass(frozen=True)
class SendResult:
    message_id: str
    accepted: tuple[str, ...]
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)  # permanent (5xx) refusals
    attempts: int = 1


def _address(address: str, name: str | None = None) -> Address:
    local, _, domain = address.rpartition("@")
    return Address(display_name=name or "", username=local, domain=domain)


def build_message(email: OutboundEmail, *, date: datetime | None = None) -> EmailMessage:
    """The MIME message of an `OutboundEmail` (UTF-8 text, attachments, threading headers)."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = _address(email.from_address, email.from_name)
    msg["To"] = [_address(a) for a in email.to]
    if email.cc:
        msg["Cc"] = [_address(a) for a in email.cc]
    if email.reply_to:
        msg["Reply-To"] = _address(email.reply_to)
    msg["Subject"] = email.subject
    msg["Date"] = format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    msg["Message-ID"] = email.message_id
    if email.in_reply_to:
        msg["In-Reply-To"] = email.in_reply_to
    if email.references:
        msg["References"] = " ".join(email.references)
    if email.auto_submitted:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(email.text, subtype="plain", charset="utf-8")
    for attachment in email.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        msg.add_attachment(attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename)
    return msg


def compose_reply(
    ticket: TicketLike,
    *,
    domain: str,
    from_address: str,
    to: Sequence[str],
    text: str,
    parent_message_ids: Sequence[str],
    from_name: str | None = None,
    cc: Sequence[str] = (),
    attachments: Sequence[OutboundAttachment] = (),
    unique: uuid.UUID | None = None,
) -> OutboundEmail:
    """An agent's reply on a ticket, threaded under `parent_message_ids` (oldest first)."""
    message_id = new_message_id(domain, unique or uuid.uuid4())
    headers = reply_headers(ticket, message_id, parent_message_ids)
    return OutboundEmail(
        message_id=headers["Message-ID"],
        from_address=from_address,
        from_name=from_name,
        to=list(to),
        cc=list(cc),
        subject=headers["Subject"],
        text=text,
        in_reply_to=headers.get("In-Reply-To"),
        references=parse_message_ids(headers.get("References")),
        attachments=list(attachments),
    )


class SmtpSender:
    """Sends `OutboundEmail`s through one relay (the organisation's MTA or a provider's SMTP)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        implicit_tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        envelope_from: str | None = None,
        local_hostname: str | None = None,
        timeout_seconds: float = 30.0,
        max_attempts: int = 4,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if starttls and implicit_tls:
            raise ValueError("choose STARTTLS or implicit TLS, not both")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.tls_context = tls_context
        self.envelope_from = envelope_from
        self.local_hostname = local_hostname
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._sleep = sleep

    def _deliver(self, msg: EmailMessage, sender: str, recipients: list[str]) -> dict[str, tuple[int, bytes]]:
        """One SMTP transaction (blocking): the recipients refused; raises smtplib errors."""
        context = self.tls_context or ssl.create_default_context()
        client: smtplib.SMTP
        if self.implicit_tls:
            client = smtplib.SMTP_SSL(
                self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout_seconds, context=context
            )
        else:
            client = smtplib.SMTP(
                self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout_seconds
            )
        with client:
            client.ehlo()
            if self.starttls:
                client.starttls(context=context)
                client.ehlo()
            if self.username:
                client.login(self.username, self.password or "")
            return client.send_message(msg, from_addr=sender, to_addrs=recipients)

    def _backoff(self, attempt: int) -> float:
        delay: float = min(self.max_backoff_seconds, self.backoff_seconds * 2.0 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)  # jitter: replies queued together do not retry together

    async def send(self, email: OutboundEmail) -> SendResult:
        msg = build_message(email)
        sender = self.envelope_from or email.from_address
        pending = list(dict.fromkeys([*email.to, *email.cc]))
        accepted: list[str] = []
        refused: dict[str, tuple[int, str]] = {}
        last: tuple[int, str] = (0, "")
        attempt = 0
        while pending and attempt < self.max_attempts:
            attempt += 1
            if attempt > 1:
                await self._sleep(self._backoff(attempt - 1))
            try:
                failed = await asyncio.to_thread(self._deliver, msg, sender, pending)
            except smtplib.SMTPRecipientsRefused as exc:
                failed = exc.recipients
            except smtplib.SMTPResponseException as exc:  # sender refused, data refused, auth, HELO
                last = (exc.smtp_code, _text(exc.smtp_error))
                if 500 <= exc.smtp_code < 600:
                    raise SmtpRejected(
                        f"the mail relay refused the message: {exc.smtp_code} {last[1]}",
                        extra={"code": exc.smtp_code, "reply": last[1], "message_id": email.message_id},
                    ) from None
                log.warning("smtp relay answered %s for %s (attempt %s)", exc.smtp_code, email.message_id, attempt)
                continue
            except (smtplib.SMTPException, OSError) as exc:  # connection refused, timeout, dropped
                last = (0, f"{type(exc).__name__}: {exc}")
                log.warning("smtp relay unreachable for %s (attempt %s): %s", email.message_id, attempt, last[1])
                continue
            still: list[str] = []
            for rcpt in pending:
                if rcpt not in failed:
                    accepted.append(rcpt)
                    continue
                code, reply = failed[rcpt][0], _text(failed[rcpt][1])
                if 500 <= code < 600:
                    refused[rcpt] = (code, reply)
                else:
                    still.append(rcpt)
                    last = (code, reply)
            pending = still
        if pending:
            raise SmtpUnavailable(
                f"the mail relay did not take the message after {attempt} attempts: {last[0]} {last[1]}".strip(),
                extra={"message_id": email.message_id, "accepted": accepted, "pending": pending, "refused": refused},
            )
        if not accepted:
            first = next(iter(refused.values()))
            raise SmtpRejected(
                f"the mail relay refused every recipient: {first[0]} {first[1]}",
                field="to",
                extra={"message_id": email.message_id, "refused": refused},
            )
        log.info("smtp sent %s to %s recipient(s) in %s attempt(s)", email.message_id, len(accepted), attempt)
        return SendResult(message_id=email.message_id, accepted=tuple(accepted), refused=refused, attempts=attempt)


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())[:300]
