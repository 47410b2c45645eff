"""Help-desk KPIs from ticket facts. Pure: no IO, `now` passed in.

Definitions (what the dashboard and `GET /helpdesk/v1/kpis` show):

- The period is [start, end) on `created_at`: a ticket counts in the period it was opened in.
- First response time: `first_responded_at - created_at` (the first public agent reply), for the
  period's tickets that have one. Resolution time: `solved_at - created_at` for the period's
  tickets solved (a reopened then re-solved ticket counts its latest solve).
  Both are CALENDAR (wall-clock) seconds: what the player waited. Business-hours time is what
  the SLA clocks measure (`domain.sla`); their verdict is the breach rate below.
- Median: the middle value (the mean of the two middle values for an even count). p90: the
  nearest-rank 90th percentile, the smallest value with at least 90% of the values at or below it.
  Both are None when there is no value.
- Tickets per channel: the period's tickets by channel.
- SLA breach rate: of the period's tickets whose SLA state is known, the share with at least one
  breached target (first response, next response or resolution). None when none is known.
- Backlog by age: tickets still active (new, open, pending, on_hold) at `now`, whatever the period,
  by age since creation: <1h, 1-4h, 4-24h, 1-3d, 3-7d, >7d.
- Per team and per agent: the same figures over the tickets of each team (None: "unassigned") and
  each assignee (None: "unassigned") as they are now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from domain.errors import InvalidInput
from domain.sla import SlaStatus
from domain.tickets import Ticket

ACTIVE = frozenset({"new", "open", "pending", "on_hold"})
UNASSIGNED = "unassigned"
# (label, upper bound of the age): the last bucket has no bound.
AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("<1h", timedelta(hours=1)),
    ("1-4h", timedelta(hours=4)),
    ("4-24h", timedelta(hours=24)),
    ("1-3d", timedelta(days=3)),
    ("3-7d", timedelta(days=7)),
    (">7d", None),
)
MAX_PERIOD = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class TicketFact:
    ticket_id: UUID
    brand: str
    channel: str
    status: str
    created_at: datetime
    team: str | None = None
    assignee: str | None = None
    first_responded_at: datetime | None = None
    solved_at: datetime | None = None
    sla_breached: bool | None = None  # None: no SLA state known for the ticket


@dataclass(frozen=True, slots=True)
class Durations:
    count: int
    median_seconds: float | None
    p90_seconds: float | None


@dataclass(frozen=True, slots=True)
class Figures:
    tickets: int
    solved: int
    first_response: Durations
    resolution: Durations
    by_channel: dict[str, int]
    sla_known: int
    sla_breached: int
    sla_breach_rate: float | None
    backlog: dict[str, int]
    backlog_total: int


@dataclass(frozen=True, slots=True)
class KpiReport:
    start: datetime
    end: datetime
    now: datetime
    overall: Figures
    by_team: dict[str, Figures] = field(default_factory=dict)
    by_agent: dict[str, Figures] = field(default_factory=dict)


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0


def nearest_rank(values: Sequence[float], pct: float) -> float | None:
    """The smallest value with at least `pct`% of the values at or below it."""
    if not values:
        return None
    if not 0 < pct <= 100:
        raise InvalidInput("a percentile is in (0, 100]", field="pct")
    s = sorted(values)
    # ceil(pct/100 * n) in integers (pct may be fractional: scale to avoid float ceil drift)
    rank = -(-round(pct * 1000) * len(s) // 100_000)
    return float(s[max(rank, 1) - 1])


def durations(values: Sequence[float]) -> Durations:
    return Durations(len(values), median(values), nearest_rank(values, 90))


def age_bucket(age: timedelta) -> str:
    for label, bound in AGE_BUCKETS:
        if bound is None or age < bound:
            return label
    return AGE_BUCKETS[-1][0]


def _seconds(a: datetime, b: datetime) -> float:
    return max((b - a).total_seconds(), 0.0)


def figures(period: Iterable[TicketFact], active: Iterable[TicketFact], now: datetime) -> Figures:
    """KPIs of the period's tickets, and the backlog of the active ones at `now`."""
    tickets = list(period)
    frt = [_seconds(t.created_at, t.first_responded_at) for t in tickets if t.first_responded_at is not None]
    res = [_seconds(t.created_at, t.solved_at) for t in tickets if t.solved_at is not None]
    by_channel: dict[str, int] = {}
    for t in tickets:
        by_channel[t.channel] = by_channel.get(t.channel, 0) + 1
    known = [t.sla_breached for t in tickets if t.sla_breached is not None]
    breached = sum(1 for b in known if b)
    backlog = {label: 0 for label, _ in AGE_BUCKETS}
    total = 0
    for t in active:
        if t.status in ACTIVE:
            backlog[age_bucket(now - t.created_at)] += 1
            total += 1
    return Figures(
        tickets=len(tickets), solved=len(res), first_response=durations(frt), resolution=durations(res),
        by_channel=dict(sorted(by_channel.items())), sla_known=len(known), sla_breached=breached,
        sla_breach_rate=(breached / len(known)) if known else None, backlog=backlog, backlog_total=total,
    )


