"""SLA clocks over business hours: pure rules, clock passed in, tz-aware datetimes in, UTC out.

Business time. A calendar's business hours are wall-clock intervals of local dates in its zone.
An instant is business time when its local wall-clock time (in the zone's offset at that
instant) lies in an interval of its local date. So on a spring-forward day the skipped wall
hour is never counted (it has no instants), and on a fall-back day the repeated wall hour is
counted twice, once per real elapsed second, if the hours cover it. Arithmetic is in whole
seconds: sub-second parts of instants are dropped (floored) before anything is computed.

How it is computed (never minute by minute): UTC time is cut into stretches of constant UTC
offset (found once per zone and year by probing the zone every 6 hours and bisecting to the
second; two transitions less than 6 hours apart would be missed, and tzdata has none since
1970). Within a stretch local time = UTC + offset, so business time there is the business
time of a local wall-clock range, summed day by day, whole weeks at a time, with the
calendar's holidays and special days corrected from a sorted index.

Clocks. `SlaClock` keeps, per target, the UTC spans during which the target's clock ran; status
derives everything from the spans with the policy and calendar given at that moment (so a
priority change re-evaluates the whole ticket under the new policy). Events apply in order:
- an event whose `event_id` was already applied is ignored (the clock is returned unchanged);
- an event earlier than the last applied one is refused (Conflict, field "at"); equal times
  apply in arrival order;
- an event the state does not allow is refused (Conflict, field "kind"): anything before
  `started`, `started` twice, `paused` unless running, `resumed` unless paused,
  `player_replied` on a solved ticket (send `reopened` first), `solved` or `reopened` twice.
  `responded` on a solved ticket is accepted and changes nothing (a closing note).
A target is breached once its clock has run past its deadline: the deadline second itself is
still on time (met at `due_at` is met; paused at `due_at` is not breached, and breaches as soon
as it resumes). Warnings use the same rule with `warn_before_minutes` less.
"""

from __future__ import annotations

import zoneinfo
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from domain.errors import Conflict, InvalidInput, NotFound
from schemas.helpdesk_sla import BusinessCalendar, Interval, Priority, SlaEvent, SlaPolicy, SlaPolicySet

DAY = 86_400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_ORD1970 = date(1970, 1, 1).toordinal()
_PROBE = 6 * 3600
_MAX_YEAR = 9990  # datetime stops at 9999; local time may run a day ahead of UTC

TargetName = Literal["first_response", "next_response", "resolution"]
TargetState = Literal["ok", "warning", "breached", "met", "paused", "stopped"]
ClockState = Literal["new", "running", "paused", "solved"]
TARGETS: tuple[TargetName, ...] = ("first_response", "next_response", "resolution")

TWENTY_FOUR_SEVEN = BusinessCalendar(
    calendar_id="24x7", time_zone="UTC",
    weekly=[Interval(weekday=d, start=time(0), end=time(0)) for d in range(7)],
)


# ---------------------------------------------------------------------------- compiled calendars

Ranges = tuple[tuple[int, int], ...]  # [start, end) seconds after local midnight, sorted, disjoint


@dataclass(frozen=True, slots=True)
class _Compiled:
    zone: zoneinfo.ZoneInfo
    weekly: tuple[Ranges, ...]  # by weekday, Monday 0
    cyc: tuple[int, ...]  # cyc[i] = business seconds of weekdays 0..i-1 over two weeks (i in 0..14)
    week_total: int
    exc: dict[int, Ranges]  # local day number (days since 1970-01-01) -> that day's hours
    exc_days: tuple[int, ...]
    exc_cum: tuple[int, ...]  # exc_cum[i] = sum over exc_days[:i] of (special total - weekly total)
    always: bool  # open every second: plain wall-clock arithmetic

    def day(self, dn: int) -> Ranges:
        ranges = self.exc.get(dn)
        return self.weekly[(dn + 3) % 7] if ranges is None else ranges


def _merge(pairs: Iterable[tuple[int, int]]) -> Ranges:
    out: list[tuple[int, int]] = []
    for s, e in sorted(pairs):
        if out and s <= out[-1][1]:  # touching hours are one stretch
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return tuple(out)


