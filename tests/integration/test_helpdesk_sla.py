"""Help-desk SLA clocks and the scheduler actor against the running stack (Cassandra, RabbitMQ,
Redis, Ray): stored clocks and their status, warnings and breaches exactly once on the bus even
across a restart of the actor, escalation, the pause while pending on the player, auto-close.

The module runs its own scheduler actor with a test policy of tiny 24x7 targets, restricted to a
brand of its own (so neither it nor the region's scheduler acts on anybody else's tickets), and
drives time by passing `now` to `scan_once` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from actors.helpdesk_sla import ACTOR, BREACH_EVENT, BREACH_TAG, WARNING_EVENT, alerts_key, sla_scheduler_actor
from adapters.cassandra.session import connect
from adapters.cassandra.sla_clocks import SlaClocks, bucket_of, clock_to_json
from adapters.cassandra.tickets import TicketStore
from adapters.settings import Settings
from adapters.sla_config import parse_sla_policies
from domain.tickets import AddMessage, CreateTicket, Ticket, UpdateTicket, apply, message_of, sla_events
from schemas.tickets import MessageCreate, TicketCreate, TicketUpdate
from tests.integration.operators import BASE_URL, Operators

pytestmark = pytest.mark.stack
BRAND = f"sla{uuid.uuid4().hex[:10]}"
POLICY_YAML = """
policies:
  - policy_id: test-p3
    name: test P3 (minutes, around the clock)
    priority: P3
    twenty_four_seven: true
    targets: {first_response: 4, next_response: 6, resolution: 30}
    warn_before_minutes: 2
  - policy_id: test-p4
    name: test P4 (an hour, around the clock)
    priority: P4
    twenty_four_seven: true
    targets: {first_response: 60, resolution: 600}
    warn_before_minutes: 10
"""
MIN = timedelta(minutes=1)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from adapters.cassandra.migrate import CQL_DIR, statements
    from cluster.local.stack import apply_client_env, local_env

    added = {k: v for k, v in local_env(two_dc=True).items() if k not in os.environ}
    os.environ.update(added)
    apply_client_env()
    s = Settings()
    # Only our own tables (IF NOT EXISTS): a colleague's migration may be half-written.
    cluster, session = connect(s, s.cassandra_keyspace)
    try:
        for stmt in statements((CQL_DIR / "009_helpdesk_sla.cql").read_text()):
            session.execute(stmt)
    finally:
        cluster.shutdown()
    yield s
    for key in added:
        os.environ.pop(key, None)


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sla") / "sla.yaml"
    path.write_text(POLICY_YAML)
    return path


@pytest.fixture(scope="module")
def stores(settings: Settings) -> Iterator[tuple[TicketStore, SlaClocks]]:
    cluster, session = connect(settings, settings.cassandra_keyspace)
    yield TicketStore(session), SlaClocks(session, parse_sla_policies(POLICY_YAML))
    cluster.shutdown()


@pytest.fixture(scope="module")
def scheduler(settings: Settings, policy_file: Path) -> Iterator[Any]:
    import ray

    if not ray.is_initialized():
        ray.init(address=settings.ray_address, namespace=settings.ray_namespace, log_to_driver=False)
    env = {
        "PITBOSS_HELPDESK_SLA_FILE": str(policy_file),
        "PITBOSS_HELPDESK_SLA_BRANDS": BRAND,
        "PITBOSS_HELPDESK_SLA_SCAN_SECONDS": "3600",  # the test drives the scans
        # After its first scan (and after a restart) the scheduler follows the change feed alone.
        "PITBOSS_HELPDESK_SLA_FULL_SCAN_SECONDS": "86400",
        "PITBOSS_HELPDESK_AUTOCLOSE_DAYS": "7",
        "PITBOSS_HELPDESK_SLA_ESCALATION_TEAM": "supervisors",
    }
    handle = sla_scheduler_actor(settings, name=f"pitboss-helpdesk-sla-test-{BRAND}", env=env)
    ray.get(handle.ping.remote(), timeout=60)
    yield handle
    ray.kill(handle, no_restart=True)


@pytest.fixture(scope="module")
async def bus(settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """A temporary queue bound to the SLA events and the ticket assignments (escalations)."""
    conn = await aio_pika.connect_robust(settings.rabbitmq_url)
    channel = await conn.channel()
    exchange = await channel.declare_exchange(settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    for key in (WARNING_EVENT, BREACH_EVENT, "ticket.assigned"):
        await queue.bind(exchange, routing_key=key)
    yield queue
    await conn.close()


async def drain(queue: aio_pika.abc.AbstractQueue, seconds: float = 3.0) -> list[dict[str, Any]]:
    """Every message that arrives within `seconds` after the last one."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = await queue.get(fail=False, timeout=5)
        if msg is None:
            await asyncio.sleep(0.2)
            continue
        await msg.ack()
        out.append({"type": msg.routing_key, "message_id": msg.message_id, **json.loads(msg.body)})
        deadline = time.monotonic() + seconds
    return out


