"""Time from a platform event on the bus to the `segment.entered` it causes, on the bus.

Registers --players players (default 200) with a traffic source unique to the run, materialises the
segment "traffic_source eq <run> and deposits_count_lifetime ge 1" on the region's engine (Ray),
then publishes one completed deposit per player, spaced out (an open loop at --rate events/s, so
the figure is latency, not a queue), and times each player's `segment.entered` on a queue bound to
the events exchange. The path measured: consumer batch -> shard turn (journal write) -> feature
flush (PITBOSS_SEGMENT_FEATURE_FLUSH_MS) -> push -> incremental evaluation -> publish.

    python -m benchmarks segment_latency --players 200
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika

from actors.router import call
from actors.segments import ensure_segment_engine
from adapters.settings import Settings
from benchmarks.common import Api, Report, Target, bounded, host_note, ms, percentile, say

TARGET_P99_S = 1.0


@dataclass(frozen=True, slots=True)
class LatencyOptions:
    players: int = 200
    rate: float = 20.0


async def run(target: Target, opts: LatencyOptions) -> Report:
    import ray

    settings = Settings()
    if not ray.is_initialized():
        ray.init(address=target.ray_address or settings.ray_address, namespace=settings.ray_namespace,
                 log_to_driver=False)
    engine = ensure_segment_engine(settings)
    await call(engine.stats.remote(), 300)
    run_id = f"bench-{uuid.uuid4().hex[:12]}"
    segment = f"bench-latency-{run_id}"
    async with Api(target) as api:
        ids = [str(uuid.uuid4()) for _ in range(opts.players)]
        body = {"currency": "EUR", "country": "MT", "traffic_source": run_id}
        await bounded((api.send("POST", "/players", {"player_id": p, **body}) for p in ids), 32)
    say(f"registered {len(ids)} players")
    rule = {"all": [{"feature": "traffic_source", "op": "eq", "value": run_id},
                    {"feature": "deposits_count_lifetime", "op": "ge", "value": 1}]}
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    connection = await aio_pika.connect_robust(target.rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="segment.entered")
        wanted = set(ids)
        all_in = asyncio.Event()

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            now = time.perf_counter()
            data: dict[str, Any] = json.loads(msg.body)
            pid = data.get("player_id")
            if data.get("payload", {}).get("segment_id") == segment and pid in wanted and pid not in got:
                got[pid] = now
                if len(got) == len(wanted):
                    all_in.set()
            await msg.ack()

        await queue.consume(on_message)
        # Registration events reach the engine through the shards' flush: wait until it holds the players
        # (the first population of the segment publishes nothing, and these players are not in it yet).
        await asyncio.sleep(2.0)
        await call(engine.materialise.remote(segment, rule, 1), 120)
        gap = 1.0 / opts.rate
        for pid in ids:
            event = {
                "event_id": str(uuid.uuid4()), "type": "payment.deposit", "occurred_at": datetime.now(UTC).isoformat(),
                "player_id": pid, "brand": "demo", "schema_version": 1,
                "payload": {"tx_id": uuid.uuid4().hex, "status": "completed", "amount_minor": 1000, "currency": "EUR"},
            }
            sent[pid] = time.perf_counter()
            await exchange.publish(aio_pika.Message(json.dumps(event).encode(), delivery_mode=2),
                                   routing_key="payment.deposit")
            await asyncio.sleep(gap)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 60)
    with contextlib.suppress(Exception):  # a leftover segment only costs an evaluation per change
        await call(engine.retire.remote(segment), 60)
    latencies = sorted(got[p] - sent[p] for p in got)
    report = Report("segment_latency", f"{len(ids)} players, one deposit each at {opts.rate:.0f}/s")
    report.add("segment.entered received", f"{len(got)}/{len(ids)}")
    report.add("p50 event -> segment.entered", ms(percentile(latencies, 50)))
    report.add("p95 event -> segment.entered", ms(percentile(latencies, 95)))
    p99 = percentile(latencies, 99)
    report.add("p99 event -> segment.entered", ms(p99), "<= 1 s", bool(latencies) and p99 <= TARGET_P99_S
               and len(got) == len(ids))
    report.add("max", ms(latencies[-1] if latencies else float("nan")))
    report.notes.append(f"feature flush every {settings.segment_feature_flush_ms} ms, consumer flush "
                        f"{settings.consumer_flush_ms} ms")
    report.notes.append(host_note())
    return report