def _total(ranges: Ranges) -> int:
    return sum(e - s for s, e in ranges)


def _compile(cal: BusinessCalendar) -> _Compiled:
    weekly = tuple(_merge((i.start_seconds, i.end_seconds) for i in cal.weekly if i.weekday == d) for d in range(7))
    totals = [_total(r) for r in weekly]
    cyc = [0]
    for i in range(14):
        cyc.append(cyc[-1] + totals[i % 7])
    exc: dict[int, Ranges] = {d.toordinal() - _ORD1970: () for d in cal.holidays}
    for d, ranges in cal.special_days.items():
        exc[d.toordinal() - _ORD1970] = _merge((r.start_seconds, r.end_seconds) for r in ranges)
    days = tuple(sorted(exc))
    cum = [0]
    for dn in days:
        cum.append(cum[-1] + _total(exc[dn]) - totals[(dn + 3) % 7])
    always = not exc and all(r == ((0, DAY),) for r in weekly)
    return _Compiled(zoneinfo.ZoneInfo(cal.time_zone), weekly, tuple(cyc), cyc[7], exc, days, tuple(cum), always)


_COMPILED: dict[int, tuple[BusinessCalendar, _Compiled]] = {}


def _compiled(cal: BusinessCalendar) -> _Compiled:
    # Calendars are frozen, so a compiled form can be reused while the same object is alive;
    # the entry holds the object, so its id cannot be reused by another calendar meanwhile.
    hit = _COMPILED.get(id(cal))
    if hit is not None and hit[0] is cal:
        return hit[1]
    if len(_COMPILED) >= 1024:
        _COMPILED.clear()
    compiled = _compile(cal)
    _COMPILED[id(cal)] = (cal, compiled)
    return compiled


# ---------------------------------------------------------------------------- UTC offset stretches

_SEGMENTS: dict[tuple[str, int], tuple[tuple[int, int, int], ...]] = {}


def _offset(zone: zoneinfo.ZoneInfo, u: int) -> int:
    off = datetime.fromtimestamp(u, zone).utcoffset()
    assert off is not None
    return off // _SECOND


def _year_start(year: int) -> int:
    return (date(year, 1, 1).toordinal() - _ORD1970) * DAY


def _year_segments(zone: zoneinfo.ZoneInfo, year: int) -> tuple[tuple[int, int, int], ...]:
    """(start, end, offset) of each stretch of one UTC year in which the zone's offset is constant."""
    key = (zone.key, year)
    cached = _SEGMENTS.get(key)
    if cached is not None:
        return cached
    lo, hi = _year_start(year), _year_start(year + 1)
    out: list[tuple[int, int, int]] = []
    start, off, u = lo, _offset(zone, lo), lo
    while u < hi - 1:
        v = min(u + _PROBE, hi - 1)
        if _offset(zone, v) == off:
            u = v
            continue
        left, right = u, v  # offset(left) == off != offset(right): find the first second of the new offset
        while right - left > 1:
            mid = (left + right) // 2
            if _offset(zone, mid) == off:
                left = mid
            else:
                right = mid
        out.append((start, right, off))
        start, off, u = right, _offset(zone, right), right
    out.append((start, hi, off))
    result = tuple(out)
    _SEGMENTS[key] = result
    return result


