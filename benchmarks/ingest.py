"""Sustained event ingestion through RabbitMQ, against the raw Cassandra journal ceiling.

1. Register N players through the API (not timed).
2. Publish M events for them to the events exchange (persistent, publisher confirms) and
   time from the first publish until the consumers have acknowledged all M, i.e. until
   every event is durable in the journal. Progress is the consumers' own counts from
   /healthz (accepted + duplicate + dead-lettered); if /healthz has none, the shards'
   `pitboss_events_total` from /metrics.
3. Raw ceiling: the same journal INSERTs (the statement PlayerStore prepares, bound by
   PlayerStore.append_statements, LOCAL_QUORUM) for a fresh set of player ids, written by a
   plain driver loop with a bounded window of requests in flight; then deleted again.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from benchmarks.common import (
    Api,
    ApiError,
    Report,
    ShardCpu,
    Target,
    TransportErrors,
    call,
    healthz,
    metric_samples,
    metric_sum,
    register_players,
    say,
    shards,
)

TARGET_RATE = 2000.0
TARGET_RATIO = 0.5
FINISHED = ("accepted", "duplicate", "dead_lettered")


@dataclass(frozen=True, slots=True)
class IngestOptions:
    players: int = 20_000
    events: int = 200_000
    concurrency: int = 64
    publish_window: int = 2000
    publish_channels: int = 4
    raw_window: int = 256
    stall_seconds: float = 60.0
    seed: int = 7


def make_events(
    player_ids: Sequence[str], count: int, seed: int, brand: str = "demo", currency: str = "EUR"
) -> list[tuple[str, str, bytes]]:
    """(player id, routing key, body) of `count` events spread over the players: mostly bets and wins."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out: list[tuple[str, str, bytes]] = []
    for i in range(count):
        pid = player_ids[rng.randrange(len(player_ids))]
        roll = rng.random()
        at = (now - timedelta(seconds=rng.uniform(0, 3600))).isoformat(timespec="milliseconds")
        if roll < 0.70:
            type_, payload = (
                "game.bet",
                {
                    "bet_id": f"b{i}",
                    "amount_minor": rng.choice((10, 20, 50, 100, 200)),
                    "currency": currency,
                    "game_id": "slot-golden-reef",
                    "game_category": "slots",
                },
            )
        elif roll < 0.90:
            type_, payload = (
                "game.win",
                {
                    "bet_id": f"b{i - 1}",
                    "amount_minor": rng.choice((20, 60, 150, 400)),
                    "currency": currency,
                    "game_id": "slot-golden-reef",
                    "game_category": "slots",
                },
            )
        elif roll < 0.95:
            type_, payload = "session.started", {"session_id": f"s{i}", "device": "mobile"}
        else:
            type_, payload = (
                "payment.deposit",
                {
                    "tx_id": f"d{i}",
                    "status": "completed",
                    "amount_minor": rng.choice((1000, 2500, 5000)),
                    "currency": currency,
                    "method": "card",
                },
            )
        env = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "type": type_,
            "occurred_at": at,
            "player_id": pid,
            "brand": brand,
            "schema_version": 1,
            "payload": payload,
        }
        out.append((pid, type_, json.dumps(env, separators=(",", ":")).encode()))
    return out


async def progress_source(api: Api) -> str:
    """ "consumers" if /healthz reports the consumers' counts, else "shards" (/metrics)."""
    body = await healthz(api)
    return "consumers" if body.get("checks", {}).get("consumers", {}).get("detail") else "shards"


async def finished_count(api: Api, source: str) -> float | None:
    """Events the stack is done with, by `source`; None if it could not be read this time."""
    try:
        if source == "consumers":
            detail = (await healthz(api)).get("checks", {}).get("consumers", {}).get("detail")
            return float(sum(c.get(k, 0) for c in detail.values() for k in FINISHED)) if detail else None
        samples = await metric_samples(api)
    except (*TransportErrors, ApiError, ValueError):
        return None
    return sum(metric_sum(samples, "pitboss_events_total", outcome=o) for o in ("accepted", "duplicate"))


