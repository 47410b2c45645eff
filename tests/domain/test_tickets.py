"""Ticket rules: the status machine, idempotency, refusals, and the SLA events they feed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import sla
from domain.errors import Conflict, InvalidInput
from domain.tickets import (
    CLOCK_OF_STATUS,
    TRANSITIONS,
    AddMessage,
    Assigned,
    CloseSolved,
    Command,
    CreateTicket,
    Event,
    Ticket,
    UpdateTicket,
    apply,
    attachment_meta,
    due_to_close,
    sla_events,
    ticket_events,
)
from schemas.helpdesk_sla import SlaEvent
from schemas.tickets import STATUSES, MessageCreate, TicketCreate, TicketUpdate

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
PLAYER = uuid.UUID("00000000-0000-4000-8000-000000000001")


def create(**kw: Any) -> CreateTicket:
    body = {
        "ticket_id": uuid.uuid4(),
        "player_id": PLAYER,
        "brand": "demo",
        "channel": "web",
        "category": "payments",
        "subject": "Withdrawal pending",
        "body": "Where is my money?",
        **kw,
    }
    return CreateTicket(TicketCreate.model_validate(body))


def msg(kind: str = "agent", visibility: str = "public", mid: uuid.UUID | None = None) -> AddMessage:
    actor = "op-1" if kind == "agent" else str(PLAYER) if kind == "player" else "system:mailer"
    return AddMessage(
        MessageCreate.model_validate(
            {"message_id": mid or uuid.uuid4(), "body": "hello", "visibility": visibility, "author_kind": kind}
        ),
        actor,
    )


def update(**kw: Any) -> UpdateTicket:
    return UpdateTicket(TicketUpdate.model_validate(kw), "op-1")


def new_ticket() -> tuple[Ticket, tuple[Event, ...]]:
    return apply(None, create(), T0)


def test_create_starts_the_sla_clock_and_a_retry_returns_no_events() -> None:
    cmd = create()
    t, events = apply(None, cmd, T0)
    assert t.status == "new" and t.version == 1 and len(t.messages) == 1
    assert [e.kind for e in sla_events(events)] == ["started"]
    again, more = apply(t, cmd, T0 + timedelta(minutes=1))
    assert again == t and more == ()


def test_a_ticket_without_player_only_from_email() -> None:
    with pytest.raises(InvalidInput) as err:
        apply(None, create(player_id=None), T0)
    assert err.value.field == "player_id"
    t, _ = apply(None, create(player_id=None, channel="email", sender_email="x@example.com"), T0)
    assert t.player_id is None and t.sender_email == "x@example.com"


def test_first_agent_reply_opens_and_responds_internal_note_changes_nothing() -> None:
    t, _ = new_ticket()
    noted, events = apply(t, msg("agent", "internal"), T0 + timedelta(minutes=1))
    assert noted.status == "new" and sla_events(events) == []
    opened, events = apply(noted, msg("agent"), T0 + timedelta(minutes=2))
    assert opened.status == "open" and opened.first_responded_at == T0 + timedelta(minutes=2)
    assert [e.kind for e in sla_events(events)] == ["responded"]


def test_a_replayed_message_returns_no_events() -> None:
    t, _ = new_ticket()
    m = msg("player")
    once, events = apply(t, m, T0 + timedelta(minutes=1))
    twice, again = apply(once, m, T0 + timedelta(minutes=2))
    assert events and again == () and twice == once


def test_player_reply_reopens_a_solved_ticket_and_resumes_a_pending_one() -> None:
    t, _ = new_ticket()
    t, _ = apply(t, update(status="pending"), T0 + timedelta(minutes=1))
    t, events = apply(t, msg("player"), T0 + timedelta(minutes=2))
    assert t.status == "open" and [e.kind for e in sla_events(events)] == ["resumed", "player_replied"]
    t, _ = apply(t, update(status="solved"), T0 + timedelta(minutes=3))
    t, events = apply(t, msg("player"), T0 + timedelta(minutes=4))
    assert t.status == "open" and t.solved_at is None
    assert [e.kind for e in sla_events(events)] == ["reopened", "player_replied"]


def test_a_reply_to_a_closed_ticket_is_refused() -> None:
    t, _ = new_ticket()
    t, _ = apply(t, update(status="solved"), T0)
    assert not due_to_close(t, T0 + timedelta(days=3), 4)
    assert due_to_close(t, T0 + timedelta(days=4), 4)
    with pytest.raises(Conflict):
        apply(t, CloseSolved(days=4), T0 + timedelta(days=3))
    closed, _ = apply(t, CloseSolved(days=4), T0 + timedelta(days=4))
    assert closed.status == "closed"
    for cmd in (msg("player"), msg("agent", "internal"), update(priority="P1")):
        with pytest.raises(Conflict) as err:
            apply(closed, cmd, T0 + timedelta(days=5))
        assert err.value.field == "ticket_id"


def test_a_stale_version_and_a_forbidden_move_are_conflicts() -> None:
    t, _ = new_ticket()
    t2, _ = apply(t, update(priority="P1", status="open"), T0)
    with pytest.raises(Conflict) as err:
        apply(t2, update(version=1, priority="P2"), T0)
    assert err.value.field == "version"
    with pytest.raises(Conflict) as err:
        apply(t2, update(status="new"), T0)
    assert err.value.field == "status"
    with pytest.raises(Conflict):
        apply(t2, update(status="closed"), T0)


def test_update_that_changes_nothing_has_no_events_and_unassign_is_explicit() -> None:
    t, _ = new_ticket()
    t, events = apply(t, update(team="vip", assignee="op-7", tags_add=["kyc"]), T0)
    assert [type(e).__name__ for e in events] == ["Assigned", "TagsChanged"]
    same, none = apply(t, update(team="vip", tags_add=["kyc"]), T0)
    assert none == () and same == t
    t, events = apply(t, update(assignee=None), T0)
    assert t.assignee is None and t.team == "vip"
    assert [(e.assignee, e.previous_assignee) for e in events if isinstance(e, Assigned)] == [(None, "op-7")]


def test_a_player_cannot_write_internal_notes() -> None:
    t, _ = new_ticket()
    with pytest.raises(InvalidInput) as err:
        apply(t, msg("player", "internal"), T0)
    assert err.value.field == "visibility"


@pytest.mark.parametrize("body", ["", "   ", "x" * 20_001])
def test_empty_or_oversize_bodies_are_refused(body: str) -> None:
    with pytest.raises(ValueError):
        MessageCreate.model_validate({"message_id": uuid.uuid4(), "body": body, "author_kind": "agent"})


def test_attachment_limits() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 10
    meta = attachment_meta(uuid.uuid4(), uuid.uuid4(), "../../shot.PNG", "image/png; charset=x", png, T0)
    assert meta.filename == "shot.PNG" and meta.size == len(png)
    cases = [
        ("a.exe", "application/x-msdownload", png, "content_type"),
        ("a.exe", "image/png", png, "filename"),
        ("a.png", "image/png", b"MZ" + b"\x00" * 10, "file"),
        ("a.txt", "text/plain", b"", "file"),
        ("a.txt", "text/plain", b"a" * (10 * 1024 * 1024 + 1), "file"),
    ]
    for name, ctype, data, field in cases:
        with pytest.raises(InvalidInput) as err:
            attachment_meta(uuid.uuid4(), uuid.uuid4(), name, ctype, data, T0)
        assert err.value.field == field, (name, ctype)


# ---------------------------------------------------------------------------- properties

commands = st.one_of(
    st.builds(
        lambda k, v: msg(k, v), st.sampled_from(["agent", "player", "system"]), st.sampled_from(["public", "internal"])
    ),
    st.builds(lambda s: update(status=s), st.sampled_from(STATUSES)),
    st.builds(lambda p: update(priority=p), st.sampled_from(["P1", "P2", "P3", "P4"])),
    st.just(CloseSolved(days=0)),
    st.just(None),  # replay the previous command
)


@given(st.lists(st.tuples(commands, st.integers(min_value=-60, max_value=3 * 86_400)), max_size=40))
def test_random_histories_stay_valid_and_feed_the_sla_clock(steps: list[tuple[Command | None, int]]) -> None:
    t, events = new_ticket()
    history = list(events)
    now: datetime = T0
    last: Command = create()
    closed_at = None
    for cmd, dt in steps:
        now += timedelta(seconds=dt)  # the clock may step back a little: the stream must stay ordered
        cmd = cmd or last
        before = t
        try:
            t, events = apply(t, cmd, now)
        except (Conflict, InvalidInput):
            assert t == before
            continue
        last = cmd
        if before.status == "closed":
            assert events == () and t == before  # only replays pass on a closed ticket
        if events:
            assert t.version == before.version + 1
            assert t.status == before.status or t.status in TRANSITIONS[before.status]
        else:
            assert t == before
        history.extend(events)
        assert t.status in STATUSES
        if t.status == "closed":
            closed_at = closed_at or t.closed_at
        sla_stream = sla_events(history)
        clock = sla.replay(sla_stream)
        assert clock.state == CLOCK_OF_STATUS[t.status]
        assert sla.replay(sla_stream + sla_stream) == clock  # republished events are ignored
    if closed_at is not None:
        assert t.status == "closed"
    kinds = [type(e).__name__ for e in ticket_events(history)]
    assert kinds[0] == "TicketCreated"


def test_sla_event_ids_are_unique_per_ticket() -> None:
    t, events = new_ticket()
    seen = [e.event_id for e in events if isinstance(e, SlaEvent)]
    for cmd in (msg("agent"), update(status="pending"), msg("player"), update(status="solved"), msg("player")):
        t, events = apply(t, cmd, T0)
        seen += [e.event_id for e in sla_events(events)]
    assert len(seen) == len(set(seen))
