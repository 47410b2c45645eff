"""Help-desk inbound email: an SMTP listener (aiosmtpd) that turns each accepted message into an
`InboundEmail` and hands it to the ticket service's callback.

It is meant to sit behind the organisation's MTA (Postfix, Exim, a cloud relay), which receives
the mail from the internet, checks SPF/DKIM/DMARC, writes its `Authentication-Results` header and
relays to this listener. The listener binds to loopback by default.

SMTP answers (the sending MTA acts on them):
- MAIL FROM with a SIZE above `max_message_bytes`, or DATA longer than it: 552 (aiosmtpd).
- RCPT TO outside `accepted_domains`: 550 5.7.1; a syntactically bad address: 553 5.1.3;
  more than `max_recipients`: 452 4.5.3 (the sender retries the rest later, RFC 5321 4.5.3.1.8).
- A message that cannot be read as a ticket message (no or several From headers, a From that is
  not one address, duplicated threading headers, MIME nested too deep or in too many parts):
  554 5.6.0 with the reason. Nothing reaches the callback. An unexpected parser failure (a bug,
  not a known defect of the message) answers 451 instead, so the message waits at the sender.
- A machine-written message (`domain.email_threading.auto_reply_reason`): 250, and by default it
  is dropped here (logged) so it can never open a ticket nor draw a reply; bouncing it instead
  would itself feed a loop. `deliver_auto_replies=True` hands it on, flagged.
- The callback raises or does not finish in `callback_timeout_seconds`: 451 4.3.0, so the
  sending MTA keeps the message and retries. Except `InvalidInput`/`Forbidden` from the callback:
  a decision that a retry would not change, answered 550 5.7.1 with the reason.
- Otherwise 250 once the callback returned, i.e. after the ticket service made it durable.

Never lost, never silently twice: the message is acknowledged only after the callback returned.
If the 250 itself is lost (connection cut), the sender delivers the same message again; the ticket
service must apply a Message-ID it already stored as a no-op (idempotency by `message_id`; a
message without one gets `<sha256-of-bytes@pitboss.invalid>`, stable across retries of the same
bytes).

Not verified here: SPF, DKIM, DMARC (copied from the trusted MTA header, see `schemas.email`),
the display name, the Date header. Recorded as signals: `envelope_mismatch` (envelope MAIL FROM
is not the header From: normal for mailing lists, forwarding and bulk senders, suspicious on a
plain personal mail) and `authentication`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import ValidationError

from domain.email_threading import (
    auto_reply_reason,
    bound_references,
    html_to_text,
    parse_authentication_results,
    parse_message_ids,
)
from domain.errors import Forbidden, InvalidInput, NotFound
from schemas.email import EmailAttachment, InboundEmail, normalize_address

log = logging.getLogger("pitboss.email.inbound")

OnMessage = Callable[[InboundEmail], Awaitable[None]]

MIB = 1024 * 1024
MAX_DEPTH = 20
MAX_PARTS = 500
MAX_REFERENCES_KEPT = 100
_UNIQUE_HEADERS = ("from", "sender", "message-id", "in-reply-to", "references", "subject", "date")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


class MalformedEmail(InvalidInput):
    """A received message that cannot be read as a help-desk message; nothing was changed."""

    title = "Malformed email"
    slug = "malformed-email"


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- Parsing (no network: also used for messages fetched over IMAP later) ------------------


def _walk(part: EmailMessage, path: str, depth: int, count: list[int]) -> Iterator[tuple[str, EmailMessage]]:
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_PARTS:
        raise MalformedEmail("the MIME structure is nested too deeply or has too many parts", field="body")
    # A forwarded message (message/rfc822) is one attachment, not parts of this message.
    if part.get_content_maintype() == "multipart":
        for index, sub in enumerate(part.iter_parts(), 1):
            yield from _walk(cast(EmailMessage, sub), f"{path}.{index}" if path else str(index), depth + 1, count)
    else:
        yield path or "1", part


def _part_bytes(part: EmailMessage) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload(0)
        return cast(EmailMessage, inner).as_bytes() if inner is not None else b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _text_of(part: EmailMessage) -> str:
    try:
        text = part.get_content()
    except (LookupError, UnicodeError):  # unknown or lying charset: keep what can be read
        text = _part_bytes(part).decode("utf-8", errors="replace")
    return _CONTROL.sub("", str(text).replace("\r\n", "\n").replace("\r", "\n"))


def _filename(part: EmailMessage) -> str | None:
    try:
        name = part.get_filename()
    except (ValueError, LookupError, UnicodeError):
        return None
    if not name:
        return None
    # Only the last path component, printable, bounded: it is shown and may become a file name.
    name = _CONTROL.sub("", name.replace("\r", "").replace("\n", "")).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or None


def _addresses(msg: EmailMessage, name: str) -> list[str]:
    out: list[str] = []
    for header in msg.get_all(name) or []:
        for address in getattr(header, "addresses", ()):
            try:
                normal = normalize_address(address.addr_spec)
            except ValueError:
                continue  # one broken Cc must not refuse a player's message
            if normal not in out:
                out.append(normal)
    return out


def _one_line(value: object, limit: int) -> str:
    return _CONTROL.sub("", " ".join(str(value).split()))[:limit]


def _envelope_sender(value: str | None) -> str:
    value = (value or "").strip()
    return "" if value in ("", "<>") else value


def parse_inbound(
    raw: bytes,
    *,
    envelope_from: str,
    envelope_to: Iterable[str],
    received_at: datetime,
    peer: str | None = None,
    trusted_authserv_id: str | None = None,
) -> InboundEmail:
    """Read one received message; MalformedEmail (422, `field` names the header) when it cannot be."""
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        return _build(
            msg, raw, _envelope_sender(envelope_from), list(envelope_to), received_at, peer, trusted_authserv_id
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise MalformedEmail(f"{where or 'message'}: {first['msg']}", field=where) from None


def _build(
    msg: EmailMessage,
    raw: bytes,
    envelope_from: str,
    envelope_to: list[str],
    received_at: datetime,
    peer: str | None,
    trusted_authserv_id: str | None,
) -> InboundEmail:
    for name in _UNIQUE_HEADERS:
        if len(msg.get_all(name) or []) > 1:
            raise MalformedEmail(f"the message has more than one {name} header", field=name)
    from_header = msg.get("From")
    if from_header is None:
        raise MalformedEmail("the message has no From header", field="from")
    senders = list(getattr(from_header, "addresses", ()))
    if len(senders) != 1:
        raise MalformedEmail("the From header must name exactly one address", field="from")
    try:
        from_address = normalize_address(senders[0].addr_spec)
    except ValueError as exc:
        raise MalformedEmail(f"the From address is not valid: {exc}", field="from") from None
    from_name = _one_line(senders[0].display_name, 256) or None

    digest = hashlib.sha256(raw).hexdigest()
    message_ids = parse_message_ids(str(msg.get("Message-ID") or ""))
    synthesized = not message_ids
    message_id = message_ids[0] if message_ids else f"<{digest}@pitboss.invalid>"

    date: datetime | None = None
    date_header = msg.get("Date")
    if date_header is not None:
        parsed = getattr(date_header, "datetime", None)
        if isinstance(parsed, datetime):
            # "-0000" (zone unknown) parses naive: RFC 5322 says it is UTC.
            date = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    body_parts = {id(p) for p in (plain, html) if p is not None}
    text, source = "", "none"
    if plain is not None:
        text, source = _text_of(cast(EmailMessage, plain)), "plain"
    elif html is not None:
        text, source = html_to_text(_text_of(cast(EmailMessage, html))), "html"

    attachments: list[EmailAttachment] = []
    for path, part in _walk(msg, "", 0, [0]):
        if id(part) in body_parts:
            continue
        filename = _filename(part)
        disposition = part.get_content_disposition()
        content_type = part.get_content_type().lower()
        if content_type == "text/plain" and filename is None and disposition != "attachment" and source == "plain":
            # Some clients split one body around an inline image: keep the text in the body.
            text = f"{text}\n{_text_of(part)}"
            continue
        data = _part_bytes(part)
        attachments.append(
            EmailAttachment(
                part=path,
                filename=filename,
                content_type=content_type if _CONTENT_TYPE.match(content_type) else "application/octet-stream",
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                inline=disposition == "inline",
            )
        )

    headers = [(name, str(value)) for name, value in msg.items()]
    reason = auto_reply_reason(headers, envelope_from=envelope_from)
    authentication = (
        parse_authentication_results([str(v) for v in msg.get_all("Authentication-Results") or []], trusted_authserv_id)
        if trusted_authserv_id
        else None
    )
    mismatch = bool(envelope_from) and envelope_from.lower() != from_address.lower()
    return InboundEmail(
        message_id=message_id,
        message_id_synthesized=synthesized,
        in_reply_to=parse_message_ids(str(msg.get("In-Reply-To") or ""))[:64],
        references=bound_references(parse_message_ids(str(msg.get("References") or "")), MAX_REFERENCES_KEPT),
        from_address=from_address,
        from_name=from_name,
        reply_to=_addresses(msg, "Reply-To")[:64],
        to=_addresses(msg, "To")[:1024],
        cc=_addresses(msg, "Cc")[:1024],
        subject=_one_line(msg.get("Subject") or "", 2000),
        text=text.strip("\n"),
        text_source=source,
        attachments=attachments,
        date=date,
        received_at=received_at.astimezone(UTC),
        envelope_from=envelope_from,
        envelope_to=envelope_to,
        envelope_mismatch=mismatch,
        peer=peer,
        auto_reply=reason is not None,
        auto_reply_reason=reason,
        authentication=authentication,
        size=len(raw),
        sha256=digest,
        raw=raw,
    )


def attachment_content(raw: bytes, part: str) -> bytes:
    """The decoded bytes of the attachment at MIME `part` ("2", "2.1") of a raw message."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    for path, leaf in _walk(msg, "", 0, [0]):
        if path == part:
            return _part_bytes(leaf)
    raise NotFound(f"the message has no part {part}", field="part")


