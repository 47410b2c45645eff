"""The bus events of committed ticket changes (`domain.tickets` events -> `PitbossEvent`s).

One place for the help-desk service and the SLA scheduler, so a change is announced the same way
whoever made it. Event ids are derived from the ticket and its version (or the message id), so a
retried follow-up publishes the same ids and consumers apply it once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from domain import tickets as rules
from domain.tickets import Ticket
from schemas.events import PitbossEvent
from schemas.tickets import MessagePublic

TICKET_CREATED = "ticket.created"
TICKET_MESSAGE_ADDED = "ticket.message_added"
TICKET_STATUS_CHANGED = "ticket.status_changed"
TICKET_ASSIGNED = "ticket.assigned"
EVENT_TYPES = (TICKET_CREATED, TICKET_MESSAGE_ADDED, TICKET_STATUS_CHANGED, TICKET_ASSIGNED)
NO_PLAYER = UUID(int=0)  # the envelope names a player; an unknown email sender has none yet
_EVENTS = UUID("0b5e3c52-7d0e-4f6c-a8f5-3c1f2d9e6a41")  # namespace of ticket event ids


def event_id(*parts: object) -> UUID:
    return uuid5(_EVENTS, ":".join(str(p) for p in parts))


def envelope(t: Ticket, type_: str, id_: UUID, at: datetime, payload: dict[str, Any]) -> PitbossEvent:
    return PitbossEvent(event_id=id_, type=type_, occurred_at=at, player_id=t.player_id or NO_PLAYER,
                        brand=t.brand, payload={"ticket_id": str(t.ticket_id), "brand": t.brand,
                                                "player_id": str(t.player_id) if t.player_id else None, **payload})


def created_event(t: Ticket) -> PitbossEvent:
    return envelope(t, TICKET_CREATED, event_id(t.ticket_id, "created"), t.created_at, {
        "channel": t.channel, "category": t.category, "priority": t.priority, "status": t.status,
        "team": t.team, "assignee": t.assignee, "subject": t.subject, "language": t.language,
        "sender_email": t.sender_email, "message_id": str(rules.first_message_id(t.ticket_id)),
    })


def message_event(t: Ticket, m: MessagePublic) -> PitbossEvent:
    return envelope(t, TICKET_MESSAGE_ADDED, event_id("message", m.message_id), m.created_at, {
        "message_id": str(m.message_id), "channel": t.channel, "visibility": m.visibility,
        "author_kind": m.author_kind, "author_id": m.author_id,
    })


def bus_events(after: Ticket, events: Sequence[rules.Event]) -> list[PitbossEvent]:
    """What the bus is told of the command that produced `after` (SLA events are not announced)."""
    out: list[PitbossEvent] = []
    for e in events:
        if isinstance(e, rules.TicketCreated):
            # The first message travels in ticket.created (its id in the payload): one publish, not two.
            out.append(created_event(after))
        elif isinstance(e, rules.MessageAdded):
            out.append(message_event(after, e.message))
        elif isinstance(e, rules.StatusChanged):
            out.append(envelope(after, TICKET_STATUS_CHANGED, event_id(after.ticket_id, after.version, "status"),
                                e.at, {"old": e.old, "new": e.new, "version": after.version, "actor": e.actor}))
        elif isinstance(e, rules.Assigned):
            out.append(envelope(after, TICKET_ASSIGNED, event_id(after.ticket_id, after.version, "assigned"),
                                e.at, {"team": e.team, "assignee": e.assignee, "version": after.version,
                                       "actor": e.actor, "previous_assignee": e.previous_assignee}))
    return out
