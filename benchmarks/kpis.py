"""Help-desk KPIs over HTTP against the deployed stack: `GET /helpdesk/v1/kpis` for a period holding
--tickets tickets (at most 3,000 on a shared box).

Opens --tickets tickets through the platform route (brand `demo`, --concurrency at a time), waits
until the fact table has them all (the KPI consumer writes each ticket's fact from its events),
then, as a supervisor (every team and agent), reads the report of the period holding them: the first
read (it may backfill days never read before) and --reads sequential reads, printing p50 and p99.
The backlog part of each report reads the brand's active tickets, whatever their number.

    python -m benchmarks kpis
    python -m benchmarks.kpis --tickets 3000 --reads 50
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from adapters.settings import Settings
from benchmarks.chat import _agent_cookie
from benchmarks.common import (
    Api,
    Report,
    Target,
    TransportErrors,
    bounded,
    host_note,
    ms,
    percentile,
    register_players,
    say,
)
from benchmarks.tickets import helpdesk_url

TARGET_P99_MS = 500.0
MAX_TICKETS = 3000


@dataclass(frozen=True, slots=True)
class KpisOptions:
    tickets: int = 3000
    reads: int = 50
    concurrency: int = 16
    players: int = 100
    since: datetime | None = None  # measure a period opened earlier (no new tickets)


async def _report(client: httpx.AsyncClient, url: str, params: dict[str, str]) -> tuple[float, dict[str, Any]]:
    for attempt in range(3):
        started = time.perf_counter()
        try:
            r = await client.get(url, params=params)
        except httpx.TransportError:  # a replica replaced by someone's deploy: ask again, untimed
            if attempt == 2:
                raise
            await asyncio.sleep(2.0)
            continue
        elapsed = time.perf_counter() - started
        r.raise_for_status()
        return elapsed, dict(r.json())
    raise AssertionError("unreachable")


async def run(target: Target, opts: KpisOptions | None = None) -> Report:
    o = opts or KpisOptions()
    n = 0 if o.since is not None else min(o.tickets, MAX_TICKETS)
    players: list[str] = []
    if n:
        async with Api(target) as api:
            players, _ = await register_players(api, o.players)
    hd = Target(helpdesk_url(target), target.api_key, target.rabbitmq_url, target.ray_address)
    start = o.since or datetime.now(UTC) - timedelta(seconds=1)
    errors = 0
    say(f"opening {n} tickets, {o.concurrency} at a time")
    async with Api(hd, connections=o.concurrency) as api:

        async def one(i: int) -> None:
            nonlocal errors
            body = {"ticket_id": str(uuid.uuid4()), "player_id": players[i % len(players)], "brand": "demo",
                    "channel": ("api", "web", "phone")[i % 3], "category": ("general", "payments", "kyc")[i % 3],
                    "priority": ("P1", "P2", "P3", "P4")[i % 4], "subject": f"KPI benchmark ticket {i}",
                    "body": "Where is my withdrawal?"}
            try:
                status, _ = await api.send("POST", "/platform/tickets", body)
            except TransportErrors:
                status = 0
            if status != 201:
                errors += 1

        opened = time.perf_counter()
        await bounded((one(i) for i in range(n)), o.concurrency)
        open_seconds = time.perf_counter() - opened
    end = datetime.now(UTC) + timedelta(minutes=5)
    params = {"brand": "demo", "from": start.isoformat(), "to": end.isoformat()}
    settings = Settings()
    base = target.api_url.split("/platform/v1")[0]
    cookie, _ = await _agent_cookie(base, settings, roles=("supervisor",))
    url = f"{hd.api_url}/kpis"
    async with httpx.AsyncClient(timeout=120, headers={"Cookie": cookie}) as client:
        say("waiting for the fact table to hold every ticket")
        caught = time.perf_counter()
        first, report = await _report(client, url, params)
        while report["overall"]["tickets"] < n - errors and time.perf_counter() - caught < 300:
            await asyncio.sleep(1.0)
            _, report = await _report(client, url, params)
        lag = time.perf_counter() - caught
        counted = int(report["overall"]["tickets"])
        backlog = int(report["overall"]["backlog_total"])
        say(f"timing {o.reads} reads")
        times = [(await _report(client, url, params))[0] for _ in range(o.reads)]
    times.sort()
    rep = Report("kpis", f"GET /helpdesk/v1/kpis over a period of {counted} tickets (brand backlog {backlog}), "
                         f"{o.reads} sequential reads as a supervisor")
    rep.add("tickets opened", f"{n - errors} in {open_seconds:.0f}s", str(n), errors == 0)
    rep.add("first read", ms(first))
    rep.add("p50", ms(percentile(times, 50)))
    p99 = percentile(times, 99)
    rep.add("p99", ms(p99), f"<= {TARGET_P99_MS:.0f} ms", p99 * 1000 <= TARGET_P99_MS)
    rep.add("max", ms(times[-1] if times else float("nan")))
    rep.notes.append(f"facts caught up with the last ticket {lag:.1f}s after it was opened (consumer lag upper bound)")
    rep.notes.append(host_note())
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kpis", description=__doc__.splitlines()[0])
    p.add_argument("--tickets", type=int, default=3000, help=f"tickets in the period (at most {MAX_TICKETS})")
    p.add_argument("--reads", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--since", type=datetime.fromisoformat, help="measure the period from this instant (with "
                   "offset) to now, opening no tickets (a rerun over an earlier run's tickets)")
    a = p.parse_args(argv)
    report = asyncio.run(run(Target.from_env(), KpisOptions(a.tickets, a.reads, a.concurrency, since=a.since)))
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