# --- The SMTP listener --------------------------------------------------------------------


def _reply_text(detail: str) -> str:
    # An SMTP reply is one ASCII line.
    return _one_line(detail.encode("ascii", "replace").decode("ascii"), 200)


class _Handler:
    def __init__(self, server: InboundSmtpServer) -> None:
        self.server = server

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        sender = _envelope_sender(address)
        if sender:
            try:
                sender = normalize_address(sender)
            except ValueError:
                return "553 5.1.7 sender address is not valid"
        envelope.mail_from = sender or "<>"
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        try:
            recipient = normalize_address(address)
        except ValueError:
            return "553 5.1.3 recipient address is not valid"
        if recipient.rpartition("@")[2] not in self.server.accepted_domains:
            return "550 5.7.1 recipient domain not accepted here"
        if len(envelope.rcpt_tos) >= self.server.max_recipients:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(recipient)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self.server.receive(
            envelope.original_content or b"",
            envelope_from=envelope.mail_from or "",
            envelope_to=list(envelope.rcpt_tos),
            peer=str(session.peer[0]) if isinstance(session.peer, tuple) and session.peer else None,
        )


class InboundSmtpServer:
    """The SMTP listener. Runs on the caller's event loop (so the callback shares the loop of the
    ticket service client); `port=0` picks a free port, read back from `.port` after `start()`."""

    def __init__(
        self,
        on_message: OnMessage,
        *,
        accepted_domains: Iterable[str],
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str | None = None,
        max_message_bytes: int = 10 * MIB,
        max_recipients: int = 50,
        trusted_authserv_id: str | None = None,
        deliver_auto_replies: bool = False,
        callback_timeout_seconds: float = 120.0,
        smtp_timeout_seconds: float = 300.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        domains = set()
        for domain in accepted_domains:
            domains.add(normalize_address(f"postmaster@{domain}").rpartition("@")[2])
        if not domains:
            raise ValueError("accepted_domains must name at least one domain")
        if max_message_bytes <= 0 or max_recipients <= 0:
            raise ValueError("max_message_bytes and max_recipients must be positive")
        self.on_message = on_message
        self.accepted_domains = frozenset(domains)
        self.host = host
        self._port = port
        self.hostname = hostname
        self.max_message_bytes = max_message_bytes
        self.max_recipients = max_recipients
        self.trusted_authserv_id = trusted_authserv_id
        self.deliver_auto_replies = deliver_auto_replies
        self.callback_timeout_seconds = callback_timeout_seconds
        self.smtp_timeout_seconds = smtp_timeout_seconds
        self.clock = clock
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    def _protocol(self) -> SMTP:
        return SMTP(
            _Handler(self),
            data_size_limit=self.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.hostname,
            ident="Pitboss help desk",
            timeout=self.smtp_timeout_seconds,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host=self.host, port=self._port)
        log.info("smtp listener on %s:%s for %s", self.host, self.port, ", ".join(sorted(self.accepted_domains)))

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        await server.wait_closed()

    async def __aenter__(self) -> InboundSmtpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def receive(self, raw: bytes, *, envelope_from: str, envelope_to: list[str], peer: str | None) -> str:
        """One message after DATA: the SMTP reply to send back."""
        try:
            # Parsing a large message takes long enough to stall other sessions: do it off the loop.
            email = await asyncio.to_thread(
                parse_inbound,
                raw,
                envelope_from=envelope_from,
                envelope_to=envelope_to,
                received_at=self.clock(),
                peer=peer,
                trusted_authserv_id=self.trusted_authserv_id,
            )
        except InvalidInput as exc:
            log.warning("smtp rejected a malformed message from %s (%s): %s", envelope_from, peer, exc.detail)
            return f"554 5.6.0 message rejected: {_reply_text(exc.detail)}"
        except Exception:
            # Not a known defect of the message but a failure of the parser or of this code: keep
            # the message at the sender (it retries) rather than bounce a mail that may be fine.
            log.exception("smtp could not parse a message from %s (%s); answered 451", envelope_from, peer)
            return "451 4.3.0 temporary failure, please retry"
        if email.auto_reply and not self.deliver_auto_replies:
            log.info("smtp dropped automatic message %s (%s)", email.message_id, email.auto_reply_reason)
            return "250 2.0.0 accepted (automatic message, no ticket)"
        try:
            await asyncio.wait_for(self.on_message(email), timeout=self.callback_timeout_seconds)
        except (InvalidInput, Forbidden) as exc:
            log.warning("smtp refused message %s: %s", email.message_id, exc.detail)
            return f"550 5.7.1 message refused: {_reply_text(exc.detail)}"
        except Exception:
            # The sending MTA keeps the message and retries: nothing is lost.
            log.exception("smtp callback failed for message %s; answered 451", email.message_id)
            return "451 4.3.0 temporary failure, please retry"
        log.info("smtp accepted message %s from %s", email.message_id, email.from_address)
        return f"250 2.0.0 accepted {_reply_text(email.message_id)}"
