"""Help-desk ticket rules: the status machine, what each command does, and the SLA events it causes.

Pure: no IO, the clock is passed in. `apply(ticket, command, now)` returns the new ticket and the
events, past tense, in order: the ticket's own events (TicketCreated, MessageAdded,
StatusChanged, ...) interleaved with the `SlaEvent`s they cause, for `domain.sla`.

Statuses and who moves them:

    new ──> open ──> pending ──> solved ──> closed (final)
      │      ^  │      ^  │        │ ^
      │      │  └──> on_hold ──────┘ │
      └──────┴──────── (any active) ─┘
      solved ──> open (reopened)

- Agents move a ticket between new, open, pending (waiting on the player), on_hold (waiting on
  someone else) and solved; never back to new; closed only from solved. The scheduler closes a
  ticket `days` after it was solved (`due_to_close`). Closed is absorbing: every command on a
  closed ticket is refused (Conflict, field "ticket_id") and nothing changes.
- A public agent reply moves a new ticket to open and is a response (SLA `responded`).
- A player's message: pending -> open (the wait was on them: `resumed`), solved -> open
  (`reopened`), then `player_replied`. On hold stays on hold (the wait is on a third party; the
  SLA records the message while paused).
- An internal note changes neither status nor SLA. A player cannot write internal notes.
- SLA clock follows status: new/open running, pending/on_hold paused, solved/closed solved.
- Idempotency: a create with a ticket id already applied, a message whose id the ticket
  already holds, or an update that changes nothing returns the ticket unchanged and no events.
- Every change bumps `version` by one; SLA event ids are `<ticket_id>:<version>:<kind>`, so the
  same stored change always yields the same ids (a republished event is ignored by the clock).
- Timestamps are truncated to milliseconds (what Cassandra stores), so a stored ticket equals
  the ticket the rules returned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid5

from pydantic import ValidationError

from domain.errors import Conflict, InvalidInput
from schemas.helpdesk_sla import SlaEvent, SlaEventKind
from schemas.tickets import (
    MAX_ATTACHMENT_BYTES,
    MAX_TAGS,
    AttachmentMeta,
    AuthorKind,
    Channel,
    MessageCreate,
    MessagePublic,
    Priority,
    Status,
    TicketCreate,
    TicketPublic,
    TicketUpdate,
    Visibility,
)

ACTIVE: frozenset[Status] = frozenset({"new", "open", "pending", "on_hold"})
WAITING: frozenset[Status] = frozenset({"pending", "on_hold"})
# Agent-driven moves (a player's message and the scheduler use the same table).
TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    "new": frozenset({"open", "pending", "on_hold", "solved"}),
    "open": frozenset({"pending", "on_hold", "solved"}),
    "pending": frozenset({"open", "on_hold", "solved"}),
    "on_hold": frozenset({"open", "pending", "solved"}),
    "solved": frozenset({"open", "closed"}),
    "closed": frozenset(),
}
CLOCK_OF_STATUS: Mapping[Status, str] = {
    "new": "running", "open": "running", "pending": "paused", "on_hold": "paused",
    "solved": "solved", "closed": "solved",
}
_FIRST_MESSAGE = UUID("6f0c6c2e-4b1e-4d0a-9d43-1b7d1c0f7a11")  # namespace of first-message ids


def first_message_id(ticket_id: UUID) -> UUID:
    """The id of the message a ticket is created with (stable, so a retried create repeats it)."""
    return uuid5(_FIRST_MESSAGE, str(ticket_id))


def _ms(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput("the clock must be timezone-aware", field="now")
    now = now.astimezone(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# ---------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Ticket:
    ticket_id: UUID
    player_id: UUID | None
    brand: str
    channel: Channel
    category: str
    priority: Priority
    status: Status
    subject: str
    language: str
    created_at: datetime
    updated_at: datetime
    version: int = 1
    team: str | None = None
    assignee: str | None = None
    tags: tuple[str, ...] = ()
    first_responded_at: datetime | None = None
    solved_at: datetime | None = None
    closed_at: datetime | None = None
    sender_email: str | None = None
    # message id -> when it was added: idempotency, and where a retry finds the message's row.
    messages: Mapping[UUID, datetime] = field(default_factory=dict)

    def public(self) -> TicketPublic:
        return TicketPublic(
            ticket_id=self.ticket_id, player_id=self.player_id, brand=self.brand, channel=self.channel,
            category=self.category, priority=self.priority, status=self.status, subject=self.subject,
            language=self.language, team=self.team, assignee=self.assignee, tags=list(self.tags),
            version=self.version, created_at=self.created_at, updated_at=self.updated_at,
            first_responded_at=self.first_responded_at, solved_at=self.solved_at, closed_at=self.closed_at,
            message_count=len(self.messages), sender_email=self.sender_email,
        )


# ---------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class CreateTicket:
    body: TicketCreate
    actor: str | None = None  # the operator who created it (phone, dashboard); None for the player or a channel


@dataclass(frozen=True, slots=True)
class AddMessage:
    body: MessageCreate
    actor: str | None = None  # operator id for an agent, player id for a player, service name for system


@dataclass(frozen=True, slots=True)
class UpdateTicket:
    body: TicketUpdate
    actor: str


@dataclass(frozen=True, slots=True)
class CloseSolved:
    """The scheduler's close of a ticket solved long enough ago (see `due_to_close`)."""

    days: int
    actor: str = "system:auto-close"


