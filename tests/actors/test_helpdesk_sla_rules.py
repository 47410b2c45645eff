"""The pure parts of the SLA storage and scheduler: the clock's JSON, the stored order of events
(rebuilding from the table's order gives the clock of the commands' order, whatever order the
writes arrived in), refused events, buckets, the auto-close days, escalation, the SLA file."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.helpdesk_sla import autoclose_days, escalation_update, event_uuid
from adapters.cassandra.sla_clocks import (
    OPEN_BUCKETS,
    bucket_of,
    clock_from_json,
    clock_to_json,
    event_seq,
    rebuild,
    started_event,
)
from adapters.settings import Settings
from adapters.sla_config import SlaConfigError, load_sla_policies, parse_sla_policies
from domain import sla
from domain.errors import Conflict
from domain.tickets import AddMessage, CreateTicket, Ticket, UpdateTicket, apply, sla_events
from schemas.helpdesk_sla import SlaEvent
from schemas.tickets import MessageCreate, TicketCreate, TicketUpdate

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ACTIONS = ("agent", "player", "note", "pending", "on_hold", "open", "solved", "priority")
actions = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 4 * 3600)), max_size=25)


def history(steps: list[tuple[str, int]]) -> tuple[Ticket, list[tuple[SlaEvent, int, int]]]:
    """A ticket after `steps` (refused ones skipped) and its SLA events as (event, version, place)."""
    body = TicketCreate(ticket_id=uuid.uuid4(), player_id=uuid.uuid4(), brand="demo", channel="web",
                        category="general", subject="s", body="b")
    ticket, events = apply(None, CreateTicket(body), T0)
    out = [(e, ticket.version, i) for i, e in enumerate(sla_events(events))]
    at = T0
    for action, gap in steps:
        at += timedelta(seconds=gap, milliseconds=gap % 7)
        cmd: AddMessage | UpdateTicket
        if action in ("agent", "player", "note"):
            cmd = AddMessage(MessageCreate(message_id=uuid.uuid4(), body="m", author_kind="player" if action == "player"
                                           else "agent", visibility="internal" if action == "note" else "public"),
                             actor="a" if action != "player" else None)
        elif action == "priority":
            cmd = UpdateTicket(TicketUpdate(priority="P1" if ticket.priority != "P1" else "P4"), actor="a")
        else:
            cmd = UpdateTicket(TicketUpdate(status=action), actor="a")
        try:
            ticket, events = apply(ticket, cmd, at)
        except Conflict:
            continue
        out.extend((e, ticket.version, i) for i, e in enumerate(sla_events(events)))
    return ticket, out


def stored_order(rows: list[tuple[SlaEvent, int, int]]) -> list[SlaEvent]:
    """The order Cassandra returns ticket_sla_events in: (at in ms, seq, event_id)."""
    def key(row: tuple[SlaEvent, int, int]) -> tuple[int, int, str]:
        e, version, place = row
        return int(e.at.timestamp() * 1000), event_seq(e, version, place), e.event_id
    return [r[0] for r in sorted(rows, key=key)]


@settings(max_examples=300, deadline=None)
@given(actions, st.randoms(use_true_random=False))
def test_rebuilding_from_the_stored_order_gives_the_clock_of_the_commands_order(
    steps: list[tuple[str, int]], rnd: random.Random
) -> None:
    _, rows = history(steps)
    expected = sla.replay(e for e, _, _ in rows)
    shuffled = list(rows)
    rnd.shuffle(shuffled)  # the writes arrive in any order; the table sorts them
    clock, refused = rebuild(stored_order(shuffled))
    assert refused == [] and clock == expected


@settings(max_examples=300, deadline=None)
@given(actions)
def test_a_clock_survives_its_json(steps: list[tuple[str, int]]) -> None:
    _, rows = history(steps)
    clock = sla.replay(e for e, _, _ in rows)
    assert clock_from_json(clock_to_json(clock)) == clock
    assert clock_from_json(clock_to_json(clock, with_ids=False)) == replace(clock, event_ids=frozenset())


@settings(max_examples=200, deadline=None)
@given(actions, st.data())
def test_a_lost_event_is_skipped_and_the_rest_still_applies(steps: list[tuple[str, int]], data: st.DataObject) -> None:
    _, rows = history(steps)
    events = [e for e, _, _ in rows]
    lost = data.draw(st.integers(0, len(events) - 1))
    clock, refused = rebuild(events[:lost] + events[lost + 1:])
    applied = len(events) - 1 - len(refused)
    assert len(clock.event_ids) == applied
    assert all(e.event_id not in clock.event_ids for e, _ in refused)
    if lost == 0:  # without `started` nothing applies
        assert clock.state == "new" and applied == 0


def test_the_started_event_is_the_one_the_create_emitted() -> None:
    ticket, rows = history([])
    assert started_event(ticket) == rows[0][0]
    assert event_seq(rows[0][0], ticket.version, 0) == event_seq(started_event(ticket), 1, 0)


@given(st.uuids())
def test_buckets_are_fixed_and_in_range(ticket_id: uuid.UUID) -> None:
    assert 0 <= bucket_of(ticket_id) < OPEN_BUCKETS and bucket_of(ticket_id) == bucket_of(uuid.UUID(str(ticket_id)))


def test_time_ordered_ids_spread_over_every_bucket() -> None:
    counts = [0] * OPEN_BUCKETS
    for _ in range(OPEN_BUCKETS * 200):
        counts[bucket_of(uuid.uuid1())] += 1
    assert min(counts) > 100  # about 200 each; uuid1's low bits alone would put them all in one


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
       st.integers(0, 60), st.integers(0, 40 * 86400))
def test_the_autoclose_pass_reads_the_day_of_every_ticket_due(now: datetime, days: int, age: int) -> None:
    solved_at = now - timedelta(seconds=age)
    read = autoclose_days(now, days)
    due = solved_at <= now - timedelta(days=days)
    if due and solved_at >= now - timedelta(days=days + 30):
        assert solved_at.strftime("%Y-%m-%d") in read
    if solved_at.strftime("%Y-%m-%d") > read[0]:
        assert not due  # a day after the newest one read holds no ticket due yet


@pytest.mark.parametrize("target", sla.TARGETS)
def test_an_escalation_is_a_valid_ticket_update(target: str) -> None:
    update = escalation_update(target, "supervisors")
    assert update.team == "supervisors" and "sla-breached" in update.tags_add
    assert f"sla-{target.replace('_', '-')}" in update.tags_add
    assert escalation_update(target, "").team is None  # no team: tagged only


def test_fired_event_ids_are_stable() -> None:
    assert event_uuid("t:first_response:0:breach:x") == event_uuid("t:first_response:0:breach:x")
    assert event_uuid("a") != event_uuid("b")


# ---------------------------------------------------------------------------- the SLA file


def test_the_packaged_sla_file_is_valid() -> None:
    policies = load_sla_policies(Settings(helpdesk_sla_file=""))
    assert {p.priority for p in policies.policies} == {"P1", "P2", "P3", "P4"}
    assert policies.default_policy_id is not None
    malta = policies.calendar("support-eu")
    assert malta is not None and malta.time_zone == "Europe/Malta" and malta.holidays
    for policy in policies.policies:
        sla.calendar_for(policies, policy)  # every policy's calendar exists


@pytest.mark.parametrize(("text", "says"), [
    ("policies: [", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
    ("policies: []\npolicies: []\n", "duplicate key"),
    ("policies:\n  - {policy_id: a, name: A, priority: P1, calendar_id: nowhere, targets: {first_response: 5}}\n",
     "unknown calendar_id nowhere"),
    ("policies:\n  - {policy_id: a, name: A, priority: P9, twenty_four_seven: true, targets: {}}\n",
     "policies[0].priority"),
])
def test_an_invalid_sla_file_is_refused_naming_the_part(text: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "sla.yaml"
    path.write_text(text)
    with pytest.raises(SlaConfigError) as err:
        load_sla_policies(Settings(helpdesk_sla_file=str(path)))
    assert str(path) in str(err.value) and says in str(err.value)


def test_a_missing_sla_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SlaConfigError, match="PITBOSS_HELPDESK_SLA_FILE"):
        load_sla_policies(Settings(helpdesk_sla_file=str(tmp_path / "missing.yaml")))


def test_parse_accepts_what_the_schema_accepts() -> None:
    text = "policies:\n  - {policy_id: a, name: A, priority: P1, twenty_four_seven: true, targets: {resolution: 5}}\n"
    parsed: Any = parse_sla_policies(text)
    assert parsed.pick("P1", None).policy_id == "a"
