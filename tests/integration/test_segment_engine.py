"""The segment engine against the real stack: events on RabbitMQ -> player actors -> feature rows in
Cassandra and pushes to the engine -> materialised membership with segment.entered/exited on the bus."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest

from actors.router import call
from adapters.cassandra.segments import FeatureStore, SegmentStore, bucket_of
from adapters.cassandra.session import aexecute, connect
from adapters.settings import Settings
from domain.errors import Unavailable
from domain.features import unpack
from domain.segments import parse_rule, reference_evaluate
from schemas.features import FeatureRow
from tests.integration.conftest import envelope, new_id, register
from tests.integration.test_ingestion import publish

pytestmark = pytest.mark.stack

WAIT = 90.0


@pytest.fixture(scope="module")
def engine(stack: Settings) -> Any:
    import ray

    from actors.segments import ensure_segment_engine

    if not ray.is_initialized():
        ray.init(address=stack.ray_address, namespace=stack.ray_namespace, log_to_driver=False)
    return ensure_segment_engine(stack)


@pytest.fixture(scope="module")
async def stores(stack: Settings) -> AsyncIterator[tuple[FeatureStore, SegmentStore]]:
    loop = asyncio.get_running_loop()
    cluster, session = await loop.run_in_executor(None, lambda: connect(stack, stack.cassandra_keyspace))
    yield FeatureStore(session, stack.segment_feature_buckets), SegmentStore(session)
    cluster.shutdown()


class Bus:
    """segment.* events seen on the exchange, by (type, segment, player)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def of(self, type_: str, segment: str, player: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["type"] == type_ and e["payload"]["segment_id"] == segment
                and e["player_id"] == player]


