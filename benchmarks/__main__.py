"""Run the benchmarks and print their figures (never asserts on them).

    python -m benchmarks                       # all: ingest authorize memory recovery policy audit
    python -m benchmarks ingest --players 2000 --events 20000
    python -m benchmarks authorize --duration 10 --players 200
    python -m benchmarks memory recovery --ray-address 127.0.0.1:6380

The stack comes from PITBOSS_API_URL (default http://127.0.0.1:8000/platform/v1),
PITBOSS_API_KEY, PITBOSS_RABBITMQ_URL, PITBOSS_CASSANDRA_CONTACT_POINTS and the other
PITBOSS_* settings, or the flags below. `memory` and `recovery` need the shards' pids: from
/healthz if it reports them, else through Ray (--ray-address, PITBOSS_RAY_ADDRESS or RAY_ADDRESS;
with token auth also RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH, as `make bench` sets them).
`recovery` kills a shard process: run it only against a stack you may disturb. `policy` times the
authorization engine alone and needs no stack. `audit` appends through the audit actor (Ray) and
verifies a bulk-loaded chain of --audit-entries entries (Cassandra).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence

from benchmarks import (
    audit,
    authorize,
    chat,
    churn,
    ingest,
    kb,
    kpis,
    memory,
    policy,
    recovery,
    segment_latency,
    segment_rebuild,
    segments,
    sla,
    tickets,
)
from benchmarks.common import Report, Target, offline

NAMES = (
    "ingest", "authorize", "memory", "recovery", "policy", "audit", "sla", "kb", "churn", "segments", "chat", "tickets",
    "segment_rebuild", "segment_latency", "kpis",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="Pitboss benchmarks: print figures.")
    p.add_argument("names", nargs="*", metavar="name", help=f"benchmarks to run, of {', '.join(NAMES)} (default: all)")
    p.add_argument("--api-url", help="platform API (PITBOSS_API_URL)")
    p.add_argument("--api-key", help="brand API key (PITBOSS_API_KEY)")
    p.add_argument("--rabbitmq-url", help="RabbitMQ (PITBOSS_RABBITMQ_URL)")
    p.add_argument("--ray-address", help="Ray GCS address, to read shard pids (PITBOSS_RAY_ADDRESS, RAY_ADDRESS)")
    p.add_argument(
        "--players",
        type=int,
        help="players to register (default per benchmark: ingest 20000, authorize 1000, memory 100000, recovery 200)",
    )
    p.add_argument("--events", type=int, default=200_000, help="ingest: events to publish")
    p.add_argument("--raw-window", type=int, default=256, help="ingest: raw driver loop requests in flight")
    p.add_argument("--publish-channels", type=int, default=4, help="ingest: AMQP channels publishing at once")
    p.add_argument("--connections", type=int, default=32, help="authorize: closed-loop connections")
    p.add_argument("--rate", type=float, default=100.0, help="authorize: open-loop requests/s")
    p.add_argument("--duration", type=float, default=30.0, help="authorize: seconds per loop")
    p.add_argument("--no-wrk", action="store_true", help="authorize: drive the closed loop from Python")
    p.add_argument("--no-baseline", action="store_true", help="authorize: skip the plain uvicorn comparison")
    p.add_argument("--shard", type=int, default=0, help="recovery: index of the shard to kill")
    p.add_argument("--audit-entries", type=int, default=1_000_000, help="audit: entries of the chain to verify")
    p.add_argument("--audit-callers", type=int, default=256, help="audit: concurrent appending callers")
    p.add_argument("--audit-seconds", type=float, default=15.0, help="audit: seconds of appends")
    p.add_argument("--audit-keep", action="store_true", help="audit: keep the benchmark chains")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return args


def jobs(args: argparse.Namespace, target: Target) -> dict[str, Callable[[], Awaitable[Report]]]:
    def players(default: int) -> int:
        return int(args.players) if args.players is not None else default

    return {
        "ingest": lambda: ingest.run(
            target,
            ingest.IngestOptions(
                players=players(20_000),
                events=args.events,
                raw_window=args.raw_window,
                publish_channels=args.publish_channels,
            ),
        ),
        "authorize": lambda: authorize.run(
            target,
            authorize.AuthorizeOptions(
                players=players(1000),
                connections=args.connections,
                closed_seconds=args.duration,
                rate=args.rate,
                open_seconds=args.duration,
                use_wrk=not args.no_wrk,
                baseline=not args.no_baseline,
            ),
        ),
        "memory": lambda: memory.run(target, memory.MemoryOptions(players=players(100_000))),
        "recovery": lambda: recovery.run(target, recovery.RecoveryOptions(players=players(200), shard=args.shard)),
        "policy": lambda: offline(policy.measure, policy.PolicyOptions()),
        "audit": lambda: audit.run(
            target,
            audit.AuditOptions(
                entries=args.audit_entries, callers=args.audit_callers, seconds=args.audit_seconds, keep=args.audit_keep
            ),
        ),
        "sla": lambda: offline(sla.measure, sla.SlaOptions()),
        "kb": lambda: offline(kb.measure, kb.KbOptions()),
        "churn": lambda: offline(churn.measure, churn.ChurnOptions()),
        "segments": lambda: offline(segments.measure, segments.SegmentsOptions(players=players(1_000_000))),
        "segment_rebuild": lambda: segment_rebuild.run(segment_rebuild.RebuildOptions(players=players(1_000_000))),
        "segment_latency": lambda: segment_latency.run(target, segment_latency.LatencyOptions(players=players(200))),
        "chat": lambda: chat.run(target, chat.ChatOptions(chats=players(200))),
        "tickets": lambda: tickets.run(target, tickets.TicketsOptions(players=players(100))),
        "kpis": lambda: kpis.run(target, kpis.KpisOptions(players=players(100))),
    }


async def main_async(args: argparse.Namespace) -> int:
    target = Target.from_env(args.api_url, args.api_key, args.rabbitmq_url, args.ray_address)
    print(
        f"target: {target.api_url}  rabbitmq: {target.rabbitmq_url.split('@')[-1]}  ray: {target.ray_address or '-'}",
        flush=True,
    )
    table = jobs(args, target)
    reports: list[Report] = []
    failed = 0
    for name in args.names or NAMES:
        print(f"\n>> {name}", flush=True)
        started = time.perf_counter()
        try:
            report = await table[name]()
        except Exception:
            failed += 1
            print(f"{name} could not run:\n{traceback.format_exc()}", flush=True)
            continue
        report.notes.append(f"ran for {time.perf_counter() - started:.0f}s")
        print(report.render(), flush=True)
        reports.append(report)
    if len(reports) > 1:
        print("\n== summary")
        for report in reports:
            verdicts = [f"{r.measure}: {r.verdict}" for r in report.rows if r.verdict]
            print(f"  {report.name:<10} {'; '.join(verdicts) or 'no verdicts (see notes)'}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
