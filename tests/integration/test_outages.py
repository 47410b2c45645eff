"""Dependencies failing under use.

- A Cassandra node killed (`kill -9`) under a platform's load and started again: the platform API
  answers 503 problem+json while it is down, serves again once it is back (no Pitboss process
  restarted), and every event it acknowledged before, during and after is applied exactly once.
- The broker frozen: the help desk still opens tickets; their events are parked in Cassandra and
  reach the bus once the broker is back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest

from adapters.settings import Settings
from cluster.local.stack import wait_gone
from tests.integration.conftest import API_KEY, API_URL, bet, new_id, register, stack_process
from tests.integration.test_ingestion import wait_for_totals

pytestmark = pytest.mark.stack

NODE = "cassandra-eu"
APPS = ("/platform/v1", "/admin/v1", "/helpdesk/v1", "/segments/v1")


def _start_node() -> None:
    from cluster.local.stack import NODES, StackError, start_cassandra, wait_cassandra

    node = NODES["eu"]
    for _ in range(20):
        try:
            started = start_cassandra(node)
            break
        except StackError:  # the killed node's port is not free yet
            time.sleep(0.5)
    else:
        started = start_cassandra(node)
    wait_cassandra(node, started is not None)


async def _all_apps_healthy(timeout: float = 180.0) -> None:
    base = API_URL.removesuffix("/platform/v1")
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=10) as client:
        for prefix in APPS:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(f"{base}{prefix}/healthz")
                    if r.status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{prefix} did not become healthy again after Cassandra restarted")
                await asyncio.sleep(1)


@pytest.fixture
async def node_restored() -> AsyncIterator[None]:
    """Whatever the test does, the node runs again and every app is healthy before the next test."""
    try:
        yield
    finally:
        await asyncio.to_thread(_start_node)
        await _all_apps_healthy()


class Platform:
    """Sends each event until it is acknowledged, over HTTP or the bus, as the casino platform does;
    `acked` is what Pitboss confirmed, per player."""

    def __init__(self, api: httpx.AsyncClient, settings: Settings, players: list[str]) -> None:
        self.api = api
        self.settings = settings
        self.players = players
        self.acked = {p: 0 for p in players}
        self.refusals: list[httpx.Response] = []
        self.running = True

    async def over_http(self) -> None:
        i = 0
        while self.running:
            e = bet(self.players[i % len(self.players)], 100)
            i += 1
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    r = await self.api.post("/events", json={"events": [e]})
                    if r.status_code == 200 and r.json()["results"][0]["status"] in ("accepted", "duplicate"):
                        self.acked[e["player_id"]] += 100
                        break
                    self.refusals.append(r)
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.02)

    async def over_the_bus(self) -> None:
        conn = await aio_pika.connect(self.settings.rabbitmq_url)
        async with conn:
            channel = await conn.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(
                self.settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            i = 0
            while self.running:
                e = bet(self.players[i % len(self.players)], 7)
                i += 1
                await exchange.publish(aio_pika.Message(json.dumps(e).encode(), delivery_mode=2),
                                       routing_key="game.bet")
                self.acked[e["player_id"]] += 7  # the broker confirmed it
                await asyncio.sleep(0.02)


async def _authorize(api: httpx.AsyncClient, pid: str) -> httpx.Response:
    return await api.post(f"/players/{pid}/deposits/authorize",
                          json={"tx_id": new_id(), "amount_minor": 100, "currency": "EUR"})


async def test_a_killed_cassandra_node_answers_503_then_serves_again_and_loses_no_acknowledged_event(
    api: httpx.AsyncClient, stack: Settings, node_restored: None
) -> None:
    players = [await register(api) for _ in range(8)]
    platform = Platform(api, stack, players)
    load = asyncio.gather(platform.over_http(), platform.over_the_bus())
    try:
        await asyncio.sleep(3)  # acknowledged events in the node's memtables and commit log
        pid = stack_process(NODE)
        os.kill(pid, signal.SIGKILL)
        assert not await asyncio.to_thread(wait_gone, [(pid, None)], 10.0), "the killed node is still there"

        down: dict[str, Any] = {}
        for _ in range(30):  # the driver notices within a request or two
            r = await _authorize(api, players[0])
            if r.status_code == 503:
                down = {"status": r.status_code, "type": r.headers["content-type"], "body": r.json(),
                        "retry": r.headers.get("retry-after")}
                break
            await asyncio.sleep(0.5)
        assert down["type"] == "application/problem+json" and down["retry"], down
        assert down["body"]["status"] == 503 and down["body"]["detail"], down
        health = await api.get("/healthz")
        assert health.status_code == 503 and health.json()["checks"]["cassandra"]["status"] == "down", health.text

        await asyncio.sleep(5)  # an outage long enough for retries, requeues and lease renewals to fail
        await asyncio.to_thread(_start_node)
        deadline = time.monotonic() + 90
        while (r := await _authorize(api, players[1])).status_code != 200:
            assert time.monotonic() < deadline, f"authorizations still refused after the node came back: {r.text}"
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # events acknowledged after the outage as well
    finally:
        platform.running = False
        await load

    assert all(r.status_code == 503 for r in platform.refusals), [r.text for r in platform.refusals[:3]]
    assert await wait_for_totals(api, platform.acked, timeout=120) == platform.acked


async def test_tickets_open_while_the_broker_is_frozen_and_their_events_reach_the_bus_once_it_is_back(
    api: httpx.AsyncClient, stack: Settings
) -> None:
    player = await register(api)
    helpdesk = API_URL.replace("/platform/v1", "/helpdesk/v1")
    body = {"ticket_id": new_id(), "player_id": player, "brand": "demo", "channel": "api", "category": "general",
            "subject": "Withdrawal pending", "body": "My withdrawal has been pending since yesterday."}
    conn = await aio_pika.connect(stack.rabbitmq_url)
    async with conn, httpx.AsyncClient(base_url=helpdesk, headers={"Authorization": f"Bearer {API_KEY}"},
                                       timeout=60) as platform:
        channel = await conn.channel()
        exchange = await channel.declare_exchange(stack.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        watch = await channel.declare_queue(exclusive=True)
        await watch.bind(exchange, routing_key="ticket.created")
        broker = stack_process("rabbitmq")
        os.kill(broker, signal.SIGSTOP)  # every publish hangs: the broker neither answers nor resets
        try:
            r = await platform.post("/platform/tickets", json=body)
            assert r.status_code == 201, r.text
            again = await platform.post("/platform/tickets", json=body)
            assert again.status_code == 200 and again.json()["ticket_id"] == body["ticket_id"], again.text
        finally:
            os.kill(broker, signal.SIGCONT)
        deadline = time.monotonic() + 90
        seen: list[str] = []
        while body["ticket_id"] not in seen:
            assert time.monotonic() < deadline, f"ticket.created never reached the bus (saw {len(seen)} others)"
            msg = await watch.get(fail=False, timeout=5)
            if msg is None:
                await asyncio.sleep(1)
                continue
            await msg.ack()
            event = json.loads(msg.body)
            assert event["type"] == "ticket.created"
            seen.append(str(event["payload"]["ticket_id"]))
    rows = await asyncio.to_thread(_parked_rows, stack)
    assert body["ticket_id"] not in rows, "the published event is still parked"


def _parked_rows(settings: Settings) -> str:
    from adapters.cassandra.session import connect

    cluster, session = connect(settings, settings.cassandra_keyspace)
    try:
        rows = session.execute("SELECT body FROM parked_events WHERE region = %s", (settings.region,))
        return " ".join(r["body"].decode() for r in rows)
    finally:
        cluster.shutdown()