def of(events: list[dict[str, Any]], ticket: Ticket) -> list[tuple[str, str]]:
    mine = [e for e in events if e["payload"]["ticket_id"] == str(ticket.ticket_id)
            and e["type"] in (WARNING_EVENT, BREACH_EVENT)]
    return sorted((e["type"], e["payload"]["target"]) for e in mine)


async def scan(scheduler: Any, now: datetime) -> dict[str, Any]:
    return dict(await scheduler.scan_once.remote(now))


class Desk:
    """Commands the way the ticket service runs them: decide, commit, then record the SLA events."""

    def __init__(self, store: TicketStore, clocks: SlaClocks) -> None:
        self.store, self.clocks = store, clocks

    async def create(self, at: datetime, priority: str = "P3") -> Ticket:
        body = TicketCreate(ticket_id=uuid.uuid4(), player_id=uuid.uuid4(), brand=BRAND, channel="web",
                            category="general", priority=priority, subject="Where is my withdrawal?", body="Hello")
        ticket, events = apply(None, CreateTicket(body), at)
        message = message_of(events)
        assert message is not None
        await self.store.create(ticket, message)
        await self.clocks.record(ticket, sla_events(events))
        return ticket

    async def run(self, ticket: Ticket, command: UpdateTicket | AddMessage, at: datetime) -> Ticket:
        after, events = apply(ticket, command, at)
        message = message_of(events)
        if message is not None:
            await self.store.add_message(ticket, after, message)
        else:
            await self.store.update(ticket, after)
        await self.clocks.record(after, sla_events(events))
        return after

    async def status(self, ticket: Ticket, status: str, at: datetime) -> Ticket:
        return await self.run(ticket, UpdateTicket(TicketUpdate(status=status), actor="agent-1"), at)

    async def say(self, ticket: Ticket, who: str, at: datetime) -> Ticket:
        body = MessageCreate(message_id=uuid.uuid4(), body="...", author_kind=who)
        return await self.run(ticket, AddMessage(body, actor="agent-1" if who == "agent" else None), at)


@pytest.fixture(scope="module")
def desk(stores: tuple[TicketStore, SlaClocks]) -> Desk:
    return Desk(*stores)


async def test_recorded_events_give_the_status_and_a_retry_changes_nothing(desk: Desk) -> None:
    t0 = datetime.now(UTC)
    ticket = await desk.create(t0)
    status = await desk.clocks.status(ticket, t0 + 3 * MIN)
    assert status is not None and status.policy_id == "test-p3"
    assert status.first_response is not None and status.first_response.state == "warning"
    assert status.first_response.elapsed_seconds in (179, 180)  # the create's sub-second part is floored
    answered = await desk.say(ticket, "agent", t0 + 3 * MIN)
    stored = await desk.clocks.load(ticket.ticket_id)
    assert stored is not None
    await desk.clocks.record(answered, [])  # a retry, or a command without SLA events
    again = await desk.clocks.load(ticket.ticket_id)
    assert again is not None and again.version == stored.version and again.clock_json == stored.clock_json
    later = await desk.clocks.status(answered, t0 + 10 * MIN)
    assert later is not None and later.first_response is not None and later.first_response.state == "met"
    statuses = await desk.clocks.statuses([answered], t0 + 10 * MIN)
    assert statuses[ticket.ticket_id] == later


