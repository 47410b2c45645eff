"""Event ingestion over RabbitMQ, and exactly-once effects across redelivery and shard crashes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import aio_pika
import httpx
import pytest

from adapters.settings import Settings
from tests.integration.conftest import bet, register

pytestmark = pytest.mark.stack


async def publish(settings: Settings, events: list[dict[str, Any]], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
    conn = await aio_pika.connect(settings.rabbitmq_url)
    async with conn:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        for e in events:
            await exchange.publish(aio_pika.Message(json.dumps(e).encode(), delivery_mode=2), routing_key=e["type"])
        for body in raw:
            await exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key="game.bet")


async def wait_for_totals(api: httpx.AsyncClient, expected: dict[str, int], timeout: float = 90) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        for pid in expected:
            r = await api.get(f"/players/{pid}")
            if r.status_code == 200:
                seen[pid] = r.json()["lifetime"]["bets_minor"]
        if seen == expected:
            return seen
        await asyncio.sleep(0.5)
    return seen


async def dead_letters(settings: Settings) -> list[aio_pika.abc.AbstractIncomingMessage]:
    conn = await aio_pika.connect(settings.rabbitmq_url)
    out = []
    async with conn:
        channel = await conn.channel()
        queue = await channel.declare_queue(f"{settings.events_queue}.dlq", durable=True)
        while (msg := await queue.get(fail=False, timeout=5)) is not None:
            await msg.ack()
            out.append(msg)
    return out


async def test_events_delivered_twice_over_the_bus_and_http_are_counted_once(
    api: httpx.AsyncClient, stack: Settings
) -> None:
    pid = await register(api)
    events = [bet(pid, 10 * (i + 1)) for i in range(30)]
    await publish(stack, events + events[:10])
    assert (await api.post("/events", json={"events": events[5:15]})).json()["accepted"] <= 10
    expected = sum(e["payload"]["amount_minor"] for e in events)
    assert await wait_for_totals(api, {pid: expected}) == {pid: expected}
    await asyncio.sleep(1)
    player = (await api.get(f"/players/{pid}")).json()
    assert player["lifetime"]["bets_count"] == 30 and player["lifetime"]["bets_minor"] == expected


async def test_unparseable_messages_are_dead_lettered_with_the_reason(api: httpx.AsyncClient, stack: Settings) -> None:
    await dead_letters(stack)
    pid = await register(api)
    wrong = {**bet(pid, 5), "payload": {"bet_id": "x", "amount_minor": -1, "currency": "EUR", "game_id": "g"}}
    await publish(stack, [wrong], raw=[b"{definitely not json"])
    deadline = time.monotonic() + 30
    got: list[Any] = []
    while time.monotonic() < deadline and len(got) < 2:
        got += await dead_letters(stack)
        await asyncio.sleep(0.3)
    reasons = sorted(str(m.headers.get("x-pitboss-reason")) for m in got)
    assert len(reasons) == 2
    assert any("Invalid JSON" in r for r in reasons)
    assert any(r.startswith("payload.amount_minor") for r in reasons)


async def _shard_pids(api: httpx.AsyncClient) -> dict[str, int]:
    shards = (await api.get("/healthz")).json()["checks"]["shards"]["detail"]
    return {k: int(v["pid"]) for k, v in shards.items()}


async def test_killing_a_shard_mid_stream_loses_and_doubles_nothing(api: httpx.AsyncClient, stack: Settings) -> None:
    players = [await register(api) for _ in range(24)]
    events = [bet(players[i % len(players)], 1 + i % 7) for i in range(3000)]
    expected: dict[str, int] = {p: 0 for p in players}
    for e in events:
        expected[e["player_id"]] += e["payload"]["amount_minor"]
    victim = (await _shard_pids(api))["0"]
    publisher = asyncio.create_task(publish(stack, events))
    await asyncio.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    await publisher
    totals = await wait_for_totals(api, expected, timeout=120)
    assert totals == expected
    assert (await _shard_pids(api))["0"] != victim


async def test_http_batches_retried_through_a_shard_crash_apply_exactly_once(
    api: httpx.AsyncClient, stack: Settings
) -> None:
    players = [await register(api) for _ in range(12)]
    batches = [[bet(players[(b + i) % 12], 3) for i in range(100)] for b in range(20)]
    expected = {p: 0 for p in players}
    for batch in batches:
        for e in batch:
            expected[e["player_id"]] += 3

    async def send(batch: list[dict[str, Any]]) -> None:
        for _ in range(60):
            try:
                r = await api.post("/events", json={"events": batch})
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
        raise AssertionError("a batch was never accepted")

    victim = (await _shard_pids(api))["1" if "1" in await _shard_pids(api) else "0"]
    sender = asyncio.ensure_future(asyncio.gather(*(send(b) for b in batches)))
    await asyncio.sleep(0.2)
    os.kill(victim, signal.SIGKILL)
    await sender
    assert await wait_for_totals(api, expected, timeout=30) == expected


async def test_pitboss_publishes_its_own_decisions_on_the_bus(api: httpx.AsyncClient, stack: Settings) -> None:
    conn = await aio_pika.connect(stack.rabbitmq_url)
    async with conn:
        channel = await conn.channel()
        exchange = await channel.declare_exchange(stack.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in ("limits.changed", "exclusion.started", "block.placed"):
            await queue.bind(exchange, routing_key=key)
        pid = await register(api)
        await api.put(f"/players/{pid}/limits", json={"limits": [{"kind": "loss", "period": "week", "value": 900}]})
        await api.post(f"/players/{pid}/exclusions", json={"kind": "timeout", "duration_hours": 48})
        await api.post(f"/players/{pid}/blocks", json={"kind": "kyc", "reason": "documents expired"})
        got: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(got) < 3:
            msg = await queue.get(fail=False, timeout=5)
            if msg is None:
                await asyncio.sleep(0.2)
                continue
            await msg.ack()
            body = json.loads(msg.body)
            if body["player_id"] == pid:
                got[body["type"]] = body
    assert set(got) == {"limits.changed", "exclusion.started", "block.placed"}
    assert got["limits.changed"]["payload"]["changes"][0]["kind"] == "loss"
    assert got["block.placed"]["payload"]["reason"] == "documents expired"
    assert all(g["brand"] == "demo" and g["event_id"] for g in got.values())