Command = CreateTicket | AddMessage | UpdateTicket | CloseSolved


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class TicketCreated:
    ticket_id: UUID
    at: datetime
    actor: str | None
    ticket: TicketPublic
    message: MessagePublic


@dataclass(frozen=True, slots=True)
class MessageAdded:
    ticket_id: UUID
    at: datetime
    actor: str | None
    message: MessagePublic


@dataclass(frozen=True, slots=True)
class StatusChanged:
    ticket_id: UUID
    at: datetime
    actor: str | None
    old: Status
    new: Status


@dataclass(frozen=True, slots=True)
class Assigned:
    ticket_id: UUID
    at: datetime
    actor: str | None
    team: str | None
    assignee: str | None
    # Lets a consumer undo what it keyed by the old assignee (an agent's open chats) without a read.
    previous_assignee: str | None = None


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    ticket_id: UUID
    at: datetime
    actor: str | None
    old: Priority
    new: Priority


@dataclass(frozen=True, slots=True)
class CategoryChanged:
    ticket_id: UUID
    at: datetime
    actor: str | None
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class TagsChanged:
    ticket_id: UUID
    at: datetime
    actor: str | None
    added: tuple[str, ...]
    removed: tuple[str, ...]


TicketEvent = TicketCreated | MessageAdded | StatusChanged | Assigned | PriorityChanged | CategoryChanged | TagsChanged
Event = TicketEvent | SlaEvent


def sla_events(events: Sequence[Event]) -> list[SlaEvent]:
    return [e for e in events if isinstance(e, SlaEvent)]


def ticket_events(events: Sequence[Event]) -> list[TicketEvent]:
    return [e for e in events if not isinstance(e, SlaEvent)]


def message_of(events: Sequence[Event]) -> MessagePublic | None:
    """The message a create or add-message command stored (None for other commands or a replay)."""
    for e in events:
        if isinstance(e, TicketCreated | MessageAdded):
            return e.message
    return None


# ---------------------------------------------------------------------------- rules


class _Changes:
    """Collects the events of one command; SLA ids are taken from the ticket's next version."""

    def __init__(self, ticket_id: UUID, version: int, at: datetime) -> None:
        self.ticket_id, self.version, self.at = ticket_id, version, at
        self.events: list[Event] = []

    def sla(self, kind: SlaEventKind) -> None:
        self.events.append(SlaEvent(event_id=f"{self.ticket_id}:{self.version}:{kind}", kind=kind, at=self.at))

    def add(self, event: TicketEvent) -> None:
        self.events.append(event)


def _closed(ticket: Ticket) -> Conflict:
    return Conflict(f"ticket {ticket.ticket_id} is closed: open a new ticket instead", field="ticket_id")


def _move(ticket: Ticket, new: Status, ch: _Changes, actor: str | None) -> Ticket:
    """Change status, emitting StatusChanged and the SLA event(s) the move implies."""
    old = ticket.status
    if new == old:
        return ticket
    if new not in TRANSITIONS[old]:
        raise Conflict(f"a {old} ticket cannot become {new}", field="status")
    ch.add(StatusChanged(ticket.ticket_id, ch.at, actor, old, new))
    if old == "solved" and new == "open":
        ch.sla("reopened")
    elif new in WAITING and old not in WAITING:
        ch.sla("paused")
    elif new == "open" and old in WAITING:
        ch.sla("resumed")
    elif new == "solved":
        ch.sla("solved")
    # new -> open, pending <-> on_hold, solved -> closed: the clock's state does not change.
    return replace(
        ticket, status=new,
        solved_at=ch.at if new == "solved" else (None if old == "solved" and new == "open" else ticket.solved_at),
        closed_at=ch.at if new == "closed" else ticket.closed_at,
    )


