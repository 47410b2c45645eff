"""KPI facts: the days a period reads, and a fact surviving its stored row (no IO)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from adapters.cassandra.kpi_facts import fact_of_row, row_of
from domain import helpdesk_kpis as kpis

MOMENTS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
SPANS = st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(days=366))
TEXT = st.one_of(st.none(), st.text(alphabet="abcdefghij-_", min_size=1, max_size=12))


def _whole_ms(span: timedelta) -> timedelta:
    return span // timedelta(milliseconds=1) * timedelta(milliseconds=1)


@given(MOMENTS, SPANS)
def test_the_days_of_a_period_are_exactly_the_utc_days_its_instants_fall_on(start: datetime, span: timedelta) -> None:
    end = start + span
    days = kpis.days_of(start, end)
    assert days[0] == kpis.day_of(start)
    assert days[-1] == kpis.day_of(end - timedelta(microseconds=1))
    assert days == sorted(set(days))
    assert len(days) == (datetime.fromisoformat(days[-1]) - datetime.fromisoformat(days[0])).days + 1


@given(MOMENTS, st.one_of(st.none(), SPANS), st.one_of(st.none(), SPANS), TEXT, TEXT,
       st.sampled_from([None, True, False]), st.sampled_from(["web", "chat", "email"]), st.integers(1, 10_000))
def test_a_fact_is_what_its_stored_row_says(created: datetime, frt: timedelta | None, res: timedelta | None,
                                            team: str | None, assignee: str | None, breached: bool | None,
                                            channel: str, version: int) -> None:
    # The driver hands timestamps back naive (UTC) and at millisecond precision, like the tickets table.
    fact = kpis.TicketFact(
        ticket_id=uuid.uuid4(), brand="demo", channel=channel, status="open", created_at=created, team=team,
        assignee=assignee, first_responded_at=None if frt is None else created + _whole_ms(frt),
        solved_at=None if res is None else created + _whole_ms(res),
        sla_breached=breached)
    row = row_of(fact, version)
    assert None not in row.values()  # no tombstones
    stored = {**row, "created_at": row["created_at"].replace(tzinfo=None)}
    back = fact_of_row("demo", stored)
    assert (back.first_responded_at, back.solved_at) == (fact.first_responded_at, fact.solved_at)
    assert (back.ticket_id, back.channel, back.team, back.assignee, back.sla_breached, back.created_at) == (
        fact.ticket_id, fact.channel, team or None, assignee or None, breached, created)
    assert row["day"] == created.strftime("%Y-%m-%d")