async def test_a_new_ticket_clock_is_read_from_its_events_until_its_first_change(desk: Desk) -> None:
    t0 = datetime.now(UTC)
    body = TicketCreate(ticket_id=uuid.uuid4(), player_id=uuid.uuid4(), brand=BRAND, channel="web",
                        category="general", priority="P3", subject="Where is my withdrawal?", body="Hello")
    ticket, events = apply(None, CreateTicket(body), t0)
    message = message_of(events)
    assert message is not None
    await desk.store.create(ticket, message)
    await desk.clocks.start(ticket, sla_events(events))
    assert await desk.clocks.load(ticket.ticket_id) is None  # no clock row: the fast path wrote none
    status = await desk.clocks.status(ticket, t0 + 3 * MIN)
    assert status is not None and status.first_response is not None
    assert status.first_response.state == "warning"
    opened = [c for c in await desk.clocks.open_subjects(frozenset({BRAND})) if c.ticket_id == ticket.ticket_id]
    assert len(opened) == 1 and opened[0].version == 0 and opened[0].clock.state == "running"
    answered = await desk.say(ticket, "agent", t0 + 3 * MIN)  # the first change writes the row
    stored = await desk.clocks.load(ticket.ticket_id)
    assert stored is not None and stored.version == 1 and stored.ticket_version == answered.version
    later = await desk.clocks.status(answered, t0 + 10 * MIN)
    assert later is not None and later.first_response is not None and later.first_response.state == "met"


async def test_events_recorded_in_either_order_give_the_same_clock(desk: Desk) -> None:
    t0 = datetime.now(UTC)
    ticket = await desk.create(t0)
    a, ea = apply(ticket, UpdateTicket(TicketUpdate(status="pending"), actor="agent-1"), t0 + MIN)
    b, eb = apply(a, AddMessage(MessageCreate(message_id=uuid.uuid4(), body="here", author_kind="player")),
                  t0 + 2 * MIN)
    c, ec = apply(b, UpdateTicket(TicketUpdate(status="on_hold"), actor="agent-1"), t0 + 3 * MIN)
    # Three writers finishing in the reverse order of their commits.
    await desk.clocks.record(c, sla_events(ec))
    await desk.clocks.record(b, sla_events(eb))
    await desk.clocks.record(a, sla_events(ea))
    stored = await desk.clocks.load(ticket.ticket_id)
    from domain.sla import replay

    expected = replay([*sla_events(apply(None, CreateTicket(TicketCreate(
        ticket_id=ticket.ticket_id, player_id=ticket.player_id, brand=BRAND, channel="web", category="general",
        priority="P3", subject="Where is my withdrawal?", body="Hello")), ticket.created_at)[1]),
        *sla_events(ea), *sla_events(eb), *sla_events(ec)])
    assert stored is not None and stored.clock_json == clock_to_json(expected)
    assert stored.clock.state == "paused" and stored.status == "on_hold" and stored.ticket_version == c.version