class Progress:
    """A monotone counter over counts that may reset (a restarted consumer starts from zero)."""

    def __init__(self, first: float) -> None:
        self.last = first
        self.total = 0.0

    def update(self, value: float) -> float:
        self.total += value - self.last if value >= self.last else value
        self.last = value
        return self.total


async def publish_all(
    rabbitmq_url: str, messages: Sequence[tuple[str, str, bytes]], window: int, channels: int, started: asyncio.Event
) -> float:
    """Publish over several channels, each player's events on one channel (so in order); seconds taken."""
    import aio_pika

    from adapters import rabbit
    from adapters.settings import Settings

    settings = Settings(rabbitmq_url=rabbitmq_url)
    lanes: list[list[tuple[str, bytes]]] = [[] for _ in range(channels)]
    for pid, key, body in messages:
        lanes[zlib.crc32(pid.encode()) % channels].append((key, body))
    connection = await aio_pika.connect_robust(rabbitmq_url, timeout=10)
    async with connection:
        opened = [await connection.channel(publisher_confirms=True, on_return_raises=True) for _ in lanes]
        exchanges = [(await rabbit.declare(ch, settings))[0] for ch in opened]

        async def lane(exchange: Any, items: list[tuple[str, bytes]]) -> None:
            for start in range(0, len(items), window):
                chunk = items[start : start + window]
                await asyncio.gather(*(rabbit.publish(exchange, key, body) for key, body in chunk))

        t0 = time.perf_counter()
        started.set()
        await asyncio.gather(*(lane(ex, items) for ex, items in zip(exchanges, lanes, strict=True)))
        return time.perf_counter() - t0


@dataclass(frozen=True, slots=True)
class PipelineResult:
    seconds: float  # first publish -> all durable (or gave up)
    publish_seconds: float
    done: float  # events the stack finished
    source: str  # where progress was read
    backlog: float  # events still queued when publishing ended
    drain_seconds: float  # publishing ended -> all durable

    @property
    def drain_rate(self) -> float:
        return self.backlog / self.drain_seconds if self.drain_seconds > 0 else 0.0


async def measure_pipeline(
    api: Api, target: Target, messages: Sequence[tuple[str, str, bytes]], opts: IngestOptions
) -> PipelineResult:
    source = await progress_source(api)
    first = await finished_count(api, source)
    if first is None:
        raise RuntimeError(f"cannot read the {source}' progress from the API")
    progress = Progress(first)
    started = asyncio.Event()
    publisher = asyncio.create_task(
        publish_all(target.rabbitmq_url, messages, opts.publish_window, opts.publish_channels, started)
    )
    await started.wait()
    t0 = time.perf_counter()
    done, last_change, reported = 0.0, t0, t0
    backlog, published_at = 0.0, 0.0
    while done < len(messages):
        await asyncio.sleep(0.2)
        if publisher.done() and (failure := publisher.exception()) is not None:
            raise failure
        value = await finished_count(api, source)
        now = time.perf_counter()
        new = progress.update(value) if value is not None else done
        if new > done:
            done, last_change = new, now
        if publisher.done() and not published_at:
            published_at, backlog = now, len(messages) - done
        if now - reported >= 5:
            say(f"{done:.0f}/{len(messages)} events durable after {now - t0:.0f}s ({done / (now - t0):.0f}/s)")
            reported = now
        if now - last_change > opts.stall_seconds:
            say(f"no progress for {opts.stall_seconds:.0f}s; giving up")
            break
    elapsed = time.perf_counter() - t0
    publish_seconds = await publisher
    drain = (t0 + elapsed - published_at) if published_at else 0.0
    return PipelineResult(elapsed, publish_seconds, done, source, backlog, drain)