@pytest.fixture
async def bus(stack: Settings) -> AsyncIterator[Bus]:
    out = Bus()
    connection = await aio_pika.connect_robust(stack.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(stack.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="segment.*")

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            out.seen.append(json.loads(msg.body))
            await msg.ack()

        await queue.consume(on_message)
        yield out


async def until(check: Callable[[], Awaitable[Any]], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except Unavailable:  # the engine restarting (after the kill test of an earlier run, say)
            last = None
        if last:
            return last
        await asyncio.sleep(0.3)
    return last


async def engine_row(engine: Any, pid: str) -> dict[str, Any] | None:
    rows = await call(engine.rows.remote([pid]), 120)
    return rows[0] if rows else None


def deposit(pid: str, amount: int) -> dict[str, Any]:
    payload = {"tx_id": new_id(), "status": "completed", "amount_minor": amount, "currency": "EUR"}
    return envelope(pid, "payment.deposit", payload)


def withdrawal(pid: str, amount: int) -> dict[str, Any]:
    payload = {"tx_id": new_id(), "status": "paid", "amount_minor": amount, "currency": "EUR"}
    return envelope(pid, "payment.withdrawal", payload)


async def test_events_on_the_bus_become_feature_rows_in_cassandra_and_in_the_engine(
    api: httpx.AsyncClient, stack: Settings, engine: Any, stores: tuple[FeatureStore, SegmentStore]
) -> None:
    features, _ = stores
    pid = await register(api)
    await publish(stack, [deposit(pid, 1500), deposit(pid, 700), withdrawal(pid, 200)])

    async def engine_sees() -> bool:
        row = await engine_row(engine, pid)
        return row is not None and row["deposits_sum_lifetime"] == 2200

    assert await until(engine_sees)
    row = await engine_row(engine, pid)
    assert row is not None
    assert row["deposits_count_lifetime"] == 2 and row["net_loss_lifetime"] == 2000 and row["country"] == "MT"
    assert row["lifecycle_stage"] == "active" and row["active_1d"] is True

    stmt = "SELECT features, codes FROM player_features WHERE region = ? AND bucket = ? AND player_id = ?"
    prepared = features.session.prepare(stmt)
    u = uuid.UUID(pid)
    stored = await aexecute(features.session, prepared, (stack.region, bucket_of(u, features.buckets), u))
    assert stored and unpack(stored[0]["features"], stored[0]["codes"]).deposits_sum_lifetime == 2200


async def test_a_player_crossing_a_threshold_enters_and_leaving_it_exits(
    api: httpx.AsyncClient, stack: Settings, engine: Any, bus: Bus, stores: tuple[FeatureStore, SegmentStore]
) -> None:
    _, segments = stores
    pid = await register(api, traffic_source=f"t-{uuid.uuid4().hex[:8]}")
    segment = f"test-threshold-{uuid.uuid4().hex}"
    rule = {"feature": "net_loss_lifetime", "op": "ge", "value": 1000}
    assert await until(lambda: call(engine.stats.remote(), 60))
    assert (await call(engine.materialise.remote(segment, rule, 1), 120))["count"] >= 0
    try:
        await publish(stack, [deposit(pid, 1500)])

        async def entered() -> bool:
            return bool(bus.of("segment.entered", segment, pid))

        assert await until(entered)
        event = bus.of("segment.entered", segment, pid)[0]
        assert event["payload"] == {"segment_id": segment, "version": 1, "region": stack.region}
        assert event["brand"] == "demo"
        assert await call(engine.is_member.remote(segment, pid))
        assert await until(lambda: segments.is_member(segment, pid))

        await publish(stack, [withdrawal(pid, 1000)])  # net loss 500: below the threshold

        async def exited() -> bool:
            return bool(bus.of("segment.exited", segment, pid))

        assert await until(exited)
        assert not await call(engine.is_member.remote(segment, pid))
        assert await until(lambda: _not(segments.is_member(segment, pid)))
        assert len(bus.of("segment.entered", segment, pid)) == 1
    finally:
        await call(engine.retire.remote(segment), 60)


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_incremental_membership_equals_a_full_recompute_after_a_stream_of_events(
    api: httpx.AsyncClient, stack: Settings, engine: Any, stores: tuple[FeatureStore, SegmentStore]
) -> None:
    _, segments = stores
    source = f"t-{uuid.uuid4().hex[:8]}"
    players = [await register(api, traffic_source=source) for _ in range(12)]
    rule = {"all": [
        {"feature": "traffic_source", "op": "eq", "value": source},
        {"any": [{"feature": "deposits_sum_lifetime", "op": "between", "min": 2000, "max": 6000},
                 {"feature": "net_loss_lifetime", "op": "lt", "value": 0}]},
        {"not": {"feature": "deposits_count_lifetime", "op": "eq", "value": 3}},
    ]}
    segment = f"test-stream-{uuid.uuid4().hex}"
    await call(engine.materialise.remote(segment, rule, 1), 120)
    try:
        rng = random.Random(7)
        expected: dict[str, int] = dict.fromkeys(players, 0)
        for _ in range(6):
            batch = []
            for _ in range(25):
                p = rng.choice(players)
                if rng.random() < 0.7:
                    amount = rng.randint(100, 3000)
                    batch.append(deposit(p, amount))
                    expected[p] += amount
                else:
                    batch.append(withdrawal(p, rng.randint(100, 3000)))
            await publish(stack, batch)
            await asyncio.sleep(rng.random() * 0.5)

        async def settled() -> bool:
            rows = await call(engine.rows.remote(players), 120)
            return len(rows) == len(players) and all(
                (r["deposits_sum_lifetime"] or 0) == expected[r["player_id"]] for r in rows)

        assert await until(settled)
        parsed = parse_rule(rule)

        async def agree() -> bool:
            now = datetime.now(UTC)
            rows = await call(engine.rows.remote(players), 120)
            full = {r["player_id"] for r in rows
                    if reference_evaluate(parsed, FeatureRow.model_validate({k: v for k, v in r.items()
                                                                              if k != "player_id"}), now)}
            incremental = {p for p in players if await call(engine.is_member.remote(segment, p))}
            stored = {p for p in players if await segments.is_member(segment, p)}
            preview = await call(engine.preview.remote(rule, 50), 120)
            return full == incremental == stored == set(preview["sample"]) and preview["count"] == len(full)

        assert await until(agree, 30)
    finally:
        await call(engine.retire.remote(segment), 60)


async def test_the_engine_survives_a_kill_and_rebuilds(
    api: httpx.AsyncClient, stack: Settings, engine: Any
) -> None:
    import ray

    pid = await register(api)
    await publish(stack, [deposit(pid, 4321)])
    segment = f"test-kill-{uuid.uuid4().hex}"
    rule = {"feature": "deposits_sum_lifetime", "op": "eq", "value": 4321}

    async def has_row() -> bool:
        row = await engine_row(engine, pid)
        return row is not None and row["deposits_sum_lifetime"] == 4321

    assert await until(has_row)
    await call(engine.materialise.remote(segment, rule, 1), 120)
    try:
        before = await call(engine.stats.remote(), 60)
        ray.kill(engine, no_restart=False)

        async def back() -> dict[str, Any] | None:
            # ray.kill takes effect asynchronously: the old process may still answer for a moment.
            try:
                stats = dict(await call(engine.stats.remote(), 60))
            except Exception:
                return None
            return stats if stats["last_rebuild_at"] != before["last_rebuild_at"] else None

        after = await until(back, 180)
        assert after is not None, "the engine did not come back with a rebuilt matrix"
        assert after["players"] >= 1 and segment in after["segments"]
        assert await until(lambda: call(engine.is_member.remote(segment, pid)))
    finally:
        deadline = time.monotonic() + 180
        while True:
            try:
                await call(engine.retire.remote(segment), 60)
                break
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


async def test_churn_is_retrained_from_stored_daily_activity_and_scores_players(
    stack: Settings, stores: tuple[FeatureStore, SegmentStore]
) -> None:
    """An engine of a throwaway region, in this process: synthetic daily activity with a known churn
    signal written to player_activity, one retraining, held-out AUC stored with the model."""
    import numpy as np

    from actors.segments import SegmentEngine
    from adapters.cassandra.segments import DayActivity, StoredFeatures
    from domain.churn import HORIZON, WINDOW
    from domain.features import day_number, pack
    from domain.synthetic import synthetic_history

    features, _ = stores
    region = f"t{uuid.uuid4().hex[:10]}"
    synth = synthetic_history(1500, seed=3)
    h = synth.history
    ids = [uuid.UUID(bytes=h.player_ids[i].tobytes()) for i in range(h.n_players)]
    today = day_number(datetime.now(UTC).date())
    first = today - (WINDOW + HORIZON)
    days = []
    for i, j in zip(*np.nonzero(h.sessions + h.bets + h.deposits), strict=True):
        days.append((region, DayActivity(ids[i], first + int(j), int(h.sessions[i, j]), int(h.bets[i, j]),
                                         int(h.deposits[i, j]), int(h.net_loss[i, j]))))
    blob, codes = pack(FeatureRow(country="MT"))
    now = datetime.now(UTC)
    for k in range(0, len(days), 5000):
        await features.write(region, [], days[k : k + 5000])
    await features.write(region, [StoredFeatures(p, "demo", blob, codes, now) for p in ids])

    engine = SegmentEngine(region)
    await engine.ready()
    result = await engine.retrain()
    assert result["trained"] is True, result
    assert result["version"] == 1 and result["n_held_out"] > 0
    assert 0.5 < result["auc"] <= 1.0 and 0.0 <= result["auc_recency_baseline"] <= 1.0
    print(f"churn: held-out AUC {result['auc']:.3f} vs recency baseline {result['auc_recency_baseline']:.3f} "
          f"({result['n_held_out']} held-out players)")
    stored = await features.latest_model(region)
    assert stored is not None and stored["version"] == 1 and stored["auc"] == result["auc"]
    scored = await engine.rows([str(p) for p in ids[:50]])
    assert all(r["churn_risk"] is not None and 0.0 <= r["churn_risk"] <= 1.0 for r in scored)
    for task in list(engine._tasks):
        task.cancel()
    engine.cluster.shutdown()
