"""SLA clocks over business hours: properties of business time (inverse, monotone, additive, a
brute-force minute-by-minute oracle across DST changes, 24/7 = wall clock, holidays count 0,
pauses shift deadlines by exactly their business time), worked examples, the clock's events,
status and the scheduler's view, and the validation of the configuration."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain import sla
from domain.errors import Conflict, InvalidInput, NotFound
from domain.sla import (
    TWENTY_FOUR_SEVEN,
    SlaClock,
    SlaSubject,
    add_business_time,
    apply,
    business_seconds_between,
    due_events,
    is_open,
    next_open,
    replay,
    select_policy,
    status,
)
from schemas.helpdesk_sla import BusinessCalendar, Interval, SlaEvent, SlaPolicy, SlaPolicySet, TimeRange

# Zones with DST (Malta, New York, Santiago at midnight, Lord Howe by 30 minutes), none (Tokyo,
# UTC) and odd offsets (Kathmandu +05:45).
ZONES = [
    "Europe/Malta",
    "America/New_York",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Asia/Tokyo",
    "UTC",
    "Asia/Kathmandu",
]
LO, HI = datetime(2023, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def _transitions() -> list[datetime]:
    # Hours around which some zone's offset changes (found independently of domain.sla).
    out = []
    for name in ZONES:
        zone, t = ZoneInfo(name), LO
        off = t.astimezone(zone).utcoffset()
        while t < HI:
            t += timedelta(hours=1)
            if t.astimezone(zone).utcoffset() != off:
                off = t.astimezone(zone).utcoffset()
                out.append(t)
    return out


TRANSITIONS = _transitions()
instants = st.one_of(
    st.integers(int(LO.timestamp()), int(HI.timestamp())).map(lambda s: datetime.fromtimestamp(s, UTC)),
    st.tuples(st.sampled_from(TRANSITIONS), st.integers(-3 * 86400, 3 * 86400)).map(
        lambda p: p[0] + timedelta(seconds=p[1])
    ),
)
durations = st.one_of(st.integers(0, 12 * 3600), st.integers(0, 90 * 86400))


def q(k: int) -> time:
    """Quarter hour k of a day; 96 is midnight at its end."""
    return time(0) if k == 96 else time(k // 4, (k % 4) * 15)


@st.composite
def day_ranges(draw: st.DrawFn, most: int = 2) -> list[tuple[time, time]]:
    # Biased to cover 00:00-04:00 often, where DST changes happen.
    cuts = sorted(
        draw(st.lists(st.one_of(st.integers(0, 96), st.integers(0, 16)), min_size=0, max_size=2 * most, unique=True))
    )
    if len(cuts) % 2:
        cuts = cuts[:-1]
    return [(q(a), q(b)) for a, b in zip(cuts[::2], cuts[1::2], strict=True)]


def days_near_transitions() -> st.SearchStrategy[date]:
    return st.one_of(
        st.dates(date(2023, 1, 1), date(2026, 12, 31)),
        st.sampled_from(TRANSITIONS).map(lambda t: t.date()),
        st.sampled_from(TRANSITIONS).map(lambda t: t.date() - timedelta(days=1)),
    )


@st.composite
def calendars(draw: st.DrawFn, zones: list[str] = ZONES, exceptions: bool = True) -> BusinessCalendar:
    weekly = [Interval(weekday=d, start=s, end=e) for d in range(7) for s, e in draw(day_ranges())]
    if not weekly:
        weekly = [Interval(weekday=draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6])), start=time(9), end=time(17))]
    holidays: list[date] = []
    special: dict[date, list[TimeRange]] = {}
    if exceptions:
        holidays = draw(st.lists(days_near_transitions(), max_size=5, unique=True))
        for d in draw(st.lists(days_near_transitions(), max_size=3, unique=True)):
            if d not in holidays:
                special[d] = [TimeRange(start=s, end=e) for s, e in draw(day_ranges())]
    return BusinessCalendar(
        calendar_id="c", time_zone=draw(st.sampled_from(zones)), weekly=weekly, holidays=holidays, special_days=special
    )


def oracle_open(cal: BusinessCalendar, t: datetime) -> bool:
    """Straight from the definition: the local wall time of t within the hours of its local date."""
    local = t.astimezone(ZoneInfo(cal.time_zone))
    day, sec = local.date(), local.hour * 3600 + local.minute * 60 + local.second
    if day in cal.holidays:
        return False
    ranges: list[Any] = cal.special_days.get(day, [i for i in cal.weekly if i.weekday == day.weekday()])
    return any(r.start_seconds <= sec < r.end_seconds for r in ranges)


def mt(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=ZoneInfo("Europe/Malta"))


def ny(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=ZoneInfo("America/New_York"))


def office(
    zone: str, days: str = "mon tue wed thu fri", start: str = "09:00", end: str = "17:00", **extra: Any
) -> BusinessCalendar:
    return BusinessCalendar.model_validate(
        {
            "calendar_id": "office",
            "time_zone": zone,
            "weekly": [{"weekday": d, "start": start, "end": end} for d in days.split()],
            **extra,
        }
    )


# ---------------------------------------------------------------------------- properties of business time


@settings(max_examples=120, deadline=None)
@given(cal=calendars(), start=instants, x=durations)
def test_add_is_the_earliest_instant_whose_business_time_is_x(cal: BusinessCalendar, start: datetime, x: int) -> None:
    due = add_business_time(cal, start, x)
    assert due.tzinfo is UTC and due >= start.replace(microsecond=0)
    assert business_seconds_between(cal, start, due) == x
    if x:
        assert business_seconds_between(cal, start, due - SECOND) == x - 1
        assert is_open(cal, due - SECOND)


@settings(max_examples=100, deadline=None)
@given(cal=calendars(), a=instants, gap=st.integers(0, 10 * 86400), x=durations, y=durations)
def test_add_is_monotone_in_start_and_amount(cal: BusinessCalendar, a: datetime, gap: int, x: int, y: int) -> None:
    b = a + timedelta(seconds=gap)
    lo, hi = sorted((x, y))
    assert add_business_time(cal, a, lo) <= add_business_time(cal, a, hi)
    assert add_business_time(cal, a, x) <= add_business_time(cal, b, x)


@settings(max_examples=100, deadline=None)
@given(cal=calendars(), a=instants, g1=st.integers(0, 40 * 86400), g2=st.integers(0, 40 * 86400))
def test_between_is_additive(cal: BusinessCalendar, a: datetime, g1: int, g2: int) -> None:
    b, c = a + timedelta(seconds=g1), a + timedelta(seconds=g1 + g2)
    ab, bc = business_seconds_between(cal, a, b), business_seconds_between(cal, b, c)
    assert business_seconds_between(cal, a, c) == ab + bc
    assert 0 <= ab <= g1 + 1  # a's dropped sub-second part may give one more second
    assert business_seconds_between(cal, c, a) == -(ab + bc)


@settings(max_examples=60, deadline=None)
@given(cal=calendars(), start=instants, minutes=st.integers(0, 3 * 24 * 60))
def test_between_matches_a_minute_by_minute_count_across_dst_changes(
    cal: BusinessCalendar, start: datetime, minutes: int
) -> None:
    # Hours are quarter hours and every offset of these zones is a multiple of 15 minutes, so
    # each UTC minute is wholly open or closed.
    start = start.replace(second=0, microsecond=0)
    end = start + timedelta(minutes=minutes)
    count = sum(oracle_open(cal, start + timedelta(minutes=m)) for m in range(minutes))
    assert business_seconds_between(cal, start, end) == 60 * count


@settings(max_examples=200, deadline=None)
@given(cal=calendars(), t=instants)
def test_is_open_and_next_open_follow_the_definition(cal: BusinessCalendar, t: datetime) -> None:
    assert is_open(cal, t) == oracle_open(cal, t)
    first = next_open(cal, t)
    assert first >= t.replace(microsecond=0) and oracle_open(cal, first)
    assert business_seconds_between(cal, t, first) == 0


@settings(max_examples=100, deadline=None)
@given(zone=st.sampled_from(ZONES), start=instants, x=durations, special=days_near_transitions())
def test_always_open_calendars_are_wall_clock_arithmetic(zone: str, start: datetime, x: int, special: date) -> None:
    start = start.replace(microsecond=0)
    end = start + timedelta(seconds=x)
    # The special day (also open all day) keeps the general path, not the 24/7 shortcut.
    general = office(
        zone,
        "mon tue wed thu fri sat sun",
        "00:00",
        "24:00",
        special_days={special: [{"start": "00:00", "end": "24:00"}]},
    )
    for cal in (TWENTY_FOUR_SEVEN, general, office(zone, "mon tue wed thu fri sat sun", "00:00", "24:00")):
        assert business_seconds_between(cal, start, end) == x
        assert add_business_time(cal, start, x) == end
        assert is_open(cal, start) and next_open(cal, start) == start


@settings(max_examples=60, deadline=None)
@given(
    cal=calendars(zones=["Europe/Malta", "America/New_York", "Asia/Tokyo"]),
    holiday=days_near_transitions(),
    a=instants,
    gap=st.integers(0, 20 * 86400),
)
def test_a_holiday_removes_exactly_its_own_business_time(
    cal: BusinessCalendar, holiday: date, a: datetime, gap: int
) -> None:
    assume(holiday not in cal.holidays and holiday not in cal.special_days)
    closed = cal.model_copy(update={"holidays": [*cal.holidays, holiday]})
    zone = ZoneInfo(cal.time_zone)
    h0 = datetime.combine(holiday, time(0), zone).astimezone(UTC)
    h1 = datetime.combine(holiday + timedelta(days=1), time(0), zone).astimezone(UTC)
    assert business_seconds_between(closed, h0, h1) == 0
    b = a + timedelta(seconds=gap)
    inside = business_seconds_between(cal, max(a, h0), min(b, h1)) if max(a, h0) < min(b, h1) else 0
    assert business_seconds_between(closed, a, b) == business_seconds_between(cal, a, b) - inside


# ---------------------------------------------------------------------------- worked examples

MALTA = office(
    "Europe/Malta", holidays=["2024-12-25"], special_days={"2024-12-24": [{"start": "09:00", "end": "13:00"}]}
)


def test_friday_evening_ticket_is_due_monday() -> None:
    friday_evening = mt(2024, 6, 7, 18, 30)
    assert not is_open(MALTA, friday_evening)
    assert next_open(MALTA, friday_evening) == mt(2024, 6, 10, 9, 0)
    assert add_business_time(MALTA, friday_evening, 4 * 3600) == mt(2024, 6, 10, 13, 0)
    # Friday 16:00 + 4 h: one hour on Friday, three on Monday.
    assert add_business_time(MALTA, mt(2024, 6, 7, 16, 0), 4 * 3600) == mt(2024, 6, 10, 12, 0)


def test_a_deadline_that_ends_exactly_at_closing_is_the_closing_time() -> None:
    assert add_business_time(MALTA, mt(2024, 6, 7, 13, 0), 4 * 3600) == mt(2024, 6, 7, 17, 0)


def test_holiday_and_short_day() -> None:
    # Tuesday 24 Dec is a short day (09:00-13:00), Wednesday 25 Dec a holiday.
    assert business_seconds_between(MALTA, mt(2024, 12, 24, 0, 0), mt(2024, 12, 26, 0, 0)) == 4 * 3600
    assert add_business_time(MALTA, mt(2024, 12, 24, 12, 0), 2 * 3600) == mt(2024, 12, 26, 10, 0)
    assert not is_open(MALTA, mt(2024, 12, 25, 10, 0))
    assert not is_open(MALTA, mt(2024, 12, 24, 14, 0))


def test_malta_spring_forward_hour_is_not_counted_and_fall_back_hour_counts_twice() -> None:
    night = office("Europe/Malta", "sun", "01:00", "04:00")
    # 31 March 2024: 02:00 becomes 03:00, so 01:00-04:00 lasts two real hours.
    assert business_seconds_between(night, mt(2024, 3, 30, 0, 0), mt(2024, 4, 1, 0, 0)) == 2 * 3600
    assert add_business_time(night, mt(2024, 3, 31, 0, 0), 3600) == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    assert add_business_time(night, mt(2024, 3, 31, 0, 0), 3601) == datetime(2024, 3, 31, 1, 0, 1, tzinfo=UTC)
    # 27 October 2024: 03:00 becomes 02:00 again, so 01:00-04:00 lasts four real hours.
    assert business_seconds_between(night, mt(2024, 10, 26, 0, 0), mt(2024, 10, 28, 0, 0)) == 4 * 3600
    assert add_business_time(night, mt(2024, 10, 27, 0, 0), 4 * 3600) == datetime(2024, 10, 27, 3, 0, tzinfo=UTC)
    always = office("Europe/Malta", "mon tue wed thu fri sat sun", "00:00", "24:00", holidays=["2030-01-01"])
    assert business_seconds_between(always, mt(2024, 3, 31, 0, 0), mt(2024, 4, 1, 0, 0)) == 23 * 3600
    assert business_seconds_between(always, mt(2024, 10, 27, 0, 0), mt(2024, 10, 28, 0, 0)) == 25 * 3600


def test_new_york_weekend_with_a_dst_change() -> None:
    nyc = office("America/New_York")
    # Friday 8 March 2024 16:00 EST + 2 h: one hour on Friday, one on Monday 11 March (EDT).
    due = add_business_time(nyc, ny(2024, 3, 8, 16, 0), 2 * 3600)
    assert due == ny(2024, 3, 11, 10, 0) == datetime(2024, 3, 11, 14, 0, tzinfo=UTC)
    assert business_seconds_between(nyc, ny(2024, 3, 8, 16, 0), due) == 2 * 3600
    # Over the November change: Friday 16:00 EDT + 2 h is Monday 10:00 EST.
    assert add_business_time(nyc, ny(2024, 11, 1, 16, 0), 2 * 3600) == datetime(2024, 11, 4, 15, 0, tzinfo=UTC)


def test_tokyo_team_with_a_lunch_break() -> None:
    tokyo = BusinessCalendar.model_validate(
        {
            "calendar_id": "tokyo",
            "time_zone": "Asia/Tokyo",
            "weekly": [
                {"weekday": d, "start": s, "end": e}
                for d in range(5)
                for s, e in (("09:00", "12:00"), ("13:00", "18:00"))
            ],
        }
    )
    jst = ZoneInfo("Asia/Tokyo")
    # Friday 17:30 + 4 h: 30 min Friday, Monday 09:00-12:00, then 13:00-13:30.
    due = add_business_time(tokyo, datetime(2024, 6, 7, 17, 30, tzinfo=jst), 4 * 3600)
    assert due == datetime(2024, 6, 10, 13, 30, tzinfo=jst) == datetime(2024, 6, 10, 4, 30, tzinfo=UTC)
    assert not is_open(tokyo, datetime(2024, 6, 10, 12, 30, tzinfo=jst))


def test_overnight_shift_split_at_midnight_runs_through_it() -> None:
    nights = BusinessCalendar.model_validate(
        {
            "calendar_id": "n",
            "time_zone": "Europe/Malta",
            "weekly": [
                {"weekday": "mon", "start": "22:00", "end": "24:00"},
                {"weekday": "tue", "start": "00:00", "end": "06:00"},
            ],
        }
    )
    assert add_business_time(nights, mt(2024, 6, 10, 23, 0), 2 * 3600) == mt(2024, 6, 11, 1, 0)


def test_long_targets_jump_weeks_and_stay_exact() -> None:
    # 1000 business hours of 40-hour weeks = 25 weeks, minus nothing: ends Friday 17:00.
    assert add_business_time(MALTA, mt(2024, 1, 1, 9, 0), 1000 * 3600) == mt(2024, 6, 21, 17, 0)


# ---------------------------------------------------------------------------- clocks

NYC = office("America/New_York")
POLICY = SlaPolicy.model_validate(
    {
        "policy_id": "p2",
        "name": "Normal",
        "priority": "P2",
        "calendar_id": "office",
        "warn_before_minutes": 30,
        "targets": {"first_response": 60, "next_response": 120, "resolution": 8 * 60},
    }
)


def ev(kind: str, at: datetime, event_id: str | None = None) -> SlaEvent:
    return SlaEvent.model_validate({"event_id": event_id or f"{kind}-{at.isoformat()}", "kind": kind, "at": at})


def test_pause_over_a_weekend_consumes_no_business_time() -> None:
    clock = replay(
        [
            ev("started", ny(2024, 6, 7, 15, 0)),
            ev("paused", ny(2024, 6, 7, 16, 0)),
            ev("resumed", ny(2024, 6, 10, 9, 0)),
        ]
    )
    st_ = status(clock, POLICY, NYC, ny(2024, 6, 10, 9, 0))
    assert st_.resolution is not None and st_.resolution.elapsed_seconds == 3600
    assert st_.resolution.due_at == ny(2024, 6, 10, 16, 0)  # 7 h left from Monday 09:00
    paused = status(
        replay([ev("paused", ny(2024, 6, 7, 16, 0))], replay([ev("started", ny(2024, 6, 7, 15, 0))])),
        POLICY,
        NYC,
        ny(2024, 6, 9, 12, 0),
    )
    assert paused.resolution is not None and paused.resolution.state == "paused"
    assert paused.resolution.due_at is None and paused.resolution.remaining_seconds == 7 * 3600


@settings(max_examples=60, deadline=None)
@given(
    cal=calendars(),
    start=instants,
    minutes=st.integers(1, 3000),
    p=st.integers(0, 20 * 86400),
    pause=st.integers(0, 20 * 86400),
)
def test_a_pause_shifts_the_deadline_by_exactly_its_business_time(
    cal: BusinessCalendar, start: datetime, minutes: int, p: int, pause: int
) -> None:
    policy = POLICY.model_copy(
        update={"calendar_id": cal.calendar_id, "targets": POLICY.targets.model_copy(update={"resolution": minutes})}
    )
    start = start.replace(microsecond=0)
    plain = status(replay([ev("started", start)]), policy, cal, start).resolution
    assert plain is not None and plain.due_at is not None
    paused_at, resumed_at = start + timedelta(seconds=p), start + timedelta(seconds=p + pause)
    assume(paused_at < plain.due_at)
    clock = replay([ev("started", start), ev("paused", paused_at), ev("resumed", resumed_at)])
    shifted = status(clock, policy, cal, resumed_at).resolution
    assert shifted is not None and shifted.due_at is not None and shifted.state in ("ok", "warning")
    assert shifted.due_at >= plain.due_at
    assert business_seconds_between(cal, plain.due_at, shifted.due_at) == business_seconds_between(
        cal, paused_at, resumed_at
    )
    assert shifted.remaining_seconds == minutes * 60 - business_seconds_between(cal, start, paused_at)


@settings(max_examples=60, deadline=None)
@given(cal=calendars(), start=instants, minutes=st.integers(1, 3000))
def test_breached_one_second_after_the_deadline_not_at_it(cal: BusinessCalendar, start: datetime, minutes: int) -> None:
    policy = POLICY.model_copy(
        update={
            "calendar_id": "c",
            "warn_before_minutes": 0,
            "targets": POLICY.targets.model_copy(update={"resolution": minutes}),
        }
    )
    start = start.replace(microsecond=0)
    clock = replay([ev("started", start)])
    due = add_business_time(cal, start, minutes * 60)
    at_due = status(clock, policy, cal, due).resolution
    after = status(clock, policy, cal, due + SECOND).resolution
    assert at_due is not None and after is not None
    assert at_due.state == "ok" and at_due.due_at == due and at_due.breached_at is None
    assert after.state == "breached" and after.breached_at == due == after.due_at


def test_first_response_then_a_next_response_cycle() -> None:
    events = [
        ev("started", ny(2024, 6, 10, 9, 0)),
        ev("responded", ny(2024, 6, 10, 9, 40)),
        ev("player_replied", ny(2024, 6, 10, 11, 0)),
        ev("player_replied", ny(2024, 6, 10, 11, 30)),
    ]
    clock = replay(events)
    s = status(clock, POLICY, NYC, ny(2024, 6, 10, 12, 45))
    assert s.first_response is not None and s.first_response.state == "met"
    assert s.first_response.met_at == ny(2024, 6, 10, 9, 40) and s.first_response.remaining_seconds == 20 * 60
    # The second player message does not restart the wait: due 2 h after the first one.
    assert s.next_response is not None and s.next_response.cycle == 1
    assert s.next_response.due_at == ny(2024, 6, 10, 13, 0) and s.next_response.state == "warning"
    assert s.resolution is not None and s.resolution.state == "ok"
    late = status(apply(clock, ev("responded", ny(2024, 6, 10, 13, 5))), POLICY, NYC, ny(2024, 6, 10, 14, 0))
    assert late.next_response is not None and late.next_response.state == "breached"
    assert late.next_response.breached_at == ny(2024, 6, 10, 13, 0) and not late.next_response.live


def test_solving_stops_response_targets_and_reopening_continues_resolution() -> None:
    clock = replay([ev("started", ny(2024, 6, 10, 9, 0)), ev("solved", ny(2024, 6, 10, 9, 30))])
    s = status(clock, POLICY, NYC, ny(2024, 6, 12, 9, 0))
    assert s.first_response is not None and s.first_response.state == "stopped"
    assert s.resolution is not None and s.resolution.state == "met" and s.resolution.elapsed_seconds == 1800
    reopened = apply(clock, ev("reopened", ny(2024, 6, 11, 9, 0)))
    s = status(reopened, POLICY, NYC, ny(2024, 6, 11, 10, 0))
    assert s.resolution is not None and s.resolution.state == "ok"
    assert s.resolution.elapsed_seconds == 5400 and s.resolution.due_at == ny(2024, 6, 11, 16, 30)
    assert s.first_response is not None and s.first_response.live and s.first_response.elapsed_seconds == 5400
    assert s.first_response.state == "breached" and s.first_response.breached_at == ny(2024, 6, 11, 9, 30)


def test_repeats_are_ignored_and_out_of_order_or_impossible_events_refused() -> None:
    start = ev("started", ny(2024, 6, 10, 9, 0), "e1")
    clock = apply(SlaClock(), start)
    assert apply(clock, start) is clock
    assert apply(clock, ev("paused", ny(2024, 6, 10, 8, 0), "e1")) is clock  # same id: ignored
    with pytest.raises(Conflict) as order:
        apply(clock, ev("paused", ny(2024, 6, 10, 8, 0)))
    assert order.value.field == "at"
    for events in (
        [ev("paused", ny(2024, 6, 10, 8, 0))],
        [start, ev("started", ny(2024, 6, 10, 9, 5))],
        [start, ev("resumed", ny(2024, 6, 10, 9, 5))],
        [start, ev("paused", ny(2024, 6, 10, 9, 5)), ev("paused", ny(2024, 6, 10, 9, 6))],
        [start, ev("solved", ny(2024, 6, 10, 9, 5)), ev("player_replied", ny(2024, 6, 10, 9, 6))],
        [start, ev("reopened", ny(2024, 6, 10, 9, 5))],
    ):
        with pytest.raises(Conflict) as refused:
            replay(events)
        assert refused.value.field == "kind"
    with pytest.raises(InvalidInput) as early:
        status(clock, POLICY, NYC, ny(2024, 6, 10, 8, 0))
    assert early.value.field == "now"
    with pytest.raises(InvalidInput) as wrong:
        status(clock, POLICY, MALTA.model_copy(update={"calendar_id": "other"}), ny(2024, 6, 10, 10, 0))
    assert wrong.value.field == "calendar"


def test_twenty_four_seven_policy_needs_no_calendar() -> None:
    policy = POLICY.model_copy(update={"calendar_id": None, "twenty_four_seven": True})
    clock = replay([ev("started", ny(2024, 6, 8, 9, 0))])  # a Saturday
    s = status(clock, policy, None, ny(2024, 6, 8, 9, 0))
    assert s.first_response is not None and s.first_response.due_at == ny(2024, 6, 8, 10, 0)
    assert s.next_response is None


def test_due_events_see_each_warning_and_breach_once_and_say_when_to_wake() -> None:
    subjects = [
        SlaSubject("t1", replay([ev("started", ny(2024, 6, 10, 9, 0))]), POLICY, NYC),
        SlaSubject(
            "t2", replay([ev("started", ny(2024, 6, 10, 9, 0)), ev("responded", ny(2024, 6, 10, 9, 10))]), POLICY, NYC
        ),
    ]
    first = due_events(subjects, ny(2024, 6, 10, 9, 20))
    assert first.events == () and first.next_at == ny(2024, 6, 10, 9, 30, 1)  # t1's warning
    warned = due_events(subjects, ny(2024, 6, 10, 9, 45), since=ny(2024, 6, 10, 9, 20))
    assert [(e.key, e.target, e.kind, e.at) for e in warned.events] == [
        ("t1", "first_response", "warning", ny(2024, 6, 10, 9, 30))
    ]
    assert warned.next_at == ny(2024, 6, 10, 10, 0, 1)
    later = due_events(subjects, ny(2024, 6, 10, 11, 0), since=ny(2024, 6, 10, 9, 45))
    assert [(e.key, e.target, e.kind, e.due_at) for e in later.events] == [
        ("t1", "first_response", "breach", ny(2024, 6, 10, 10, 0))
    ]
    again = due_events(subjects, ny(2024, 6, 10, 11, 0))
    assert later.events[0].event_id in {e.event_id for e in again.events}
    assert due_events(subjects, ny(2024, 6, 10, 11, 5), since=ny(2024, 6, 10, 11, 0)).events == ()


# ---------------------------------------------------------------------------- configuration


def _error_locs(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [e["loc"] for e in exc.errors()]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"weekly": [{"weekday": "mon", "start": "22:00", "end": "06:00"}]}, "weekly"),
        ({"weekly": [{"weekday": 7, "start": "09:00", "end": "17:00"}]}, "weekly"),
        ({"weekly": [{"weekday": "funday", "start": "09:00", "end": "17:00"}]}, "weekly"),
        (
            {
                "weekly": [
                    {"weekday": 0, "start": "09:00", "end": "13:00"},
                    {"weekday": 0, "start": "12:00", "end": "17:00"},
                ]
            },
            "weekly",
        ),
        ({"weekly": []}, "weekly"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"holidays": ["2024-12-24"], "special_days": {"2024-12-24": []}}, None),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_calendar_validation_names_the_field(doc: dict[str, Any], field: str | None) -> None:
    base = {
        "calendar_id": "c",
        "time_zone": "Europe/Malta",
        "weekly": [{"weekday": 0, "start": "09:00", "end": "17:00"}],
    }
    with pytest.raises(ValidationError) as exc:
        BusinessCalendar.model_validate(base | doc)
    if field is None:
        assert "special_days" in str(exc.value)
    else:
        assert any(loc and loc[0] == field for loc in _error_locs(exc.value))


def test_day_names_and_midnight_end_are_accepted() -> None:
    i = Interval.model_validate({"weekday": "Sunday", "start": "18:00", "end": "24:00"})
    assert i.weekday == 6 and i.end_seconds == 86400


def test_policy_needs_exactly_one_clock() -> None:
    for extra in ({}, {"calendar_id": "office", "twenty_four_seven": True}):
        with pytest.raises(ValidationError, match="calendar_id"):
            SlaPolicy.model_validate({"policy_id": "p", "name": "n", "priority": "P1", "targets": {}} | extra)


def test_policy_choice_exact_category_then_any_then_default() -> None:
    def pol(pid: str, priority: str, category: str | None) -> dict[str, Any]:
        return {
            "policy_id": pid,
            "name": pid,
            "priority": priority,
            "category": category,
            "twenty_four_seven": True,
            "targets": {"first_response": 60},
        }

    doc = {"policies": [pol("any1", "P1", None), pol("pay1", "P1", "payments"), pol("low", "P4", None)]}
    policies = SlaPolicySet.model_validate(doc)
    assert select_policy(policies, "P1", "payments").policy_id == "pay1"
    assert select_policy(policies, "P1", "kyc").policy_id == "any1"
    assert select_policy(policies, "P1", None).policy_id == "any1"
    with pytest.raises(NotFound) as none:
        select_policy(policies, "P2", "payments")
    assert none.value.field == "priority"
    assert select_policy(SlaPolicySet.model_validate(doc | {"default_policy_id": "low"}), "P2", "x").policy_id == "low"
    with pytest.raises(ValidationError, match="two policies"):
        SlaPolicySet.model_validate({"policies": [pol("a", "P1", None), pol("b", "P1", None)]})
    with pytest.raises(ValidationError, match="unknown calendar_id"):
        SlaPolicySet.model_validate(
            {"policies": [pol("a", "P1", None) | {"twenty_four_seven": False, "calendar_id": "nowhere"}]}
        )
    assert sla.calendar_for(policies, policies.policies[0]) is TWENTY_FOUR_SEVEN