def _create(cmd: CreateTicket, at: datetime) -> tuple[Ticket, tuple[Event, ...]]:
    b = cmd.body
    if b.player_id is None and b.channel != "email":
        raise InvalidInput("a ticket names its player; only an inbound email may come from an unknown sender",
                           field="player_id")
    mid = first_message_id(b.ticket_id)
    ticket = Ticket(
        ticket_id=b.ticket_id, player_id=b.player_id, brand=b.brand, channel=b.channel, category=b.category,
        priority=b.priority, status="new", subject=b.subject, language=b.language, created_at=at, updated_at=at,
        tags=tuple(b.tags), sender_email=b.sender_email if b.player_id is None else None, messages={mid: at},
    )
    message = MessagePublic(
        message_id=mid, ticket_id=b.ticket_id, author_kind="player" if cmd.actor is None else "agent",
        author_id=str(b.player_id) if cmd.actor is None and b.player_id else cmd.actor, visibility="public",
        body=b.body, attachments=list(b.attachments), created_at=at,
    )
    ch = _Changes(b.ticket_id, 1, at)
    ch.add(TicketCreated(b.ticket_id, at, cmd.actor, ticket.public(), message))
    ch.sla("started")
    return ticket, tuple(ch.events)


def _message(ticket: Ticket, cmd: AddMessage, ch: _Changes) -> Ticket:
    b = cmd.body
    kind: AuthorKind = b.author_kind
    visibility: Visibility = b.visibility
    if kind == "player" and visibility == "internal":
        raise InvalidInput("a player's message is public", field="visibility")
    at = ch.at
    message = MessagePublic(
        message_id=b.message_id, ticket_id=ticket.ticket_id, author_kind=kind, author_id=cmd.actor,
        visibility=visibility, body=b.body, attachments=list(b.attachments), created_at=at,
    )
    t = replace(ticket, messages={**ticket.messages, b.message_id: at})
    ch.add(MessageAdded(ticket.ticket_id, at, cmd.actor, message))
    if visibility == "internal" or kind == "system":
        return t  # notes and automatic messages move neither status nor SLA
    if kind == "agent":
        if t.status == "new":
            t = _move(t, "open", ch, cmd.actor)
        ch.sla("responded")
        return replace(t, first_responded_at=t.first_responded_at or at)
    # the player
    if t.status in ("pending", "solved"):
        t = _move(t, "open", ch, cmd.actor)
    ch.sla("player_replied")
    return t


def _update(ticket: Ticket, cmd: UpdateTicket, ch: _Changes) -> Ticket:
    b, actor, t = cmd.body, cmd.actor, ticket
    if b.version is not None and b.version != ticket.version:
        raise Conflict(f"ticket {ticket.ticket_id} changed (version {ticket.version}, you saw {b.version}): "
                       "reload it", field="version")
    if b.priority is not None and b.priority != t.priority:
        ch.add(PriorityChanged(t.ticket_id, ch.at, actor, t.priority, b.priority))
        t = replace(t, priority=b.priority)
    if b.category is not None and b.category != t.category:
        ch.add(CategoryChanged(t.ticket_id, ch.at, actor, t.category, b.category))
        t = replace(t, category=b.category)
    team = b.team if b.team is not None else t.team
    assignee = b.assignee if "assignee" in b.model_fields_set else t.assignee
    if (team, assignee) != (t.team, t.assignee):
        ch.add(Assigned(t.ticket_id, ch.at, actor, team, assignee, t.assignee))
        t = replace(t, team=team, assignee=assignee)
    both = set(b.tags_add) & set(b.tags_remove)
    if both:
        raise InvalidInput(f"tag {sorted(both)[0]} is both added and removed", field="tags_add")
    added = tuple(x for x in b.tags_add if x not in t.tags)
    removed = tuple(x for x in b.tags_remove if x in t.tags)
    if added or removed:
        tags = tuple(x for x in t.tags if x not in removed) + added
        if len(tags) > MAX_TAGS:
            raise InvalidInput(f"a ticket has at most {MAX_TAGS} tags", field="tags_add")
        ch.add(TagsChanged(t.ticket_id, ch.at, actor, added, removed))
        t = replace(t, tags=tags)
    if b.status is not None:
        if b.status == "closed" and t.status != "closed":
            raise Conflict("a ticket is closed by the scheduler after it has been solved", field="status")
        t = _move(t, b.status, ch, actor)
    return t