async def test_a_missed_first_response_warns_once_and_breaches_once_across_a_restart_and_is_escalated(
    desk: Desk, scheduler: Any, bus: aio_pika.abc.AbstractQueue, settings: Settings, ops: Operators
) -> None:
    import ray
    import redis.asyncio as aioredis

    t0 = datetime.now(UTC)
    ticket = await desk.create(t0)
    await scan(scheduler, t0 + MIN)
    await scan(scheduler, t0 + 3 * MIN)  # the warning falls due 2 minutes before the 4-minute deadline
    await scan(scheduler, t0 + 3 * MIN + timedelta(seconds=20))
    assert of(await drain(bus), ticket) == [(WARNING_EVENT, "first_response")]

    pid = (await scheduler.stats.remote())["pid"]
    ray.kill(scheduler, no_restart=False)  # Ray restarts it; nothing of the warning is remembered in memory
    deadline = time.monotonic() + 60
    while True:  # the kill takes effect asynchronously: wait for the new process
        try:
            if ray.get(scheduler.stats.remote(), timeout=10)["pid"] != pid:
                break
        except Exception:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)
        assert time.monotonic() < deadline, "the scheduler did not come back"
    await scan(scheduler, t0 + 3 * MIN + timedelta(seconds=40))
    await scan(scheduler, t0 + 5 * MIN)
    await scan(scheduler, t0 + 6 * MIN)
    events = await drain(bus)
    assert of(events, ticket) == [(BREACH_EVENT, "first_response")]
    breach = next(e for e in events if e["payload"]["ticket_id"] == str(ticket.ticket_id))
    assert breach["brand"] == BRAND and breach["player_id"] == str(ticket.player_id)
    assert breach["payload"]["due_at"] == (ticket.created_at.replace(microsecond=0) + 4 * MIN).isoformat()

    escalated = await desk.store.get(ticket.ticket_id)
    assert escalated.team == "supervisors"
    moved = [e for e in events if e["type"] == "ticket.assigned" and e["payload"]["ticket_id"] == str(ticket.ticket_id)]
    assert [(e["payload"]["team"], e["payload"]["version"]) for e in moved] == [("supervisors", escalated.version)]
    assert BREACH_TAG in escalated.tags and "sla-first-response" in escalated.tags
    assert escalated.status == "new"  # nothing else changed: still awaiting its first answer

    r = aioredis.from_url(settings.redis_url)
    try:
        alerts = [json.loads(a) for a in await r.lrange(alerts_key(BRAND), 0, -1)]
    finally:
        await r.aclose()
    mine = sorted(a["kind"] for a in alerts if a["ticket_id"] == str(ticket.ticket_id))
    assert mine == ["breach", "warning"]

    from actors.audit import AuditClient

    audit = AuditClient(settings)
    try:
        entries = await audit.recent(10, target_id=str(ticket.ticket_id), action="ticket.sla_escalate")
    finally:
        await audit.close()
    assert len(entries) == 1 and entries[0].actor_id == ACTOR and entries[0].after is not None
    assert entries[0].after["team"] == "supervisors"

    # The supervisors of the brand see both alerts on the queue page; an agent does not get the card.
    supervisor = await ops.login(["supervisor"], brands=[BRAND])
    queue = await supervisor.client.get(f"{BASE_URL}/dashboard/tickets")
    assert queue.status_code == 200, queue.text
    card = queue.text.split('data-testid="sla-alerts"', 1)[1].split("</table>", 1)[0]
    assert card.count(f"/tickets/{ticket.ticket_id}") == 2
    agent = await ops.login(["support_agent"], brands=[BRAND])
    queue = await agent.client.get(f"{BASE_URL}/dashboard/tickets")
    assert queue.status_code == 200 and 'data-testid="sla-alerts"' not in queue.text


async def test_pending_on_the_player_pauses_the_clock(
    desk: Desk, scheduler: Any, bus: aio_pika.abc.AbstractQueue
) -> None:
    t0 = datetime.now(UTC)
    ticket = await desk.create(t0)
    waiting = await desk.status(ticket, "pending", t0 + MIN)
    await scan(scheduler, t0 + 30 * MIN)  # half an hour pending: the clock stood still at one minute
    assert of(await drain(bus, 1.5), waiting) == []
    paused = await desk.clocks.status(waiting, t0 + 30 * MIN)
    assert paused is not None and paused.first_response is not None
    assert paused.first_response.state == "paused" and paused.first_response.elapsed_seconds <= 60
    back = await desk.say(waiting, "player", t0 + 30 * MIN)  # the player answers: pending -> open
    assert back.status == "open"
    await scan(scheduler, t0 + 30 * MIN + 30 * timedelta(seconds=1))
    assert of(await drain(bus, 1.5), back) == []  # 1.5 minutes run of the 2 before the warning
    await scan(scheduler, t0 + 32 * MIN)
    events = await drain(bus)
    assert of(events, back) == [(WARNING_EVENT, "first_response")]
    warning = next(e for e in events if e["payload"]["ticket_id"] == str(ticket.ticket_id))
    # It fell due 2 running minutes after the create: 1 minute before the pause, 1 after it.
    fell_due = datetime.fromisoformat(warning["payload"]["fell_due_at"])
    assert t0 + 31 * MIN - timedelta(seconds=2) <= fell_due <= t0 + 31 * MIN


