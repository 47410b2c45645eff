"""Copying chat lines into their tickets, against the stack's Redis and Cassandra: the copy queue's
leases, and `TranscriptCopier` run in this process on a queue key of its own (the stack's worker
polls the default key, so it never takes these tests' chats)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import httpx
import pytest

from adapters.cassandra.chat import ChatStore
from adapters.redis_chat import ChatHub, CopyQueue, epoch_ms
from adapters.settings import Settings
from domain import chat as rules
from domain import tickets as ticket_rules
from schemas.chat import ChatLine
from schemas.tickets import TicketUpdate
from serve_apps.backoffice.deps import Operator, subject_of
from serve_apps.backoffice.identity import SessionInfo
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk.service import HelpDesk
from serve_apps.helpdesk.transcripts import TranscriptCopier, agent_context
from tests.integration.operators import LoggedIn, Operators
from tests.integration.test_chat import HELPDESK, new_chat


@dataclass
class Queues:
    hub: ChatHub
    queue: CopyQueue


@pytest.fixture
async def queues(stack: Settings) -> AsyncIterator[Queues]:
    key = f"pitboss:test:chat-copy:{uuid.uuid4()}"
    hub, queue = ChatHub(stack, key), CopyQueue(stack, key)
    yield Queues(hub, queue)
    await queue.commands.delete(key)
    await hub.commands.aclose()
    await queue.commands.aclose()


async def test_one_copier_leases_a_due_chat_and_a_line_stored_meanwhile_keeps_it_queued(queues: Queues) -> None:
    hub, q = queues.hub, queues.queue
    tid = uuid.uuid4()
    await hub.queue_copy(tid)
    await hub.queue_copy(tid)  # queued once, at its first line's time
    assert await q.size() == 1
    now = epoch_ms() + 1
    assert await q.due(now, 10) == [tid]
    lease = now + 60_000
    assert await q.lease(tid, now, lease)
    assert not await q.lease(tid, now, lease + 1), "a second copier must not take a leased chat"
    assert await q.due(now, 10) == []
    await hub.queue_copy(tid)  # a line stored while the copy runs
    await q.settle(tid, lease)
    assert await q.due(epoch_ms() + 1, 10) == [tid], "the newer line must still be copied"
    again = epoch_ms() + 1
    second = again + 60_000
    assert await q.lease(tid, again, second)
    await q.settle(tid, second)
    assert await q.size() == 0


async def test_a_failed_copy_is_due_again_later_and_a_dead_copiers_lease_falls_due(queues: Queues) -> None:
    hub, q = queues.hub, queues.queue
    failed, abandoned = uuid.uuid4(), uuid.uuid4()
    for tid in (failed, abandoned):
        await hub.queue_copy(tid)
    now = epoch_ms() + 1
    assert await q.lease(failed, now, now + 60_000)
    await q.settle(failed, now + 60_000, again_at_ms=now + 5_000)
    assert failed not in await q.due(now + 4_000, 10)
    assert failed in await q.due(now + 5_000, 10)
    assert await q.lease(abandoned, now, now + 50)  # the copier dies holding it
    await asyncio.sleep(0.1)
    assert abandoned in await q.due(epoch_ms(), 10)
    assert await q.lease(abandoned, epoch_ms(), epoch_ms() + 60_000), "another copier takes it over"


@pytest.fixture
async def desk(stack: Settings) -> AsyncIterator[HelpDesk]:
    bo = await asyncio.to_thread(BackOffice, stack, with_players=False)
    try:
        yield await asyncio.to_thread(HelpDesk, bo)
    finally:
        await bo.redis.aclose()
        bo.cluster.shutdown()


async def _agent(desk: HelpDesk, who: LoggedIn) -> Operator:
    info = SessionInfo(sid="", csrf="", operator=await desk.bo.identity.get_operator(UUID(who.operator_id)),
                       stage="full", handle="test-handle", expires_at=datetime.now(UTC))
    return Operator(session=info, subject=subject_of(info), ip="192.0.2.7", user_agent="transcript-test",
                    request_id=None)


async def test_an_agents_line_waits_for_its_context_then_is_copied_and_audited_as_that_agent(
    stack: Settings, queues: Queues, desk: HelpDesk, ops: Operators
) -> None:
    who = await ops.login(["support_agent"])
    op = await _agent(desk, who)
    player_id, chat = await new_chat("hello")
    tid = UUID(chat["ticket_id"])
    store = await asyncio.to_thread(ChatStore, desk.bo.session)
    # The agent's socket would write the context with the line; it is missing here (expired).
    await queues.queue.commands.delete(f"pitboss:chat:agent:{op.id}")
    last = await store.last_seq(tid)
    said = [("player", player_id, "is anyone there?"), ("agent", op.id, "yes, how can I help?"),
            ("player", player_id, "my deposit is stuck")]
    for i, (kind, author, body) in enumerate(said, start=1):
        client_id = uuid.uuid4()
        await store.put(ChatLine(ticket_id=tid, seq=last + i, message_id=rules.line_message_id(tid, client_id),
                                 client_id=client_id, author_kind=kind, author_id=author, body=body,
                                 created_at=datetime.now(UTC).replace(microsecond=0)))
    settings = stack.model_copy(update={"chat_copy_seconds": 0.0, "chat_copies_per_second": 1000.0})
    copier = TranscriptCopier(settings, store, queues.queue, desk)
    await queues.hub.queue_copy(tid)

    assert await copier.copy(tid) == "waiting"
    bodies = [m.body for m in await desk.tickets.messages(await desk.tickets.get(tid))]
    assert "is anyone there?" in bodies
    assert "yes, how can I help?" not in bodies and "my deposit is stuck" not in bodies

    await queues.hub.settle_and_publish(tid, uuid.uuid4(), last + 3, {"type": "noop"}, (op.id, agent_context(op)))
    assert await copier.copy(tid) == "copied"
    messages = await desk.tickets.messages(await desk.tickets.get(tid))
    copied = {m.body: m for m in messages}
    assert copied["yes, how can I help?"].author_kind == "agent"
    assert copied["yes, how can I help?"].author_id == op.id
    assert "my deposit is stuck" in copied
    assert await copier.copy(tid) == "nothing"  # nothing twice
    assert len(await desk.tickets.messages(await desk.tickets.get(tid))) == len(messages)

    replies = await desk.bo.audit.recent(limit=10, actor_id=op.id, action="ticket.reply", target_id=str(tid))
    assert replies and replies[0].ip == "192.0.2.7" and replies[0].user_agent == "transcript-test"


async def test_the_help_desk_health_shows_its_worker_and_the_worker_runs_every_loop() -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(f"{HELPDESK}/healthz")
    assert r.status_code == 200, r.text
    worker = r.json()["checks"]["worker"]
    assert worker["status"] == "up", worker
    assert set(worker["detail"]["loops"]) == {"transcripts", "kpi-facts", "chat-moves", "parked-events"}
    assert worker["detail"]["copy_queue"] >= 0


async def test_lines_of_a_chat_whose_ticket_closed_stay_in_the_chat_record_and_are_not_retried(
    stack: Settings, queues: Queues, desk: HelpDesk
) -> None:
    player_id, chat = await new_chat("hello")
    tid = UUID(chat["ticket_id"])
    # Solved, then closed by the scheduler's rule, as the SLA scheduler does it.
    before = await desk.tickets.get(tid)
    solved, _ = ticket_rules.apply(before, ticket_rules.UpdateTicket(TicketUpdate(status="solved"), "agent-t"),
                                   datetime.now(UTC))
    await desk.tickets.update(before, solved)
    closed, _ = ticket_rules.apply(solved, ticket_rules.CloseSolved(days=0), solved.updated_at)
    await desk.tickets.update(solved, closed)
    store = await asyncio.to_thread(ChatStore, desk.bo.session)
    last = await store.last_seq(tid)
    client_id = uuid.uuid4()
    await store.put(ChatLine(ticket_id=tid, seq=last + 1, message_id=rules.line_message_id(tid, client_id),
                             client_id=client_id, author_kind="player", author_id=player_id,
                             body="said as it closed", created_at=datetime.now(UTC).replace(microsecond=0)))
    copier = TranscriptCopier(stack.model_copy(update={"chat_copy_seconds": 0.0}), store, queues.queue, desk)

    assert await copier.copy(tid) == "closed"
    assert copier.totals["left_closed"] >= 1 and copier.totals["failed"] == 0
    assert await queues.queue.copied(tid) == last + 1
    assert await copier.copy(tid) == "nothing", "the closed chat's lines must not be tried again"
    bodies = [m.body for m in await desk.tickets.messages(await desk.tickets.get(tid))]
    assert "said as it closed" not in bodies
    assert [line.body for line in await store.all_after(tid, last)] == ["said as it closed"]
