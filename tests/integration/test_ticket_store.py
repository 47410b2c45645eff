"""The ticket store against the running Cassandra: idempotent creates and messages, the version
check between two agents, refusals before storage, the timeline, attachments and cursors.

Each test uses its own ids (and its own brand for the queue), so runs never see each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.cassandra.helpdesk_routing import HelpdeskRoutingStore
from adapters.cassandra.session import connect
from adapters.cassandra.tickets import CHUNK_BYTES, TicketStore
from adapters.settings import Settings
from domain.errors import Conflict, InvalidInput, NotFound
from domain.tickets import (
    AddMessage,
    CloseSolved,
    CreateTicket,
    Ticket,
    UpdateTicket,
    apply,
    attachment_meta,
    message_of,
)
from schemas.tickets import MessageCreate, TicketCreate, TicketUpdate

pytestmark = pytest.mark.stack
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    from adapters.cassandra.migrate import CQL_DIR, migrate, statements
    from cluster.local.stack import apply_client_env, local_env

    added = {k: v for k, v in local_env(two_dc=True).items() if k not in os.environ}
    os.environ.update(added)
    apply_client_env()
    s = Settings()
    try:
        migrate(s)
    except Exception:
        # A colleague's migration may be half-written; ours is idempotent (IF NOT EXISTS).
        cluster, session = connect(s, s.cassandra_keyspace)
        try:
            for stmt in statements((CQL_DIR / "007_helpdesk.cql").read_text()):
                session.execute(stmt)
        finally:
            cluster.shutdown()
    yield s
    for key in added:
        os.environ.pop(key, None)


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[TicketStore]:
    cluster, session = connect(settings, settings.cassandra_keyspace)
    yield TicketStore(session)
    cluster.shutdown()


def brand() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def create_cmd(player: uuid.UUID | None = None, **kw: Any) -> CreateTicket:
    body = {
        "ticket_id": uuid.uuid4(),
        "player_id": player or uuid.uuid4(),
        "brand": brand(),
        "channel": "web",
        "category": "payments",
        "subject": "Withdrawal pending",
        "body": "Where is my money?",
        **kw,
    }
    return CreateTicket(TicketCreate.model_validate(body))


def msg(
    kind: str = "agent", visibility: str = "public", mid: uuid.UUID | None = None, body: str = "hello"
) -> AddMessage:
    return AddMessage(
        MessageCreate.model_validate(
            {"message_id": mid or uuid.uuid4(), "body": body, "visibility": visibility, "author_kind": kind}
        ),
        "op-1",
    )


async def created(store: TicketStore, cmd: CreateTicket, at: datetime = T0) -> Ticket:
    t, events = apply(None, cmd, at)
    first = message_of(events)
    assert first is not None
    assert await store.create(t, first)
    return t


async def add(store: TicketStore, ticket_id: uuid.UUID, cmd: AddMessage | UpdateTicket, at: datetime) -> Ticket:
    before = await store.get(ticket_id)
    after, events = apply(before, cmd, at)
    m = message_of(events)
    if m is not None:
        await store.add_message(before, after, m)
    else:
        await store.update(before, after)
    return after


async def test_create_is_idempotent(store: TicketStore) -> None:
    cmd = create_cmd()
    t = await created(store, cmd)
    assert await store.get(t.ticket_id) == t
    retry, events = apply(None, cmd, T0 + timedelta(seconds=5))  # a retry that did not read first
    first = message_of(events)
    assert first is not None
    assert await store.create(retry, first) is False
    assert await store.get(t.ticket_id) == t
    messages = await store.messages(t)
    assert [m.body for m in messages] == ["Where is my money?"] and messages[0].created_at == T0
    items, _ = await store.player_tickets(cmd.body.player_id or uuid.uuid4())
    assert [i["ticket_id"] for i in items] == [t.ticket_id]


async def test_add_message_is_idempotent(store: TicketStore) -> None:
    t = await created(store, create_cmd())
    mid = uuid.uuid4()
    after = await add(store, t.ticket_id, msg("agent", mid=mid), T0 + timedelta(minutes=1))
    assert after.status == "open" and after.version == 2
    again = await add(store, t.ticket_id, msg("agent", mid=mid, body="changed"), T0 + timedelta(minutes=2))
    assert again == after == await store.get(t.ticket_id)
    bodies = [m.body for m in await store.messages(again)]
    assert bodies == ["Where is my money?", "hello"]


async def test_two_agents_cannot_overwrite_each_other(store: TicketStore) -> None:
    t = await created(store, create_cmd())
    a, _ = apply(t, UpdateTicket(TicketUpdate(priority="P1"), "op-a"), T0 + timedelta(minutes=1))
    b, _ = apply(t, UpdateTicket(TicketUpdate(priority="P4"), "op-b"), T0 + timedelta(minutes=1))
    results = await asyncio.gather(store.update(t, a), store.update(t, b), return_exceptions=True)
    assert sum(isinstance(r, Conflict) for r in results) == 1
    conflict = next(r for r in results if isinstance(r, Conflict))
    assert conflict.field == "version"
    stored = await store.get(t.ticket_id)
    assert stored.version == 2 and stored.priority in ("P1", "P4")
    # A message that lost the race is not in the conversation.
    late, events = apply(t, msg("agent"), T0 + timedelta(minutes=2))
    m = message_of(events)
    assert m is not None
    with pytest.raises(Conflict):
        await store.add_message(t, late, m)
    assert [x.body for x in await store.messages(await store.get(t.ticket_id))] == ["Where is my money?"]


async def test_a_reply_to_a_closed_ticket_is_refused_before_storage(store: TicketStore) -> None:
    t = await created(store, create_cmd())
    await add(store, t.ticket_id, UpdateTicket(TicketUpdate(status="solved"), "op-1"), T0 + timedelta(minutes=1))
    before = await store.get(t.ticket_id)
    closed, _ = apply(before, CloseSolved(days=3), T0 + timedelta(days=4))
    await store.update(before, closed)
    stored = await store.get(t.ticket_id)
    assert stored.status == "closed"
    with pytest.raises(Conflict) as err:
        apply(stored, msg("player"), T0 + timedelta(days=5))
    assert err.value.field == "ticket_id"
    assert await store.get(t.ticket_id) == stored


async def test_unknown_ticket_is_not_found(store: TicketStore) -> None:
    with pytest.raises(NotFound):
        await store.get(uuid.uuid4())


async def test_timeline_is_newest_first_and_pages_with_a_cursor(store: TicketStore) -> None:
    player = uuid.uuid4()
    t1 = await created(store, create_cmd(player), T0)
    await add(store, t1.ticket_id, msg("agent"), T0 + timedelta(minutes=1))
    await add(store, t1.ticket_id, msg("agent", "internal"), T0 + timedelta(minutes=2))
    t2 = await created(store, create_cmd(player, subject="Bonus missing"), T0 + timedelta(minutes=3))
    everything = []
    cursor: str | None = None
    for _ in range(10):
        page, cursor = await store.timeline(player, cursor, limit=2)
        assert len(page) <= 2
        everything += page
        if cursor is None:
            break
    assert cursor is None
    assert [i.at for i in everything] == sorted((i.at for i in everything), reverse=True)
    assert len({i.item_id for i in everything}) == 6
    # A ticket and its first message share a time; their order within that time is the id's.
    by_time = [(i.at, i.kind) for i in everything]
    assert sorted(by_time, reverse=True) == sorted(
        [
            (T0 + timedelta(minutes=3), "ticket"),
            (T0 + timedelta(minutes=3), "message"),
            (T0 + timedelta(minutes=2), "message"),
            (T0 + timedelta(minutes=1), "message"),
            (T0, "ticket"),
            (T0, "message"),
        ],
        reverse=True,
    )
    newest_ticket = next(i for i in everything[:2] if i.kind == "ticket")
    assert newest_ticket.ticket_id == t2.ticket_id and newest_ticket.summary == "Bonus missing"
    assert everything[2].visibility == "internal"
    tickets, _ = await store.player_tickets(player)
    assert [x["ticket_id"] for x in tickets] == [t2.ticket_id, t1.ticket_id]
    assert tickets[1]["status"] == "open"
    with pytest.raises(InvalidInput) as err:
        await store.timeline(player, "not-a-cursor")
    assert err.value.field == "cursor"


async def test_queue_pages_newest_first_across_days_and_follows_status(store: TicketStore) -> None:
    b = brand()
    ids = []
    for day in range(3):
        for hour in range(2):
            t = await created(store, create_cmd(brand=b), T0 + timedelta(days=day, hours=hour))
            ids.append(t.ticket_id)
    moved = ids[2]
    await add(store, moved, UpdateTicket(TicketUpdate(status="pending"), "op-1"), T0 + timedelta(days=4))
    seen: list[uuid.UUID] = []
    cursor: str | None = None
    for _ in range(10):
        page, cursor = await store.queue(b, "new", cursor, limit=2)
        seen += [t.ticket_id for t in page]
        if cursor is None:
            break
    expected = [i for i in reversed(ids) if i != moved]
    assert seen == expected
    pending, _ = await store.queue(b, "pending")
    assert [t.ticket_id for t in pending] == [moved]


async def test_attachment_round_trip_and_limits(store: TicketStore) -> None:
    t = await created(store, create_cmd())
    data = b"%PDF-1.4\n" + os.urandom(CHUNK_BYTES * 2 + 123)
    meta = attachment_meta(uuid.uuid4(), t.ticket_id, "statement.pdf", "application/pdf", data, T0)
    assert await store.put_attachment(meta, data) is True
    assert await store.put_attachment(meta, data) is False  # a retry
    got_meta, got = await store.get_attachment(t.ticket_id, meta.attachment_id)
    assert got == data and got_meta == meta and hashlib.sha256(got).hexdigest() == meta.sha256
    assert [m.attachment_id for m in await store.attachments(t.ticket_id)] == [meta.attachment_id]
    other = b"%PDF-1.4\nsomething else"
    clash = attachment_meta(meta.attachment_id, t.ticket_id, "x.pdf", "application/pdf", other, T0)
    with pytest.raises(Conflict):
        await store.put_attachment(clash, other)
    with pytest.raises(InvalidInput):
        await store.put_attachment(meta, data[:-1])  # bytes that are not the described ones
    with pytest.raises(InvalidInput) as err:
        attachment_meta(uuid.uuid4(), t.ticket_id, "big.pdf", "application/pdf", b"%PDF-" + bytes(10 * 1024 * 1024), T0)
    assert err.value.field == "file"
    with pytest.raises(InvalidInput) as err:
        attachment_meta(uuid.uuid4(), t.ticket_id, "run.exe", "application/octet-stream", b"MZ", T0)
    assert err.value.field == "content_type"
    with pytest.raises(NotFound):
        await store.get_attachment(t.ticket_id, uuid.uuid4())


async def test_an_agents_load_is_counted_up_to_the_cap_routing_asks_for(store: TicketStore) -> None:
    routes = await asyncio.to_thread(HelpdeskRoutingStore, store.session)
    busy, idle = f"agent-{uuid.uuid4().hex[:8]}", f"agent-{uuid.uuid4().hex[:8]}"
    for i in range(7):
        cmd = create_cmd()
        t, _ = apply(None, cmd, T0 + timedelta(minutes=i))
        await routes.index(None, replace(t, assignee=busy))
    assert await routes.load(busy) == 7
    assert await routes.loads([busy, idle], cap=5) == {busy: 5, idle: 0}
    assert await routes.loads([busy, idle], cap=25) == {busy: 7, idle: 0}
