"""The KPI fact table against the deployed stack: a ticket's fact follows it through the bus; an
older read never overwrites a newer one; a day never seen is backfilled from the ticket queue on
its first read (tickets from before the table existed), once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from adapters.cassandra.session import connect as cassandra
from adapters.cassandra.sla_clocks import SlaClocks
from adapters.cassandra.tickets import TicketStore
from adapters.settings import Settings
from adapters.sla_config import load_sla_policies
from domain import helpdesk_kpis as kpis
from domain import tickets as rules
from schemas.tickets import TicketCreate
from serve_apps.helpdesk.kpi_facts import KpiFactConsumer, KpiFacts
from tests.integration.operators import BASE_URL, Operators, new_ticket

HD = f"{BASE_URL}/helpdesk/v1"
WAIT = 60.0
pytestmark = pytest.mark.asyncio(loop_scope="session")


class CountedFacts(KpiFacts):
    """The real fact store, counting the ticket reads a consumer asks of it (slowed a little, so
    events of one change overlap as they do under a prefetch)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reads: dict[UUID, int] = {}

    async def refresh_version(self, ticket_id: UUID) -> tuple[str, int]:
        self.reads[ticket_id] = self.reads.get(ticket_id, 0) + 1
        await asyncio.sleep(0.05)
        return await super().refresh_version(ticket_id)


@pytest.fixture(scope="module")
async def facts(stack: Settings) -> AsyncIterator[CountedFacts]:
    cluster, session = cassandra(stack, stack.cassandra_keyspace)
    tickets = await asyncio.to_thread(TicketStore, session)
    sla = await asyncio.to_thread(SlaClocks, session, load_sla_policies(stack))
    yield await asyncio.to_thread(CountedFacts, session, tickets, sla)
    cluster.shutdown()


async def _fact_until(facts: KpiFacts, brand: str, created_at: datetime, ticket_id: UUID,
                      ok: Any) -> kpis.TicketFact | None:
    deadline = time.monotonic() + WAIT
    while True:
        fact = await facts.store.get(brand, created_at, ticket_id)
        if (fact is not None and ok(fact)) or time.monotonic() > deadline:
            return fact
        await asyncio.sleep(0.2)


async def test_a_tickets_fact_follows_it_through_its_events(ops: Operators, facts: KpiFacts) -> None:
    agent = await ops.login(["supervisor"], brands=["demo"])
    t = await new_ticket(agent.client, "Fact ticket", channel="phone")
    tid, created = UUID(t["ticket_id"]), datetime.fromisoformat(t["created_at"])
    fact = await _fact_until(facts, "demo", created, tid, lambda f: True)
    assert fact is not None and (fact.channel, fact.first_responded_at, fact.solved_at) == ("phone", None, None)

    r = await agent.client.patch(f"{HD}/tickets/{tid}", json={"version": t["version"], "assignee": agent.operator_id})
    assert r.status_code == 200, r.text
    r = await agent.client.post(f"{HD}/tickets/{tid}/messages", json={
        "message_id": str(uuid.uuid4()), "body": "On it.", "author_kind": "agent"})
    assert r.status_code == 201, r.text
    current = (await agent.client.get(f"{HD}/tickets/{tid}")).json()["ticket"]
    r = await agent.client.patch(f"{HD}/tickets/{tid}", json={"version": current["version"], "status": "solved"})
    assert r.status_code == 200, r.text
    solved = r.json()

    fact = await _fact_until(facts, "demo", created, tid, lambda f: f.solved_at is not None)
    assert fact is not None
    assert fact.assignee == agent.operator_id and fact.status == "solved"
    assert fact.first_responded_at == datetime.fromisoformat(solved["first_responded_at"])
    assert fact.solved_at == datetime.fromisoformat(solved["solved_at"])
    assert fact.sla_breached is False  # its clock knows it, and nothing breached

    # Re-applying (a redelivered event) writes the same row again.
    assert await facts.refresh(tid) == "written"
    assert await facts.store.get("demo", created, tid) == fact