def check_period(start: datetime, end: datetime) -> None:
    for name, t in (("from", start), ("to", end)):
        if t.tzinfo is None or t.utcoffset() is None:
            raise InvalidInput(f"{name} must carry a UTC offset", field=name)
    if end <= start:
        raise InvalidInput("to must be after from", field="to")
    if end - start > MAX_PERIOD:
        raise InvalidInput(f"a period is at most {MAX_PERIOD.days} days", field="to")


def _group(facts: Iterable[TicketFact], key: Callable[[TicketFact], str | None]) -> dict[str, list[TicketFact]]:
    out: dict[str, list[TicketFact]] = {}
    for f in facts:
        out.setdefault(key(f) or UNASSIGNED, []).append(f)
    return out


def report(period: Sequence[TicketFact], active: Sequence[TicketFact], start: datetime, end: datetime,
           now: datetime) -> KpiReport:
    """Overall, per team and per agent. `period`: tickets created in [start, end) (others are
    dropped here); `active`: the tickets active now (for the backlog)."""
    check_period(start, end)
    inside = [t for t in period if start <= t.created_at < end]
    teams_p, teams_a = _group(inside, lambda t: t.team), _group(active, lambda t: t.team)
    agents_p, agents_a = _group(inside, lambda t: t.assignee), _group(active, lambda t: t.assignee)
    return KpiReport(
        start=start, end=end, now=now, overall=figures(inside, active, now),
        by_team={k: figures(teams_p.get(k, []), teams_a.get(k, []), now) for k in sorted(teams_p.keys() | teams_a)},
        by_agent={k: figures(agents_p.get(k, []), agents_a.get(k, []), now)
                  for k in sorted(agents_p.keys() | agents_a)},
    )


def fact_of(ticket: Ticket, sla_breached: bool | None) -> TicketFact:
    """What the KPIs need of a ticket as it is now (the fact table's row, `schemas/cql/016`)."""
    t = ticket
    return TicketFact(
        ticket_id=t.ticket_id, brand=t.brand, channel=t.channel, status=t.status, created_at=t.created_at,
        team=t.team, assignee=t.assignee, first_responded_at=t.first_responded_at, solved_at=t.solved_at,
        sla_breached=sla_breached,
    )


def day_of(at: datetime) -> str:
    """The UTC day ("YYYY-MM-DD") a ticket created at `at` is counted under."""
    return at.astimezone(UTC).strftime("%Y-%m-%d")


def days_of(start: datetime, end: datetime) -> list[str]:
    """The UTC days that [start, end) touches, oldest first."""
    check_period(start, end)
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def sla_breached(status: SlaStatus | None) -> bool | None:
    """Whether any target of a ticket's SLA status has breached; None when it has no SLA status."""
    if status is None:
        return None
    return any(t.state == "breached" or t.breached_at is not None for t in status.targets())
