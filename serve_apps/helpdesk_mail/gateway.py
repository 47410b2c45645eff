"""The mail gateway's two halves, free of Serve so they can be driven directly:

- `InboundThreader`: the listener's callback. One accepted email -> a message on a known ticket,
  or a new email ticket. Decisions, in order:
  1. DMARC: the trusted MTA's `Authentication-Results` says dmarc=fail -> `Forbidden`; the
     listener answers 550 5.7.1 and nothing is stored. (Only the header of the configured
     authserv-id counts; without one nothing is refused, see `domain.email_threading`.)
  2. The message's own Message-ID is already indexed -> a redelivery: nothing more is done.
  3. A known thread: the first id of In-Reply-To, then References newest first, that the index
     knows; else a `[#TAG]` in the subject. Either is accepted only if the sender's address is
     one the ticket already corresponds with (its `sender_email` or an address of its thread),
     so a guessed tag or a leaked Message-ID cannot write into somebody else's ticket; a sender
     that does not match opens a new ticket instead.
  4. Known thread, ticket not closed: `add_message` (author player, public) with the quoted tail
     stripped. Closed: a new ticket tagged `follows:<old ticket id>` whose body names the old one.
  5. Otherwise a new email ticket, `sender_email` = the From address, linked to the player whose
     live profile has that address in the brand (`player_contacts` index, then the profile: see
     `serve_apps.helpdesk.contacts`) when the DMARC verdict allows trusting the From address
     (`PITBOSS_HELPDESK_MAIL_LINK_PLAYERS`); unlinked when nobody, or several players, match, or the
     lookup fails (an agent links it). A follow-up of a closed ticket keeps that ticket's player.
  Idempotent: the ticket id of a new ticket and the message id of an added message are UUIDv5 of
  the email's Message-ID, attachment ids of Message-ID + MIME part, so a retried delivery (the
  250 was lost, or a crash before the index was written) repeats the same writes. A retry of a
  new ticket keeps the player the first attempt stored, whatever the index says by then.
  Attachments go through the ticket attachment store with the domain's rules (allow-listed types,
  10 MiB, at most 10 a message); one that is refused is named in the message body instead.

- `ReplySender`: one `ticket.message_added` event -> for a public agent reply on an email ticket,
  one email to the ticket's correspondent over SMTP, threaded (`Message-ID` in our domain,
  `In-Reply-To` the newest email of the thread, `References` the thread, `[#TAG]` in the subject).
  Exactly-once as far as SMTP allows: a record per ticket message is claimed (`sending`) before
  the SMTP transaction and marked `sent` after it. A redelivered event finds `sent` and sends
  nothing. The at-least-once edge: a crash after the relay accepted the message and before `sent`
  was written leaves `sending`, and the redelivery sends again, with the same Message-ID (it is
  derived from the ticket message id), so mail clients show it once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from uuid import UUID, uuid5

from adapters.cassandra.tickets import TicketStore
from adapters.email_inbound import attachment_content
from adapters.email_outbound import SmtpSender, compose_reply
from domain.email_threading import base_subject, new_message_id, strip_quoted_reply, thread_candidates, ticket_reference
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.player_links import sender_may_be_linked
from domain.tickets import Ticket, attachment_meta, first_message_id
from schemas.email import InboundEmail, OutboundAttachment
from schemas.tickets import (
    ALLOWED_TYPES,
    MAX_ATTACHMENTS_PER_MESSAGE,
    MAX_BODY,
    MAX_SUBJECT,
    MessageCreate,
    MessagePublic,
    TicketCreate,
    TicketPublic,
)
from serve_apps.helpdesk_mail.threads import EmailThreads, short_id

log = logging.getLogger("pitboss.helpdesk.mail")

# Namespaces of the ids derived from an email's Message-ID (fixed forever: they make retries idempotent).
NS_TICKET = UUID("0c5f0f5e-3d7e-4f7a-9a51-6a1f3f2b8e01")
NS_MESSAGE = UUID("0c5f0f5e-3d7e-4f7a-9a51-6a1f3f2b8e02")
NS_ATTACHMENT = UUID("0c5f0f5e-3d7e-4f7a-9a51-6a1f3f2b8e03")
NS_REPLY = UUID("0c5f0f5e-3d7e-4f7a-9a51-6a1f3f2b8e04")
DEFAULT_CATEGORY = "general"


class TicketService(Protocol):
    """What the gateway needs of `serve_apps.helpdesk.service.HelpDesk`."""

    async def create_ticket(self, body: TicketCreate, actor: Any) -> tuple[TicketPublic, bool]: ...

    async def add_message(self, ticket_id: UUID, body: MessageCreate, actor: Any) -> MessagePublic: ...


def parse_brands(value: str) -> dict[str, str]:
    """`PITBOSS_HELPDESK_MAIL_BRANDS` ("brand:domain,...") -> {domain: brand}."""
    out: dict[str, str] = {}
    for part in value.split(","):
        brand, _, domain = part.strip().partition(":")
        if brand.strip() and domain.strip():
            out[domain.strip().lower().rstrip(".")] = brand.strip()
    if not out:
        raise ValueError("PITBOSS_HELPDESK_MAIL_BRANDS names no brand:domain pair")
    return out


def _body(text: str, notes: list[str]) -> str:
    tail = "".join(f"\n\n[{n}]" for n in notes)
    text = text.strip() or "(no text)"
    room = MAX_BODY - len(tail)
    if len(text) > room:
        marker = "\n\n[the rest of the email was cut: a message holds at most 20,000 characters]"
        text = text[: max(0, room - len(marker))].rstrip() + marker
    return (text + tail).strip()


@dataclass(frozen=True, slots=True)
class Threaded:
    """What the threader did with one email (for logs and tests)."""

    outcome: Literal["created", "added", "duplicate", "followup"]
    ticket_id: UUID
    message_id: UUID | None


class InboundThreader:
    def __init__(
        self,
        tickets: TicketService,
        store: TicketStore,
        threads: EmailThreads,
        *,
        brands: Mapping[str, str],
        actor: Callable[[InboundEmail], Any],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        resolve: Callable[[str, str], Awaitable[UUID | None]] | None = None,
        link_policy: str = "dmarc_pass",
    ) -> None:
        self.tickets = tickets
        self.store = store
        self.threads = threads
        self.brands = dict(brands)
        self.actor = actor
        self.clock = clock
        # (brand, From address) -> the one player it names, or None (serve_apps.helpdesk.contacts).
        self.resolve = resolve
        self.link_policy = link_policy

    async def __call__(self, email: InboundEmail) -> None:
        await self.thread(email)

    async def thread(self, email: InboundEmail) -> Threaded:
        auth = email.authentication
        if auth is not None and auth.dmarc == "fail":
            raise Forbidden(
                f"DMARC failed for the sender domain {email.from_address.rpartition('@')[2]} "
                f"(Authentication-Results of {auth.authserv_id})",
                field="from",
            )
        seen = await self.threads.known(email.message_id)
        if seen is not None:
            log.info("email %s already threaded into ticket %s", email.message_id, seen.ticket_id)
            return Threaded("duplicate", seen.ticket_id, seen.ticket_message_id)
        ticket = await self._known_thread(email)
        if ticket is not None and ticket.status != "closed":
            try:
                return await self._add(email, ticket)
            except Conflict as exc:
                if exc.field != "ticket_id":  # closed meanwhile: fall through to a follow-up ticket
                    raise
                ticket = await self.store.get(ticket.ticket_id)
        return await self._create(email, follows=ticket)

    async def _correspondents(self, ticket: Ticket) -> set[str]:
        found = {e.address.lower() for e in await self.threads.thread(ticket.ticket_id) if e.address}
        if ticket.sender_email:
            found.add(ticket.sender_email.lower())
        return found

    async def _sender_matches(self, ticket_id: UUID, sender: str) -> Ticket | None:
        try:
            ticket = await self.store.get(ticket_id)
        except NotFound:
            return None
        return ticket if sender.lower() in await self._correspondents(ticket) else None

    async def _known_thread(self, email: InboundEmail) -> Ticket | None:
        sender = email.from_address
        candidates = thread_candidates(email)
        for known in await self.threads.first_known(candidates) if candidates else []:
            ticket = await self._sender_matches(known.ticket_id, sender)
            if ticket is not None:
                return ticket
            log.warning("email %s answers %s of ticket %s but %s is not its correspondent",
                        email.message_id, known.message_id, known.ticket_id, sender)
        tag = ticket_reference(email.subject)
        if tag is not None:
            for ticket_id in await self.threads.tagged(tag):
                ticket = await self._sender_matches(ticket_id, sender)
                if ticket is not None:
                    return ticket
        return None

    async def _attachments(self, email: InboundEmail, ticket_id: UUID) -> tuple[list[UUID], list[str]]:
        ids: list[UUID] = []
        notes: list[str] = []
        for att in email.attachments:
            label = att.filename or f"part {att.part}"
            if att.content_type not in ALLOWED_TYPES:
                notes.append(f"attachment {label} ({att.content_type}) not kept: this file type is not accepted")
                continue
            if len(ids) >= MAX_ATTACHMENTS_PER_MESSAGE:
                notes.append(f"attachment {label} not kept: at most {MAX_ATTACHMENTS_PER_MESSAGE} per message")
                continue
            name = att.filename or f"attachment-{att.part}{ALLOWED_TYPES[att.content_type][0]}"
            attachment_id = uuid5(NS_ATTACHMENT, f"{email.message_id}/{att.part}")
            try:
                data = attachment_content(email.raw, att.part)
                meta = attachment_meta(attachment_id, ticket_id, name, att.content_type, data, self.clock())
                await self.store.put_attachment(meta, data)
            except InvalidInput as exc:
                notes.append(f"attachment {label} not kept: {exc.detail}")
                continue
            ids.append(attachment_id)
        return ids, notes

    async def _record(self, email: InboundEmail, ticket_id: UUID, message_id: UUID) -> None:
        await self.threads.record(ticket_id, email.message_id, message_id, "in", email.from_address,
                                  email.received_at)

    async def _add(self, email: InboundEmail, ticket: Ticket) -> Threaded:
        attachments, notes = await self._attachments(email, ticket.ticket_id)
        body = MessageCreate(
            message_id=uuid5(NS_MESSAGE, email.message_id),
            body=_body(strip_quoted_reply(email.text), notes),
            visibility="public",
            author_kind="player",
            attachments=attachments,
        )
        message = await self.tickets.add_message(ticket.ticket_id, body, self.actor(email))
        await self._record(email, ticket.ticket_id, message.message_id)
        log.info("email %s added to ticket %s", email.message_id, ticket.ticket_id)
        return Threaded("added", ticket.ticket_id, message.message_id)

    def _brand(self, email: InboundEmail) -> str:
        for rcpt in email.envelope_to:
            brand = self.brands.get(rcpt.rpartition("@")[2].lower())
            if brand is not None:
                return brand
        raise InvalidInput("no recipient of this message belongs to a brand's help desk", field="to")

    async def _player_of(self, email: InboundEmail, ticket_id: UUID, brand: str, follows: Ticket | None) -> UUID | None:
        """The player the new ticket belongs to, or None (see decision 5 in the module docstring)."""
        try:
            # A retried delivery: the player the first attempt stored (the ticket service refuses a
            # retry whose player differs, and the index may have changed in between).
            return (await self.store.get(ticket_id)).player_id
        except NotFound:
            pass
        if follows is not None and follows.player_id is not None:
            return follows.player_id
        auth = email.authentication
        if self.resolve is None or not sender_may_be_linked(self.link_policy, auth.dmarc if auth else None):
            return None
        try:
            player_id = await self.resolve(brand, email.from_address)
        except Exception:
            # The index or the players' shards are unreachable: the email still becomes a ticket now
            # (unlinked, an agent links it) rather than waiting at the sender's MTA.
            log.warning("player of %s not looked up for email %s", email.from_address, email.message_id, exc_info=True)
            return None
        if player_id is not None:
            log.info("email %s is from player %s", email.message_id, player_id)
        return player_id

    async def _create(self, email: InboundEmail, follows: Ticket | None) -> Threaded:
        ticket_id = uuid5(NS_TICKET, email.message_id)
        attachments, notes = await self._attachments(email, ticket_id)
        text = email.text
        tags: list[str] = []
        if follows is not None:
            # The player answered a closed ticket: a new ticket, pointing back at the old one.
            text = strip_quoted_reply(text)
            notes.insert(0, f"follow-up to the closed ticket [#{short_id(follows.ticket_id)}] {follows.ticket_id}")
            tags.append(f"follows:{follows.ticket_id}")
        subject = base_subject(email.subject)[:MAX_SUBJECT].strip() or "(no subject)"
        brand = follows.brand if follows is not None else self._brand(email)
        body = TicketCreate(
            ticket_id=ticket_id,
            player_id=await self._player_of(email, ticket_id, brand, follows),
            brand=brand,
            channel="email",
            category=follows.category if follows is not None else DEFAULT_CATEGORY,
            subject=subject,
            body=_body(text, notes),
            tags=tags,
            attachments=attachments,
            sender_email=email.from_address,
        )
        ticket, _ = await self.tickets.create_ticket(body, self.actor(email))
        first = first_message_id(ticket.ticket_id)
        await self._record(email, ticket.ticket_id, first)
        outcome: Literal["created", "followup"] = "followup" if follows is not None else "created"
        log.info("email %s opened ticket %s (%s)", email.message_id, ticket.ticket_id, outcome)
        return Threaded(outcome, ticket.ticket_id, first)


# --------------------------------------------------------------------------------------------- outbound


class Undeliverable(InvalidInput):
    """A reply that cannot be sent whatever is retried (no address, message gone): dead-lettered."""

    title = "Reply cannot be emailed"
    slug = "reply-undeliverable"


@dataclass(frozen=True, slots=True)
class _TicketTag:
    short_id: str
    subject: str


@dataclass(frozen=True, slots=True)
class Sent:
    outcome: Literal["skipped", "sent", "duplicate"]
    reason: str
    email_message_id: str | None = None


def reply_payload(body: Mapping[str, Any]) -> dict[str, Any]:
    """The `ticket.message_added` payload of a bus message (an event envelope or a bare payload)."""
    inner = body.get("payload")
    payload: dict[str, Any] = dict(inner) if isinstance(inner, dict) else dict(body)
    for key in ("ticket_id", "message_id"):
        if not isinstance(payload.get(key), str):
            raise InvalidInput(f"the event has no {key}", field=f"payload.{key}")
    UUID(payload["ticket_id"])
    UUID(payload["message_id"])
    return payload


class ReplySender:
    def __init__(
        self,
        store: TicketStore,
        threads: EmailThreads,
        smtp: SmtpSender,
        *,
        domain: str,
        from_address: str,
        from_name: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.threads = threads
        self.smtp = smtp
        self.domain = domain
        self.from_address = from_address
        self.from_name = from_name
        self.clock = clock

    def email_message_id(self, ticket_message_id: UUID) -> str:
        return new_message_id(self.domain, uuid5(NS_REPLY, str(ticket_message_id)))

    async def handle(self, payload: Mapping[str, Any]) -> Sent:
        if payload.get("visibility") != "public":
            return Sent("skipped", "internal note")
        if payload.get("author_kind") != "agent":
            return Sent("skipped", f"written by {payload.get('author_kind')}")
        if payload.get("channel") not in (None, "email"):
            return Sent("skipped", f"{payload.get('channel')} ticket")
        ticket_id, message_id = UUID(str(payload["ticket_id"])), UUID(str(payload["message_id"]))
        try:
            ticket = await self.store.get(ticket_id)
        except NotFound:
            raise Undeliverable(f"no ticket {ticket_id}", field="ticket_id") from None
        if ticket.channel != "email":
            return Sent("skipped", f"{ticket.channel} ticket")
        message = next((m for m in await self.store.messages(ticket) if m.message_id == message_id), None)
        if message is None:
            raise Undeliverable(f"ticket {ticket_id} has no message {message_id}", field="message_id")
        if message.visibility != "public" or message.author_kind != "agent":
            # The stored message decides, not the event: an internal note never leaves, whatever the bus says.
            return Sent("skipped", f"stored message is {message.visibility} by {message.author_kind}")
        thread = await self.threads.thread(ticket_id)
        recipient = ticket.sender_email or next(
            (e.address for e in reversed(thread) if e.direction == "in" and e.address), None
        )
        if not recipient:
            raise Undeliverable(f"ticket {ticket_id} has no email address to reply to", field="sender_email")
        email_id = self.email_message_id(message_id)
        now = self.clock()
        claimed, record = await self.threads.claim(message_id, ticket_id, email_id, recipient, now)
        attempts = 1
        if not claimed:
            if record.state == "sent":
                return Sent("duplicate", "already sent", record.email_message_id)
            # `sending`: a crash before the outcome was written; `failed`: replayed from the
            # dead-letter queue. Either way, send again under the same Message-ID.
            attempts = record.attempts + 1
            await self.threads.mark(message_id, "sending", attempts, record.detail, now)
        # Indexed before sending, so a player's fast answer already finds its thread.
        await self.threads.record(ticket_id, email_id, message_id, "out", recipient, message.created_at)
        parents = [e.message_id for e in thread if e.message_id != email_id]
        files = [OutboundAttachment(filename=meta.filename, content_type=meta.content_type, data=data)
                 for meta, data in [await self.store.get_attachment(ticket_id, a) for a in message.attachments]]
        email = compose_reply(
            _TicketTag(short_id(ticket_id), ticket.subject),
            domain=self.domain,
            from_address=self.from_address,
            from_name=self.from_name,
            to=[recipient],
            text=message.body,
            parent_message_ids=parents,
            attachments=files,
            unique=uuid5(NS_REPLY, str(message_id)),
        )
        try:
            result = await self.smtp.send(email)
        except Exception as exc:
            await self.threads.mark(message_id, "failed", attempts, str(exc), self.clock())
            raise
        await self.threads.mark(message_id, "sent", attempts, f"{result.attempts} SMTP attempt(s)", self.clock())
        log.info("reply %s of ticket %s sent as %s to %s", message_id, ticket_id, email.message_id, recipient)
        return Sent("sent", "sent", email.message_id)
