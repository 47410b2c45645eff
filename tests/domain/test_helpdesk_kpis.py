"""Help-desk KPIs: medians and p90 against plain references, grouping, backlog buckets."""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import helpdesk_kpis as kpis
from domain.errors import InvalidInput

T0 = datetime(2024, 6, 1, tzinfo=UTC)
values = st.lists(st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False), max_size=200)


def reference_p90(xs: list[float]) -> float:
    # The smallest value with at least 90% of the values at or below it, by brute force.
    return min(x for x in xs if sum(1 for y in xs if y <= x) * 10 >= 9 * len(xs))


@given(values)
def test_median_matches_statistics(xs: list[float]) -> None:
    got = kpis.median(xs)
    assert got is None if not xs else got == pytest.approx(statistics.median(xs))


@given(values)
def test_p90_matches_a_brute_force_nearest_rank(xs: list[float]) -> None:
    got = kpis.nearest_rank(xs, 90)
    assert got is None if not xs else got == reference_p90(xs)


def fact(minutes_to_response: float | None = None, minutes_to_solve: float | None = None, *, channel: str = "web",
         status: str = "open", created: datetime = T0, team: str | None = "t1", assignee: str | None = "a1",
         breached: bool | None = None) -> kpis.TicketFact:
    return kpis.TicketFact(
        ticket_id=uuid.uuid4(), brand="demo", channel=channel, status=status, created_at=created, team=team,
        assignee=assignee,
        first_responded_at=None if minutes_to_response is None else created + timedelta(minutes=minutes_to_response),
        solved_at=None if minutes_to_solve is None else created + timedelta(minutes=minutes_to_solve),
        sla_breached=breached,
    )


@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 10_000)), st.sampled_from(["web", "email", "chat"]),
                          st.sampled_from(["t1", "t2", None]), st.one_of(st.none(), st.booleans())), max_size=60))
def test_report_figures_match_plain_counts(rows: list[tuple[int | None, str, str | None, bool | None]]) -> None:
    facts = [fact(m, channel=c, team=t, breached=b) for m, c, t, b in rows]
    report = kpis.report(facts, [], T0, T0 + timedelta(days=1), T0 + timedelta(days=2))
    frt = [m * 60.0 for m, _, _, _ in rows if m is not None]
    assert report.overall.tickets == len(rows)
    assert report.overall.first_response.count == len(frt)
    assert report.overall.first_response.median_seconds == (statistics.median(frt) if frt else None)
    assert report.overall.first_response.p90_seconds == (reference_p90(frt) if frt else None)
    for channel in ("web", "email", "chat"):
        assert report.overall.by_channel.get(channel, 0) == sum(1 for _, c, _, _ in rows if c == channel)
    known = [b for _, _, _, b in rows if b is not None]
    assert report.overall.sla_breach_rate == (sum(known) / len(known) if known else None)
    assert sum(f.tickets for f in report.by_team.values()) == len(rows)
    assert report.by_team.get(kpis.UNASSIGNED, None) is None or report.by_team[kpis.UNASSIGNED].tickets == sum(
        1 for _, _, t, _ in rows if t is None)


def test_tickets_outside_the_period_do_not_count() -> None:
    inside = fact(10, 60)
    before = fact(5, created=T0 - timedelta(seconds=1))
    at_end = fact(5, created=T0 + timedelta(days=1))
    report = kpis.report([inside, before, at_end], [], T0, T0 + timedelta(days=1), T0 + timedelta(days=1))
    assert report.overall.tickets == 1
    assert report.overall.first_response.median_seconds == 600
    assert report.overall.resolution.median_seconds == 3600
    assert report.overall.solved == 1


def test_backlog_counts_active_tickets_by_age() -> None:
    now = T0 + timedelta(days=10)
    active = [
        fact(created=now - timedelta(minutes=30)),
        fact(created=now - timedelta(hours=2), status="pending"),
        fact(created=now - timedelta(hours=5), status="new"),
        fact(created=now - timedelta(days=2), status="on_hold"),
        fact(created=now - timedelta(days=5)),
        fact(created=now - timedelta(days=9)),
        fact(created=now - timedelta(days=9), status="solved"),  # not active
    ]
    report = kpis.report([], active, T0, T0 + timedelta(days=1), now)
    assert report.overall.backlog == {"<1h": 1, "1-4h": 1, "4-24h": 1, "1-3d": 1, "3-7d": 1, ">7d": 1}
    assert report.overall.backlog_total == 6


def test_per_agent_figures_group_by_assignee() -> None:
    facts = [fact(10, assignee="a1"), fact(20, assignee="a1"), fact(30, assignee="a2"), fact(40, assignee=None)]
    report = kpis.report(facts, [], T0, T0 + timedelta(days=1), T0 + timedelta(days=1))
    assert report.by_agent["a1"].first_response.median_seconds == 900
    assert report.by_agent["a2"].tickets == 1
    assert report.by_agent[kpis.UNASSIGNED].tickets == 1


@pytest.mark.parametrize(("start", "end", "field"), [
    (T0, T0, "to"),
    (T0, T0 - timedelta(days=1), "to"),
    (T0, T0 + timedelta(days=400), "to"),
    (datetime(2024, 6, 1), T0 + timedelta(days=1), "from"),
])
def test_bad_periods_are_refused(start: datetime, end: datetime, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        kpis.check_period(start, end)
    assert exc.value.field == field
