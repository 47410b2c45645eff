"""Help-desk ticket creation over HTTP at a fixed rate (open loop) against the deployed stack.

Registers --players players, then for --seconds opens tickets at --rate requests/s through the
platform route (`POST /helpdesk/v1/platform/tickets`, the brand's API key): each ticket is routed
to a team, auto-assigned when an agent is available, stored with its first message and indexes,
its SLA clock started and its events published. Requests are sent on schedule whatever the
previous ones do (open loop), and latency is counted from the scheduled send time, so a stall
shows up in the figures instead of silently lowering the rate. The first second is a warm-up.

    python -m benchmarks tickets
    python -m benchmarks.tickets --rate 50 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.common import Api, Report, Target, TransportErrors, host_note, ms, percentile, register_players, say

TARGET_P99_MS = 50.0
WARMUP_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TicketsOptions:
    rate: float = 50.0
    seconds: float = 20.0
    players: int = 100


def helpdesk_url(target: Target) -> str:
    return target.api_url.replace("/platform/v1", "/helpdesk/v1")


async def run(target: Target, opts: TicketsOptions | None = None) -> Report:
    o = opts or TicketsOptions()
    async with Api(target) as api:
        players, _ = await register_players(api, o.players)
    hd = Target(helpdesk_url(target), target.api_key, target.rabbitmq_url, target.ray_address)
    total = int(o.rate * o.seconds)
    latencies: list[float] = []
    service: list[float] = []
    errors: dict[str, int] = {}
    async with Api(hd, connections=256) as api:
        say(f"opening {total} tickets at {o.rate:.0f}/s for {o.seconds:.0f}s")
        start = time.perf_counter() + 0.5

        async def one(i: int) -> None:
            due = start + i / o.rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            sent = time.perf_counter()
            body = {"ticket_id": str(uuid.uuid4()), "player_id": players[i % len(players)], "brand": "demo",
                    "channel": "api", "category": ("general", "payments", "kyc")[i % 3],
                    "priority": ("P1", "P2", "P3", "P4")[i % 4], "subject": f"Benchmark ticket {i}",
                    "body": "My withdrawal has been pending since yesterday, can you check it please?"}
            try:
                status, answer = await api.send("POST", "/platform/tickets", body)
            except TransportErrors as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            done = time.perf_counter()
            if status != 201:
                errors[str(status)] = errors.get(str(status), 0) + 1
                if len(errors) == 1 and sum(errors.values()) == 1:
                    say(f"first error: {status} {str(answer)[:200]}")
                return
            if due - start >= WARMUP_SECONDS:
                latencies.append(done - due)
                service.append(done - sent)

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    service.sort()
    report = Report("tickets", f"{total} tickets at {o.rate:.0f}/s for {o.seconds:.0f}s over HTTP, "
                               f"{o.players} players, open loop")
    report.add("achieved rate", f"{total / max(elapsed, 1e-9):.1f} req/s", f"{o.rate:.0f} req/s")
    report.add("p50 (from scheduled send)", ms(percentile(latencies, 50)))
    report.add("p95 (from scheduled send)", ms(percentile(latencies, 95)))
    p99 = percentile(latencies, 99)
    report.add("p99 (from scheduled send)", ms(p99), f"<= {TARGET_P99_MS:.0f} ms", p99 * 1000 <= TARGET_P99_MS)
    report.add("max", ms(latencies[-1] if latencies else float("nan")))
    report.add("p99 (from actual send)", ms(percentile(service, 99)))
    report.add("errors", str(sum(errors.values())), "0", not errors)
    if errors:
        report.notes.append("errors by kind: " + ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())))
    report.notes.append(f"measured after a {WARMUP_SECONDS:.0f}s warm-up: {len(latencies)} requests")
    report.notes.append(host_note())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tickets", description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--players", type=int, default=100)
    a = p.parse_args(argv)
    report = asyncio.run(run(Target.from_env(), TicketsOptions(a.rate, a.seconds, a.players)))
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
