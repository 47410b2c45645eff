"""Time of the SLA rules alone (no stack): status() of many open tickets' clocks.

Tickets are spread over four policies (business-hours calendars in Europe/Malta with holidays and
a short day, America/New_York, Asia/Tokyo with a lunch break, and 24/7), opened over the past
30 days, in a realistic mix of states: awaiting a first response, answered and awaiting the
player, awaiting a next response after a player message, paused on the player (some paused and
resumed several times). Each status() is timed alone (perf_counter_ns; the timer's own cost is
reported, not subtracted); then one due_events() scan of all of them is timed.

    python -m benchmarks sla
    python -m benchmarks.sla --clocks 100000
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from benchmarks.common import Report, percentile
from domain.sla import SlaClock, SlaSubject, due_events, replay, status
from schemas.helpdesk_sla import BusinessCalendar, SlaEvent, SlaPolicy


@dataclass(frozen=True, slots=True)
class SlaOptions:
    clocks: int = 100_000
    seed: int = 7


def _calendars() -> list[BusinessCalendar]:
    def week(days: str, *hours: tuple[str, str]) -> list[dict[str, str]]:
        return [{"weekday": d, "start": s, "end": e} for d in days.split() for s, e in hours]

    return [
        BusinessCalendar.model_validate(
            {
                "calendar_id": "malta",
                "time_zone": "Europe/Malta",
                "weekly": week("mon tue wed thu fri", ("08:00", "18:00")) + week("sat", ("10:00", "14:00")),
                "holidays": ["2024-12-25", "2025-01-01", "2025-02-10", "2025-03-19", "2025-03-31", "2025-04-18"],
                "special_days": {"2024-12-24": [{"start": "08:00", "end": "12:00"}]},
            }
        ),
        BusinessCalendar.model_validate(
            {
                "calendar_id": "nyc",
                "time_zone": "America/New_York",
                "weekly": week("mon tue wed thu fri", ("09:00", "17:00")),
                "holidays": ["2025-01-01", "2025-01-20", "2025-02-17"],
            }
        ),
        BusinessCalendar.model_validate(
            {
                "calendar_id": "tokyo",
                "time_zone": "Asia/Tokyo",
                "weekly": week("mon tue wed thu fri", ("09:00", "12:00"), ("13:00", "18:00")),
            }
        ),
    ]


def _policies() -> list[SlaPolicy]:
    def policy(pid: str, priority: str, calendar: str | None, fr: int, nr: int, res: int) -> SlaPolicy:
        where: dict[str, object] = {"calendar_id": calendar} if calendar else {"twenty_four_seven": True}
        return SlaPolicy.model_validate(
            {
                "policy_id": pid,
                "name": pid,
                "priority": priority,
                "warn_before_minutes": 30,
                **where,
                "targets": {"first_response": fr, "next_response": nr, "resolution": res},
            }
        )

    return [
        policy("malta-p2", "P2", "malta", 120, 240, 3 * 8 * 60),
        policy("nyc-p3", "P3", "nyc", 480, 480, 5 * 8 * 60),
        policy("tokyo-p2", "P2", "tokyo", 60, 120, 2 * 8 * 60),
        policy("vip-p1", "P1", None, 15, 30, 8 * 60),
    ]


def _clock(rng: random.Random, now: datetime) -> SlaClock:
    t = now - timedelta(seconds=rng.randrange(30 * 86400))
    events = [("started", t)]

    def later(most: int) -> datetime:
        return min(now, t + timedelta(seconds=rng.randrange(60, most)))

    shape = rng.random()
    if shape > 0.3:  # answered
        t = later(6 * 3600)
        events.append(("responded", t))
        if shape > 0.55:  # the player wrote again
            t = later(86400)
            events.append(("player_replied", t))
        if shape > 0.8:  # pending on the player, maybe more than once
            for _ in range(rng.randint(1, 3)):
                t = later(2 * 86400)
                events.append(("paused", t))
                if rng.random() < 0.7:
                    t = later(3 * 86400)
                    events.append(("resumed", t))
                else:
                    break
    return replay(SlaEvent(event_id=f"e{i}", kind=kind, at=at) for i, (kind, at) in enumerate(events))


def measure(opts: SlaOptions) -> Report:
    report = Report("sla", f"status() of {opts.clocks:,} open tickets' clocks, 4 policies (3 calendars + 24/7)")
    rng = random.Random(opts.seed)
    now = datetime(2025, 3, 20, 14, 7, tzinfo=UTC)
    calendars = {c.calendar_id: c for c in _calendars()}
    policies = _policies()
    build = time.perf_counter()
    subjects = []
    for i in range(opts.clocks):
        policy = rng.choice(policies)
        subjects.append(SlaSubject(f"t{i}", _clock(rng, now), policy, calendars.get(policy.calendar_id or "")))
    built = time.perf_counter() - build
    clock = time.perf_counter_ns
    for s in subjects[:5_000]:  # warm the offset and calendar caches
        status(s.clock, s.policy, s.calendar, now)
    timer = []
    for _ in range(10_000):
        t0 = clock()
        timer.append(clock() - t0)
    timer.sort()
    samples = [0] * len(subjects)
    states: dict[str, int] = {}
    for i, s in enumerate(subjects):
        t0 = clock()
        st = status(s.clock, s.policy, s.calendar, now)
        samples[i] = clock() - t0
        for ts in st.targets():
            states[ts.state] = states.get(ts.state, 0) + 1
    samples.sort()
    scan_start = time.perf_counter()
    scan = due_events(subjects, now, since=now - timedelta(minutes=1))
    scan_s = time.perf_counter() - scan_start

    def us(ns: float) -> str:
        return f"{ns / 1000:.1f} us"

    report.add("status() p50 per clock", us(percentile(samples, 50)))
    report.add("status() p99 per clock", us(percentile(samples, 99)))
    report.add("status() p99.9 per clock", us(percentile(samples, 99.9)))
    report.add("status() max", us(samples[-1]))
    report.add(
        f"due_events() over {len(subjects):,} clocks",
        f"{scan_s:.2f} s ({scan_s / len(subjects) * 1e6:.1f} us/clock, {len(scan.events)} events in the last minute)",
    )
    report.add("build clocks (replay events)", f"{built:.2f} s")
    report.notes.append(f"timer overhead per sample (included above): p50 {us(percentile(timer, 50))}")
    report.notes.append("target states: " + ", ".join(f"{k} {v:,}" for k, v in sorted(states.items())))
    report.notes.append(
        f"Python {sys.version.split()[0]}, GC on, one core; tail figures include GC pauses and the neighbours"
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sla", description=(__doc__ or "").split("\n")[0])
    defaults = SlaOptions()
    p.add_argument("--clocks", type=int, default=defaults.clocks)
    p.add_argument("--seed", type=int, default=defaults.seed)
    args = p.parse_args(argv)
    print(measure(SlaOptions(args.clocks, args.seed)).render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
