"""Live chat against the deployed help desk over real WebSockets (the `websockets` client): a
player's socket opened with the platform's token, an agent's socket opened with a dashboard
session; the transcript in the ticket; refusals; replay after a reconnect; a replica restart."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from adapters.cassandra.chat import ChatStore
from adapters.cassandra.session import connect as cassandra
from adapters.cassandra.tickets import TicketStore
from adapters.settings import Settings
from domain import chat as rules
from tests.integration.conftest import API_KEY
from tests.integration.operators import BASE_URL, LoggedIn, Operators, register_player

HELPDESK = f"{BASE_URL}/helpdesk/v1"
WS = BASE_URL.replace("http", "ws", 1) + "/helpdesk/v1"
Frame = dict[str, Any]
WAIT = 30.0  # the most a test waits for one frame before failing instead of hanging


@pytest.fixture(scope="module")
async def agent(ops: Operators) -> LoggedIn:
    return await ops.login(["support_agent"])


@pytest.fixture(scope="module")
def stores(stack: Settings) -> Iterator[tuple[TicketStore, ChatStore]]:
    cluster, session = cassandra(stack, stack.cassandra_keyspace)
    yield TicketStore(session), ChatStore(session)
    cluster.shutdown()


async def open_chat(player_id: str, message: str | None = None, chat_id: str | None = None,
                    key: str = API_KEY) -> httpx.Response:
    body: dict[str, Any] = {"player_id": player_id, "chat_id": chat_id or str(uuid.uuid4()), "language": "en"}
    if message is not None:
        body["message"] = message
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{HELPDESK}/chat/sessions", json=body, headers={"Authorization": f"Bearer {key}"})


async def new_chat(message: str | None = "hello, I need help") -> tuple[str, Frame]:
    player_id, _ = await register_player()
    r = await open_chat(player_id, message)
    assert r.status_code == 201, r.text
    return player_id, r.json()


def player_socket(token: str, after: int | None = None) -> Any:
    url = f"{WS}/chat/player?token={token}" + (f"&after={after}" if after is not None else "")
    return connect(url, open_timeout=WAIT)


def agent_socket(who: LoggedIn | None, origin: str | None = BASE_URL) -> Any:
    headers = {"Cookie": who.client.headers["cookie"]} if who is not None else {}
    return connect(f"{WS}/chat/agent", additional_headers=headers, origin=origin,  # type: ignore[arg-type]
                   open_timeout=WAIT)


async def send(ws: ClientConnection, frame: Frame) -> None:
    await ws.send(json.dumps(frame))


async def until(ws: ClientConnection, match: Callable[[Frame], bool]) -> Frame:
    """The next frame that matches (others are skipped)."""
    async with asyncio.timeout(WAIT):
        while True:
            frame: Frame = json.loads(await ws.recv())
            if match(frame):
                return frame


def kind(name: str, **fields: Any) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == name and all(f.get(k) == v for k, v in fields.items())


async def line(ws: ClientConnection, ticket_id: str, body: str, to: str | None = None) -> Frame:
    """Send a line (naming the chat `to` when given) and return its ack."""
    client_id = str(uuid.uuid4())
    extra = {"ticket_id": to} if to is not None else {}
    await send(ws, {"type": "message", "client_id": client_id, "body": body, **extra})
    ack = await until(ws, lambda f: f.get("client_id") == client_id)
    assert ack["type"] == "ack", ack
    assert ack["ticket_id"] == ticket_id
    return ack


async def transcript(store: TicketStore, ticket_id: str, expected: list[str]) -> list[Any]:
    """The ticket's messages once every expected body is among them (copied in the background, after
    the deliveries: on a loaded host that may take a while)."""
    deadline = time.monotonic() + 4 * WAIT
    while True:
        ticket = await store.get(UUID(ticket_id))
        messages = await store.messages(ticket)
        if all(any(m.body == b for m in messages) for b in expected) or time.monotonic() > deadline:
            return messages
        await asyncio.sleep(0.2)


async def test_a_player_and_an_agent_chat_with_typing_and_the_transcript_is_in_the_ticket(
    agent: LoggedIn, stores: tuple[TicketStore, ChatStore]
) -> None:
    player_id, chat = await new_chat("hello, I need help")
    tid = chat["ticket_id"]
    assert chat["expires_at"] and chat["token"]
    async with agent_socket(agent) as a, player_socket(chat["token"]) as p:
        ready = await until(a, kind("ready"))
        assert ready["operator_id"] == agent.operator_id
        await send(a, {"type": "join", "ticket_id": tid, "after": 0})
        joined = await until(a, kind("chat", ticket_id=tid))
        assert joined["player_id"] == player_id and joined["last_seq"] == 1
        first = await until(a, kind("message", ticket_id=tid))
        assert (first["seq"], first["author_kind"], first["body"]) == (1, "player", "hello, I need help")

        assert (await until(p, kind("ready")))["last_seq"] == 1
        assert (await until(p, kind("message")))["seq"] == 1  # a fresh socket replays the chat

        await send(p, {"type": "typing"})
        assert (await until(a, kind("typing", ticket_id=tid)))["author_kind"] == "player"
        asked = await line(p, tid, "my deposit is missing")
        got = await until(a, kind("message", seq=asked["seq"]))
        assert (got["body"], got["author_kind"], got["author_id"]) == ("my deposit is missing", "player", player_id)
        assert got["message_id"] == asked["message_id"]

        await send(a, {"type": "typing", "ticket_id": tid})
        assert (await until(p, kind("typing")))["author_kind"] == "agent"
        answered = await line(a, tid, "let me check that for you", to=tid)
        reply = await until(p, kind("message", seq=answered["seq"]))
        assert (reply["author_kind"], reply["author_id"]) == ("agent", agent.operator_id)

        # A resend after a lost ack is answered with the first ack and stored once.
        client_id = str(uuid.uuid4())
        frames = [{"type": "message", "client_id": client_id, "body": "are you there?"}] * 2
        for f in frames:
            await send(p, f)
        acks = [await until(p, lambda f: f.get("client_id") == client_id) for _ in frames]
        assert acks[0] == acks[1]

    tickets, lines = stores
    stored = await lines.after(UUID(tid), 0)
    assert [x.body for x in stored] == ["hello, I need help", "my deposit is missing", "let me check that for you",
                                        "are you there?"]
    messages = await transcript(tickets, tid, [x.body for x in stored])
    assert [m.body for m in messages] == [x.body for x in stored]
    assert [m.author_kind for m in messages] == ["player", "player", "agent", "player"]
    ticket = await tickets.get(UUID(tid))
    assert ticket.channel == "chat" and ticket.player_id == UUID(player_id)
    assert ticket.status == "open" and ticket.first_responded_at is not None  # the agent's line was a response
    # Copied later, in one commit, yet each line is in the ticket at the time it was said.
    said = {x.message_id: x.created_at for x in stored}
    assert [m.created_at for m in messages[1:]] == [said[m.message_id] for m in messages[1:]]
    assert ticket.first_responded_at == said[stored[2].message_id]


async def test_a_session_retry_names_the_same_chat_and_another_players_chat_id_is_refused() -> None:
    player_id, chat = await new_chat(None)
    r = await open_chat(player_id, chat_id=chat["chat_id"])
    assert r.status_code == 200, r.text
    assert r.json()["ticket_id"] == chat["ticket_id"]
    other, _ = await register_player()
    r = await open_chat(other, chat_id=chat["chat_id"])
    assert r.status_code == 409, r.text
    assert r.json()["field"] == "chat_id"
    r = await open_chat(player_id, key="not-a-key")
    assert r.status_code == 401


async def test_a_player_cannot_write_to_another_players_chat(stores: tuple[TicketStore, ChatStore]) -> None:
    _, mine = await new_chat("mine")
    _, theirs = await new_chat("theirs")
    _, lines = stores
    before = await lines.after(UUID(theirs["ticket_id"]), 0)
    async with player_socket(mine["token"]) as p:
        await until(p, kind("ready"))
        client_id = str(uuid.uuid4())
        await send(p, {"type": "message", "client_id": client_id, "body": "hijack", "ticket_id": theirs["ticket_id"]})
        error = await until(p, kind("error"))
        assert (error["status"], error["field"], error["client_id"]) == (403, "ticket_id", client_id)
        await send(p, {"type": "join", "ticket_id": theirs["ticket_id"]})
        assert (await until(p, kind("error")))["field"] == "type"
        await line(p, mine["ticket_id"], "still fine in my own chat", to=mine["ticket_id"])
    assert await lines.after(UUID(theirs["ticket_id"]), 0) == before
    assert all(x.body != "hijack" for x in await lines.after(UUID(mine["ticket_id"]), 0))


async def test_empty_oversize_and_malformed_frames_are_refused_and_nothing_is_stored(
    stack: Settings, stores: tuple[TicketStore, ChatStore]
) -> None:
    player_id, chat = await new_chat("first")
    _, lines = stores
    async with player_socket(chat["token"]) as p:
        await until(p, kind("ready"))
        for body in ("", "   \n ", "x" * (stack.chat_max_message_chars + 1)):
            client_id = str(uuid.uuid4())
            await send(p, {"type": "message", "client_id": client_id, "body": body})
            error = await until(p, kind("error"))
            assert (error["status"], error["field"], error["client_id"]) == (422, "body", client_id)
        await p.send("not json")
        assert (await until(p, kind("error")))["field"] == "frame"
        await send(p, {"type": "message", "client_id": "nope", "body": "x"})
        assert (await until(p, kind("error")))["field"] == "client_id"
        await send(p, {"type": "shout"})
        assert (await until(p, kind("error")))["field"] == "type"
        await p.send("{" * 200_000)
        assert (await until(p, kind("error")))["field"] == "body"
    assert [x.body for x in await lines.after(UUID(chat["ticket_id"]), 0)] == ["first"]
    r = await open_chat(player_id, "x" * (stack.chat_max_message_chars + 1))
    assert r.status_code == 422 and r.json()["field"] == "message"


async def _refused(socket: Any) -> tuple[Frame, int | None]:
    async with socket as ws:
        error = await until(ws, kind("error"))
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(WAIT):
                await ws.recv()
        return error, ws.close_code


async def test_expired_forged_and_missing_tokens_are_refused(stack: Settings) -> None:
    player_id, chat = await new_chat(None)
    now = datetime.now(UTC)
    grant = rules.ChatGrant(UUID(player_id), "demo", UUID(chat["ticket_id"]), UUID(chat["chat_id"]),
                            now - timedelta(seconds=1))
    expired = rules.issue_token(rules.token_key(stack.secret_key), grant, now - timedelta(minutes=5))
    forged = rules.issue_token(rules.token_key("not-the-secret"), rules.grant_for(
        UUID(player_id), "demo", UUID(chat["ticket_id"]), UUID(chat["chat_id"]), now, 600), now)
    for token in (expired, forged, "garbage", ""):
        error, code = await _refused(player_socket(token))
        assert (error["status"], error["field"], code) == (401, "token", 4401), token


async def test_the_agent_socket_needs_a_session_the_permission_and_the_dashboard_origin(
    agent: LoggedIn, ops: Operators
) -> None:
    error, code = await _refused(agent_socket(None))
    assert (error["status"], error["field"], code) == (401, "session", 4401)
    error, code = await _refused(agent_socket(agent, origin="https://evil.example"))
    assert (error["status"], error["field"], code) == (403, "Origin", 4403)
    error, code = await _refused(agent_socket(agent, origin=None))
    assert (error["field"], code) == ("Origin", 4403)
    marketer = await ops.login(["marketer"])
    error, code = await _refused(agent_socket(marketer))
    assert (error["status"], code) == (403, 4403)


async def test_a_reconnected_player_replays_what_it_missed(agent: LoggedIn) -> None:
    _, chat = await new_chat("are you there")
    tid = chat["ticket_id"]
    async with agent_socket(agent) as a:
        await until(a, kind("ready"))
        await send(a, {"type": "join", "ticket_id": tid, "after": 1})
        await until(a, kind("chat", ticket_id=tid))
        async with player_socket(chat["token"]) as p:
            seen = (await until(p, kind("ready")))["last_seq"]
        missed = [(await line(a, tid, f"answer {i}", to=tid))["seq"] for i in range(3)]
        async with player_socket(chat["token"], after=seen) as p:
            await until(p, kind("ready"))
            replayed = [await until(p, kind("message")) for _ in missed]
            assert [f["seq"] for f in replayed] == missed
            assert [f["body"] for f in replayed] == ["answer 0", "answer 1", "answer 2"]
            # Live again after the replay.
            more = await line(a, tid, "and live", to=tid)
            assert (await until(p, kind("message")))["seq"] == more["seq"]


def _kill_helpdesk_replicas(settings: Settings) -> list[str]:
    import ray
    from ray.util.state import list_actors

    if not ray.is_initialized():
        ray.init(address=settings.ray_address, namespace=settings.ray_namespace, log_to_driver=False)
    replicas = [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
                if (a.class_name or "").startswith("ServeReplica:helpdesk:HelpdeskAPI")]
    assert replicas, "no helpdesk replica found"
    for a in replicas:
        ray.kill(ray.get_actor(str(a.name), namespace=a.ray_namespace or "serve"), no_restart=True)
    return [a.actor_id for a in replicas]


async def _helpdesk_back() -> None:
    deadline = time.monotonic() + 180
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{HELPDESK}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1)
    pytest.fail("Serve did not replace the helpdesk replica")


async def test_a_chat_survives_a_helpdesk_replica_restart(
    stack: Settings, agent: LoggedIn, stores: tuple[TicketStore, ChatStore]
) -> None:
    _, chat = await new_chat("before the restart")
    tid = chat["ticket_id"]
    async with agent_socket(agent) as a, player_socket(chat["token"]) as p:
        await until(a, kind("ready"))
        await send(a, {"type": "join", "ticket_id": tid, "after": 0})
        await until(a, kind("message", seq=1))
        await until(p, kind("ready"))
        asked = await line(p, tid, "one more thing")
        await until(a, kind("message", seq=asked["seq"]))
        agent_seen = player_seen = asked["seq"]
        killed = await asyncio.to_thread(_kill_helpdesk_replicas, stack)
        assert killed
        for ws in (a, p):
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(WAIT):
                    while True:
                        await ws.recv()
    await _helpdesk_back()
    async with agent_socket(agent) as a, player_socket(chat["token"], after=player_seen) as p:
        ready = await until(a, kind("ready"))
        assert tid in [c["ticket_id"] for c in ready["chats"]]  # the agent opened it before the restart
        await send(a, {"type": "join", "ticket_id": tid, "after": agent_seen})
        await until(p, kind("ready"))
        asked = await line(p, tid, "after the restart")
        assert asked["seq"] == agent_seen + 1  # the sequence continues
        await until(a, kind("message", seq=asked["seq"]))
        answered = await line(a, tid, "still here", to=tid)
        await until(p, kind("message", seq=answered["seq"]))
    tickets, _ = stores
    bodies = ["before the restart", "one more thing", "after the restart", "still here"]
    messages = await transcript(tickets, tid, bodies)
    assert [m.body for m in messages] == bodies