def apply(ticket: Ticket | None, command: Command, now: datetime) -> tuple[Ticket, tuple[Event, ...]]:
    """The ticket after `command` and the events it caused (none for a replay or a no-op).

    `ticket` is None only for a create. Refusals raise before anything is returned, so a refused
    command changes nothing: NotFound is the caller's (it read nothing), Conflict for the state
    (closed, a move not allowed, a stale version), InvalidInput for the request."""
    at = _ms(now)
    if isinstance(command, CreateTicket):
        if ticket is not None:
            if ticket.ticket_id != command.body.ticket_id:
                raise InvalidInput("a create applies to no ticket or to the ticket of its id", field="ticket_id")
            return ticket, ()  # a retried create: the first answer
        return _create(command, at)
    if ticket is None:
        raise InvalidInput("only a create applies to no ticket", field="ticket_id")
    if isinstance(command, AddMessage) and command.body.message_id in ticket.messages:
        return ticket, ()
    if ticket.status == "closed":
        raise _closed(ticket)
    if at < ticket.updated_at:
        at = ticket.updated_at  # a clock behind the last change must not reorder the SLA stream
    ch = _Changes(ticket.ticket_id, ticket.version + 1, at)
    if isinstance(command, AddMessage):
        new = _message(ticket, command, ch)
    elif isinstance(command, UpdateTicket):
        new = _update(ticket, command, ch)
    else:
        if not due_to_close(ticket, at, command.days):
            raise Conflict(f"ticket {ticket.ticket_id} is not due to close", field="status")
        new = _move(ticket, "closed", ch, command.actor)
    if not ch.events:
        return ticket, ()
    return replace(new, version=ticket.version + 1, updated_at=at), tuple(ch.events)


def due_to_close(ticket: Ticket, now: datetime, days: int) -> bool:
    """True when the ticket has been solved for at least `days` days (the scheduler then closes it)."""
    if days < 0:
        raise InvalidInput("days is not negative", field="days")
    return ticket.status == "solved" and ticket.solved_at is not None and now >= ticket.solved_at + timedelta(days=days)


# ---------------------------------------------------------------------------- attachments

_MAGIC: Mapping[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "application/pdf": (b"%PDF-",),
}


def _looks_like(content_type: str, data: bytes) -> bool:
    if content_type == "image/webp":
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if content_type in _MAGIC:
        return data.startswith(_MAGIC[content_type])
    # text/plain, text/csv: UTF-8 without NUL bytes (a binary renamed .txt is refused).
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def attachment_meta(attachment_id: UUID, ticket_id: UUID, filename: str, content_type: str, data: bytes,
                    now: datetime) -> AttachmentMeta:
    """Validate an upload (type allow-list, extension, size, content sniffed) and describe it.

    Raises InvalidInput naming the field: `file` (empty, too large, content not of its type),
    `content_type`, `filename`."""
    if not data:
        raise InvalidInput("the file is empty", field="file")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise InvalidInput(f"the file is larger than {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB", field="file")
    try:
        meta = AttachmentMeta(attachment_id=attachment_id, ticket_id=ticket_id, filename=filename,
                              content_type=content_type, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                              created_at=_ms(now))
    except ValidationError as exc:
        err = exc.errors()[0]
        # The extension check is model-wide (no loc); it is about the file name.
        where = str(err["loc"][0]) if err["loc"] else "filename"
        raise InvalidInput(str(err["msg"]).removeprefix("Value error, "), field=where) from exc
    if not _looks_like(meta.content_type, data):
        raise InvalidInput(f"the file's content is not {meta.content_type}", field="file")
    return meta


def check_attachment(meta: AttachmentMeta, data: bytes) -> None:
    """Refuse bytes that are not the ones described (a torn or tampered upload)."""
    if len(data) != meta.size or hashlib.sha256(data).hexdigest() != meta.sha256:
        raise InvalidInput(f"attachment {meta.attachment_id}: size or sha256 does not match", field="file")