def _segments_from(zone: zoneinfo.ZoneInfo, u: int) -> Iterator[tuple[int, int, int]]:
    year = date.fromordinal(u // DAY + _ORD1970).year
    while True:
        if year > _MAX_YEAR:
            raise InvalidInput("the result lies beyond the supported range of dates", field="seconds")
        segs = _year_segments(zone, year)
        for i in range(max(bisect_right(segs, (u, DAY * 10**9, 0)) - 1, 0), len(segs)):
            if segs[i][1] > u:
                yield segs[i]
        year += 1


# ---------------------------------------------------------------------------- local business time

def _within(ranges: Ranges, a: int, b: int) -> int:
    total = 0
    for s, e in ranges:
        lo = s if s > a else a
        hi = e if e < b else b
        if hi > lo:
            total += hi - lo
    return total


def _full_days(c: _Compiled, d1: int, d2: int) -> int:
    """Business seconds of the whole local days [d1, d2)."""
    weeks, rem = divmod(d2 - d1, 7)
    w = (d1 + 3) % 7
    total = weeks * c.week_total + c.cyc[w + rem] - c.cyc[w]
    if c.exc_days:
        total += c.exc_cum[bisect_left(c.exc_days, d2)] - c.exc_cum[bisect_left(c.exc_days, d1)]
    return total


def _local_between(c: _Compiled, l1: int, l2: int) -> int:
    """Business seconds of the local wall-clock range [l1, l2) (seconds since 1970-01-01 local)."""
    if l2 <= l1:
        return 0
    d1, r1 = divmod(l1, DAY)
    d2, r2 = divmod(l2, DAY)
    if d1 == d2:
        return _within(c.day(d1), r1, r2)
    return _within(c.day(d1), r1, DAY) + _full_days(c, d1 + 1, d2) + _within(c.day(d2), 0, r2)


def _local_add(c: _Compiled, l1: int, x: int) -> int:
    """The earliest local l with _local_between(l1, l) == x, for x > 0."""
    d, r = divmod(l1, DAY)
    for s, e in c.day(d):
        lo = s if s > r else r
        if e > lo:
            if x <= e - lo:
                return d * DAY + lo + x
            x -= e - lo
    d += 1
    while x > c.week_total:  # jump whole weeks, leaving at least one second for the day walk
        k = (x - 1) // c.week_total
        got = 0
        while k:
            got = _full_days(c, d, d + 7 * k)
            if got < x:
                break
            k //= 2  # special days added hours: jump less
        if not k:
            break
        d += 7 * k
        x -= got
    while True:
        for s, e in c.day(d):
            if x <= e - s:
                return d * DAY + s + x
            x -= e - s
        d += 1


# ---------------------------------------------------------------------------- UTC business time

def _between(c: _Compiled, u0: int, u1: int) -> int:
    if u1 <= u0:
        return 0
    if c.always:
        return u1 - u0
    total = 0
    for a, b, off in _segments_from(c.zone, u0):
        if a >= u1:
            break
        total += _local_between(c, max(a, u0) + off, min(b, u1) + off)
        if b >= u1:
            break
    return total


def _add(c: _Compiled, u0: int, x: int) -> int:
    if x <= 0:
        return u0
    if c.always:
        return u0 + x
    for a, b, off in _segments_from(c.zone, u0):
        lo = max(a, u0) + off
        cap = _local_between(c, lo, b + off)
        if x <= cap:
            return _local_add(c, lo, x) - off
        x -= cap
    raise AssertionError("unreachable: the segments never end")


def _u(t: datetime, field: str) -> int:
    if t.tzinfo is None or t.utcoffset() is None:
        raise InvalidInput(f"{field} must be timezone-aware (UTC)", field=field)
    return (t - _EPOCH) // _SECOND


def _dt(u: int) -> datetime:
    return _EPOCH + timedelta(seconds=u)


def business_seconds_between(calendar: BusinessCalendar, start_utc: datetime, end_utc: datetime) -> int:
    """Business seconds in [start, end); negative (the same amount) when end is before start."""
    c = _compiled(calendar)
    u0, u1 = _u(start_utc, "start_utc"), _u(end_utc, "end_utc")
    return _between(c, u0, u1) if u0 <= u1 else -_between(c, u1, u0)


def add_business_time(calendar: BusinessCalendar, start_utc: datetime, seconds: int) -> datetime:
    """The earliest UTC instant at which `seconds` business seconds have elapsed since start (start itself for 0)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
        raise InvalidInput("seconds must be a non-negative integer", field="seconds")
    return _dt(_add(_compiled(calendar), _u(start_utc, "start_utc"), seconds))


def is_open(calendar: BusinessCalendar, t: datetime) -> bool:
    """Whether the second containing t is business time."""
    u = _u(t, "t")
    return _between(_compiled(calendar), u, u + 1) == 1


def next_open(calendar: BusinessCalendar, t: datetime) -> datetime:
    """The first business second at or after t (t itself, floored to the second, when open)."""
    # The first open second p >= t is exactly where one business second has elapsed at p + 1.
    return _dt(_add(_compiled(calendar), _u(t, "t"), 1) - 1)


# ---------------------------------------------------------------------------- policies

def select_policy(policies: SlaPolicySet, priority: Priority, category: str | None) -> SlaPolicy:
    """Exact category beats any category; then the set's default; no policy at all is NotFound."""
    policy = policies.pick(priority, category)
    if policy is None:
        raise NotFound(f"no SLA policy for priority {priority} and category {category or 'any'}, and no default",
                       field="priority")
    return policy


def calendar_for(policies: SlaPolicySet, policy: SlaPolicy) -> BusinessCalendar:
    if policy.twenty_four_seven:
        return TWENTY_FOUR_SEVEN
    cal = policies.calendar(policy.calendar_id or "")
    if cal is None:
        raise NotFound(f"no calendar {policy.calendar_id}", field="calendar_id")
    return cal


def _calendar_of(policy: SlaPolicy, calendar: BusinessCalendar | None) -> BusinessCalendar:
    if policy.twenty_four_seven:
        return TWENTY_FOUR_SEVEN
    if calendar is None or calendar.calendar_id != policy.calendar_id:
        raise InvalidInput(f"policy {policy.policy_id} runs on calendar {policy.calendar_id}", field="calendar")
    return calendar


# ---------------------------------------------------------------------------- clocks

Span = tuple[datetime, datetime | None]  # [start, end) in UTC; end None while running


@dataclass(frozen=True, slots=True)
class TargetClock:
    spans: tuple[Span, ...] = ()
    live: bool = False  # awaited: its clock runs whenever the ticket's clock runs
    met_at: datetime | None = None
    stopped_at: datetime | None = None  # solved before it was met
    cycle: int = 0  # next_response: 1 for the first player message after a response, then 2, ...

    def _close(self, at: datetime) -> TargetClock:
        if self.spans and self.spans[-1][1] is None:
            return replace(self, spans=(*self.spans[:-1], (self.spans[-1][0], at)))
        return self

    def _open(self, at: datetime) -> TargetClock:
        return replace(self, spans=(*self.spans, (at, None))) if self.live else self

    def _met(self, at: datetime) -> TargetClock:
        return replace(self._close(at), live=False, met_at=at)


@dataclass(frozen=True, slots=True)
class SlaClock:
    state: ClockState = "new"
    first_response: TargetClock = TargetClock()
    next_response: TargetClock = TargetClock()
    resolution: TargetClock = TargetClock()
    last_at: datetime | None = None
    event_ids: frozenset[str] = frozenset()

    def _each(self, f: str, at: datetime) -> SlaClock:
        return replace(self, first_response=getattr(self.first_response, f)(at),
                       next_response=getattr(self.next_response, f)(at), resolution=getattr(self.resolution, f)(at))


def _refuse(clock: SlaClock, event: SlaEvent, why: str) -> Conflict:
    return Conflict(f"SLA event {event.event_id} ({event.kind}) refused: {why} (clock is {clock.state})", field="kind")


def apply(clock: SlaClock, event: SlaEvent) -> SlaClock:
    """The clock after one event (see the module docstring for repeats, order and refusals)."""
    if event.event_id in clock.event_ids:
        return clock
    at = _dt(_u(event.at, "at"))
    if clock.last_at is not None and at < clock.last_at:
        raise Conflict(f"SLA event {event.event_id} at {at.isoformat()} is older than the last applied "
                       f"({clock.last_at.isoformat()})", field="at")
    state, kind = clock.state, event.kind
    if state == "new" and kind != "started":
        raise _refuse(clock, event, "the clock has not started")
    new: SlaClock
    if kind == "started":
        if state != "new":
            raise _refuse(clock, event, "already started")
        running = TargetClock(spans=((at, None),), live=True)
        new = replace(clock, state="running", first_response=running, resolution=running)
    elif kind == "paused":
        if state != "running":
            raise _refuse(clock, event, "only a running clock pauses")
        new = replace(clock._each("_close", at), state="paused")
    elif kind == "resumed":
        if state != "paused":
            raise _refuse(clock, event, "only a paused clock resumes")
        new = replace(clock._each("_open", at), state="running")
    elif kind == "responded":
        if state == "solved":
            new = clock  # a note after solving changes no target
        elif clock.first_response.live:
            new = replace(clock, first_response=clock.first_response._met(at))
        elif clock.next_response.live:
            new = replace(clock, next_response=clock.next_response._met(at))
        else:
            new = clock  # a further reply while nothing is awaited
    elif kind == "player_replied":
        if state == "solved":
            raise _refuse(clock, event, "a solved ticket is reopened first")
        if clock.first_response.met_at is None or clock.next_response.live:
            new = clock  # already awaiting a reply: the clock counts from the first unanswered message
        else:
            new = replace(clock, next_response=_cycle(clock.next_response, at, state == "running"))
    elif kind == "solved":
        if state == "solved":
            raise _refuse(clock, event, "already solved")

        def stop(t: TargetClock) -> TargetClock:
            return replace(t._close(at), live=False, stopped_at=at) if t.live else t

        new = replace(clock, state="solved", first_response=stop(clock.first_response),
                      next_response=stop(clock.next_response), resolution=clock.resolution._met(at))
    else:  # reopened
        if state != "solved":
            raise _refuse(clock, event, "only a solved ticket reopens")
        first = clock.first_response
        if first.met_at is None:
            first = replace(first, live=True, stopped_at=None)._open(at)
        nxt = _cycle(clock.next_response, at, True) if first.met_at is not None else clock.next_response
        resolution = replace(clock.resolution, live=True, met_at=None)._open(at)
        new = replace(clock, state="running", first_response=first, next_response=nxt, resolution=resolution)
    return replace(new, last_at=at, event_ids=clock.event_ids | {event.event_id})


def _cycle(previous: TargetClock, at: datetime, running: bool) -> TargetClock:
    return TargetClock(spans=((at, None),) if running else (), live=True, cycle=previous.cycle + 1)


def replay(events: Iterable[SlaEvent], clock: SlaClock | None = None) -> SlaClock:
    clock = clock or SlaClock()
    for event in events:
        clock = apply(clock, event)
    return clock


# ---------------------------------------------------------------------------- status

@dataclass(frozen=True, slots=True)
class TargetStatus:
    target: TargetName
    state: TargetState
    live: bool  # still awaited (neither met nor stopped)
    target_seconds: int
    elapsed_seconds: int  # business seconds the target's clock has run up to now (or until met/stopped)
    remaining_seconds: int  # target - elapsed; negative once overrun
    due_at: datetime | None  # the deadline; None while paused, or when the clock stopped before it
    warn_at: datetime | None
    breached_at: datetime | None
    met_at: datetime | None
    cycle: int


@dataclass(frozen=True, slots=True)
class SlaStatus:
    policy_id: str
    clock_state: ClockState
    at: datetime
    first_response: TargetStatus | None  # None: the policy sets no such target, or it has not started
    next_response: TargetStatus | None
    resolution: TargetStatus | None

    def targets(self) -> tuple[TargetStatus, ...]:
        return tuple(t for t in (self.first_response, self.next_response, self.resolution) if t is not None)


def _target_status(c: _Compiled, name: TargetName, tc: TargetClock, minutes: int | None, warn_minutes: int,
                   now: int) -> TargetStatus | None:
    if minutes is None or (not tc.spans and not tc.live and tc.met_at is None):
        return None
    target = minutes * 60
    warn_target = max(target - warn_minutes * 60, 0)
    consumed = 0
    due = warn = None
    breached = warned = running = False
    for start, end in tc.spans:
        a = _u(start, "start")
        running = end is None
        b = now if end is None else _u(end, "end")
        cap = _between(c, a, b)
        # A threshold reached exactly at a span's end is not passed: it carries to the next span.
        if not breached and (running or target - consumed <= cap):
            due = _add(c, a, target - consumed)
            breached = due < b
        if not warned and (running or warn_target - consumed <= cap):
            warn = _add(c, a, warn_target - consumed)
            warned = warn < b
        consumed += cap
    state: TargetState
    if breached:
        state = "breached"
    elif tc.met_at is not None:
        state = "met"
    elif tc.stopped_at is not None:
        state = "stopped"
    elif not running:
        state = "paused"
    elif warned:
        state = "warning"
    else:
        state = "ok"
    quiet = state == "paused"
    return TargetStatus(
        target=name, state=state, live=tc.live, target_seconds=target, elapsed_seconds=consumed,
        remaining_seconds=target - consumed,
        due_at=None if due is None or quiet else _dt(due),
        warn_at=None if warn is None or quiet else _dt(warn),
        breached_at=_dt(due) if breached and due is not None else None,
        met_at=tc.met_at, cycle=tc.cycle)


def status(clock: SlaClock, policy: SlaPolicy, calendar: BusinessCalendar | None, now: datetime) -> SlaStatus:
    """Each target of the policy at `now` (not before the clock's last event). `calendar` is the
    policy's calendar; ignored (may be None) for a twenty_four_seven policy."""
    c = _compiled(_calendar_of(policy, calendar))
    u = _u(now, "now")
    if clock.last_at is not None and u < _u(clock.last_at, "now"):
        raise InvalidInput("now is before the clock's last event", field="now")
    t, w = policy.targets, policy.warn_before_minutes
    return SlaStatus(
        policy_id=policy.policy_id, clock_state=clock.state, at=_dt(u),
        first_response=_target_status(c, "first_response", clock.first_response, t.first_response, w, u),
        next_response=_target_status(c, "next_response", clock.next_response, t.next_response, w, u),
        resolution=_target_status(c, "resolution", clock.resolution, t.resolution, w, u),
    )


# ---------------------------------------------------------------------------- scheduler view

@dataclass(frozen=True, slots=True)
class SlaSubject:
    """One ticket as the SLA scheduler holds it."""

    key: str  # the ticket id
    clock: SlaClock
    policy: SlaPolicy
    calendar: BusinessCalendar | None = None  # None for a twenty_four_seven policy


@dataclass(frozen=True, slots=True)
class DueEvent:
    key: str
    target: TargetName
    kind: Literal["warning", "breach"]
    at: datetime  # when it fell due: the warning instant, or the missed deadline
    due_at: datetime
    cycle: int
    event_id: str  # stable: the same warning or breach always has the same id (deduplicate on it)


@dataclass(frozen=True, slots=True)
class DueScan:
    events: tuple[DueEvent, ...]
    next_at: datetime | None  # the earliest instant at which a further event can fall due (sleep until then)


def due_events(subjects: Iterable[SlaSubject], now: datetime, since: datetime | None = None) -> DueScan:
    """Warnings and breaches of still-awaited targets that fell due in [since, now) (all when since is None).

    A scan with `since` = the previous scan's `now` sees each event exactly once. Paused targets
    wake nothing (their deadline moves until they resume); met and stopped targets emit nothing.
    """
    lo = None if since is None else _u(since, "since")
    events: list[DueEvent] = []
    wake: int | None = None
    for subject in subjects:
        for ts in status(subject.clock, subject.policy, subject.calendar, now).targets():
            if not ts.live:
                continue
            fired: tuple[Literal["warning", "breach"], datetime] | None = None
            if ts.state == "breached" and ts.breached_at is not None:
                fired = ("breach", ts.breached_at)
            elif ts.state == "warning" and ts.warn_at is not None:
                fired = ("warning", ts.warn_at)
            if fired is not None and ts.due_at is not None and (lo is None or _u(fired[1], "at") >= lo):
                kind, at = fired
                events.append(DueEvent(
                    key=subject.key, target=ts.target, kind=kind, at=at, due_at=ts.due_at, cycle=ts.cycle,
                    event_id=f"{subject.key}:{ts.target}:{ts.cycle}:{kind}:{at.strftime('%Y%m%dT%H%M%SZ')}"))
            if ts.state in ("ok", "warning"):
                # Passed once the running clock is one second beyond the instant.
                for instant in (ts.warn_at if ts.state == "ok" else None, ts.due_at):
                    if instant is not None:
                        nxt = _u(instant, "at") + 1
                        wake = nxt if wake is None or nxt < wake else wake
    events.sort(key=lambda e: (e.at, e.key, e.target, e.kind))
    return DueScan(tuple(events), None if wake is None else _dt(wake))