async def test_an_older_read_never_overwrites_a_newer_one(facts: KpiFacts) -> None:
    brand = f"kpi-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC).replace(microsecond=0)
    newer = kpis.TicketFact(ticket_id=uuid.uuid4(), brand=brand, channel="web", status="solved", created_at=now,
                            assignee="b", first_responded_at=now + timedelta(seconds=5),
                            solved_at=now + timedelta(seconds=50), sla_breached=False)
    older = replace(newer, status="open", assignee="a", solved_at=None, sla_breached=None)
    read_at = time.time_ns() // 1000
    await facts.store.put(newer, 3, read_at)
    await facts.store.put(older, 2, read_at - 1000)  # lands later, but was read earlier
    assert await facts.store.get(brand, now, newer.ticket_id) == newer


async def test_a_day_never_seen_is_backfilled_on_its_first_read_once(facts: KpiFacts) -> None:
    brand = f"kpi-{uuid.uuid4().hex[:10]}"
    day = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=3)
    made = []
    for i in range(3):
        body = TicketCreate(ticket_id=uuid.uuid4(), player_id=uuid.uuid4(), brand=brand,
                            channel=("web", "email", "web")[i],
                            category="payments", subject=f"old ticket {i}", body="from before the fact table")
        ticket, events = rules.apply(None, rules.CreateTicket(body, None), day + timedelta(minutes=i))
        message = rules.message_of(events)
        assert message is not None
        assert await facts.tickets.create(ticket, message)
        made.append(ticket)
    start, end = day.replace(hour=0), day.replace(hour=0) + timedelta(days=1)
    assert await facts.store.backfilled(brand, kpis.day_of(start), kpis.day_of(start)) == set()

    got = await facts.period(brand, start, end, 1000, datetime.now(UTC))
    assert sorted(f.ticket_id for f in got) == sorted(t.ticket_id for t in made)
    assert {f.channel for f in got} == {"web", "email"}
    assert await facts.store.backfilled(brand, kpis.day_of(start), kpis.day_of(start)) == {kpis.day_of(start)}

    # Marked: a later read trusts the table (the bus keeps it current) and rebuilds nothing.
    late = TicketCreate(ticket_id=uuid.uuid4(), player_id=uuid.uuid4(), brand=brand, channel="phone",
                        category="payments", subject="no event", body="written without its events")
    ticket, events = rules.apply(None, rules.CreateTicket(late, None), day + timedelta(hours=1))
    message = rules.message_of(events)
    assert message is not None and await facts.tickets.create(ticket, message)
    again = await facts.period(brand, start, end, 1000, datetime.now(UTC))
    assert len(again) == 3
    # The command's --force path rebuilds it.
    assert await facts.backfill_day(brand, kpis.day_of(start), 1000) == 4
    assert len(await facts.period(brand, start, end, 1000, datetime.now(UTC))) == 4


async def test_events_of_one_change_arriving_together_read_the_ticket_once(
    stack: Settings, ops: Operators, facts: CountedFacts
) -> None:
    agent = await ops.login(["supervisor"], brands=["demo"])
    t = await new_ticket(agent.client, "Coalesced fact")
    tid = UUID(t["ticket_id"])
    consumer = KpiFactConsumer(stack, facts)
    created = {"type": "ticket.created", "payload": {"ticket_id": str(tid)}}
    routed = {"type": "ticket.assigned", "payload": {"ticket_id": str(tid), "version": t["version"]}}
    assert sorted(await asyncio.gather(consumer.handle(created), consumer.handle(routed))) == ["skipped", "written"]
    assert facts.reads[tid] == 1

    # A change's event and a breach (it names no version) together: one more read, the newest row.
    r = await agent.client.patch(f"{HD}/tickets/{tid}", json={"version": t["version"], "status": "pending"})
    assert r.status_code == 200, r.text
    changed = {"type": "ticket.status_changed", "payload": {"ticket_id": str(tid), "version": r.json()["version"]}}
    breached = {"type": "ticket.sla_breached", "payload": {"ticket_id": str(tid)}}
    assert list(await asyncio.gather(consumer.handle(breached), consumer.handle(changed))) == ["written", "skipped"]
    assert facts.reads[tid] == 2
    fact = await facts.store.get("demo", datetime.fromisoformat(t["created_at"]), tid)
    assert fact is not None and fact.status == "pending"