async def test_between_whole_reads_the_scheduler_follows_the_change_feed(desk: Desk, scheduler: Any) -> None:
    t0 = datetime.now(UTC)
    before = await scan(scheduler, t0)
    ticket = await desk.create(t0)
    opened = await scan(scheduler, t0 + timedelta(seconds=1))
    assert opened["read"].endswith("changes") and opened["open"] == before["open"] + 1
    answered = await desk.say(ticket, "agent", t0 + MIN)
    await desk.status(answered, "solved", t0 + 2 * MIN)
    solved = await scan(scheduler, t0 + 2 * MIN + timedelta(seconds=1))
    assert solved["read"].endswith("changes") and solved["open"] == before["open"]
    again = await scan(scheduler, t0 + 3 * MIN)  # the same changes read again (overlap): no double count
    assert again["open"] == before["open"]


async def test_solved_tickets_close_after_the_autoclose_days(desk: Desk, scheduler: Any) -> None:
    t0 = datetime.now(UTC)
    ticket = await desk.create(t0)
    answered = await desk.say(ticket, "agent", t0 + MIN)
    solved = await desk.status(answered, "solved", t0 + 2 * MIN)
    stored = await desk.clocks.load(ticket.ticket_id)
    assert stored is not None and stored.clock.state == "solved"
    assert ticket.ticket_id not in {o.ticket_id for o in await desk.clocks.open_subjects(frozenset({BRAND}))}
    assert bucket_of(ticket.ticket_id) in range(32)

    await scan(scheduler, t0 + 2 * MIN + timedelta(days=7) - timedelta(seconds=5))
    assert (await desk.store.get(ticket.ticket_id)).status == "solved"
    counts = await scan(scheduler, t0 + 2 * MIN + timedelta(days=7, seconds=1))
    closed = await desk.store.get(ticket.ticket_id)
    assert closed.status == "closed" and closed.closed_at is not None and counts["autoclosed"] >= 1
    assert closed.version == solved.version + 1
    await scan(scheduler, t0 + 2 * MIN + timedelta(days=7, seconds=30))
    assert (await desk.store.get(ticket.ticket_id)).version == closed.version  # closed once
    day = solved.solved_at.strftime("%Y-%m-%d") if solved.solved_at else ""
    assert ticket.ticket_id not in {s.ticket_id for s in await desk.clocks.solved_days([day])}


async def test_a_lowered_priority_is_judged_by_its_own_policy_even_when_not_recorded(
    desk: Desk, scheduler: Any, bus: aio_pika.abc.AbstractQueue
) -> None:
    t0 = datetime.now(UTC)
    ticket = await desk.create(t0)
    lowered, _ = apply(ticket, UpdateTicket(TicketUpdate(priority="P4"), actor="agent-1"), t0 + MIN)
    await desk.store.update(ticket, lowered)  # a change without SLA events whose record call never came
    await scan(scheduler, t0 + 5 * MIN)  # past P3's 4 minutes, well within P4's hour
    assert of(await drain(bus, 1.5), ticket) == []
    stored = await desk.clocks.load(ticket.ticket_id)
    assert stored is not None and stored.priority == "P4" and stored.policy_id == "test-p4"
    assert (await desk.store.get(ticket.ticket_id)).team is None  # not escalated