def raw_journal_ceiling(messages: Sequence[tuple[str, str, bytes]], players: int, window: int) -> float:
    """Events per second written by a plain driver loop into player_journal (blocking)."""
    from cassandra.concurrent import execute_concurrent

    from adapters.cassandra.players import BUCKET_SIZE, JournalEntry, PlayerStore
    from adapters.cassandra.session import connect
    from adapters.settings import Settings

    settings = Settings()
    cluster, session = connect(settings, settings.cassandra_keyspace)
    try:
        store = PlayerStore(session)
        fresh = [uuid.uuid4() for _ in range(players)]
        rng = random.Random(1)
        seqs: dict[UUID, int] = {}
        now = datetime.now(UTC)

        def statements() -> Iterator[tuple[Any, None]]:
            # Bound as they are sent (the driver reads this lazily): binding is part of the work.
            for _, _, body in messages:
                pid = fresh[rng.randrange(players)]
                seq = seqs[pid] = seqs.get(pid, 0) + 1
                entry = JournalEntry(seq, f"event:{uuid.uuid4()}", "event", body, now)
                yield store.append_statements(pid, [entry], epoch=1)[0], None

        t0 = time.perf_counter()
        execute_concurrent(session, statements(), concurrency=window, raise_on_first_error=True)
        elapsed = time.perf_counter() - t0
        # The rows belong to no player (no snapshot); remove them so the table holds only real journals.
        delete = session.prepare("DELETE FROM player_journal WHERE player_id = ? AND bucket = ?")
        parts = {(pid, s // BUCKET_SIZE) for pid, top in seqs.items() for s in range(1, top + 1)}
        execute_concurrent(session, [(delete, p) for p in parts], concurrency=window, raise_on_first_error=False)
        return len(messages) / elapsed
    finally:
        cluster.shutdown()


async def run(target: Target, opts: IngestOptions) -> Report:
    report = Report("ingest", f"{opts.players} players, {opts.events} events")
    async with Api(target, opts.concurrency) as api:
        say(f"registering {opts.players} players")
        ids, reg_rate = await register_players(api, opts.players, opts.concurrency)
        brand = (await call(api, "GET", f"/players/{ids[0]}"))["brand"]
        messages = make_events(ids, opts.events, opts.seed, brand=brand)
        say(f"publishing {len(messages)} events to RabbitMQ and waiting until they are durable")
        cpu = ShardCpu(await shards(api, target))
        result = await measure_pipeline(api, target, messages, opts)
        shard_cpu = cpu.spent()
    rate = result.done / result.seconds
    say(f"raw ceiling: {len(messages)} journal INSERTs, window {opts.raw_window}")
    raw = await asyncio.get_running_loop().run_in_executor(
        None, raw_journal_ceiling, messages, opts.players, opts.raw_window
    )
    complete = result.done >= len(messages)
    ratio = rate / raw if raw else 0.0
    publish_rate = len(messages) / result.publish_seconds
    report.add("registration (setup)", f"{reg_rate:.0f} players/s")
    report.add(f"publish rate (confirmed, {opts.publish_channels} channels)", f"{publish_rate:.0f} events/s")
    report.add("events durable", f"{result.done:.0f}/{len(messages)} (via {result.source})", "all", complete)
    report.add(
        "pipeline: first publish -> all durable",
        f"{rate:.0f} events/s",
        f">= {TARGET_RATE:.0f} events/s",
        complete and rate >= TARGET_RATE,
    )
    if result.backlog >= 0.1 * len(messages):
        report.add(
            "consumer drain of the backlog",
            f"{result.drain_rate:.0f} events/s ({result.backlog:.0f} queued when publishing ended)",
        )
    if shard_cpu is not None and result.done:
        report.add(
            "shard CPU per event",
            f"{shard_cpu / result.done * 1000:.2f} ms (all shards: {shard_cpu / result.seconds:.0%} of a core)",
        )
    report.add("raw: driver loop -> journal", f"{raw:.0f} events/s")
    report.add("ratio pipeline / raw", f"{ratio:.2f}", f">= {TARGET_RATIO}", complete and ratio >= TARGET_RATIO)
    if publish_rate < rate * 1.2:
        report.notes.append(
            "the publisher was hardly faster than the pipeline: the pipeline figure is a lower "
            "bound (publisher-bound); see the drain rate if there was a backlog"
        )
    return report
