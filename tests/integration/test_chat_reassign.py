"""A chat reassigned to another agent reaches that agent's open console at once (real WebSockets
against the deployed help desk); the previous agent's console is told it moved; the player never
sees the notice."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.integration.operators import LoggedIn, Operators, new_ticket
from tests.integration.test_chat import HELPDESK, Frame, agent_socket, kind, line, new_chat, player_socket, send, until

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _reassign(supervisor: LoggedIn, ticket_id: str, to: str) -> dict[str, Any]:
    for _ in range(5):  # the transcript copier may bump the version in between: read again
        current = (await supervisor.client.get(f"{HELPDESK}/tickets/{ticket_id}")).json()["ticket"]
        r = await supervisor.client.patch(f"{HELPDESK}/tickets/{ticket_id}",
                                          json={"version": current["version"], "assignee": to})
        if r.status_code != 409:
            assert r.status_code == 200, r.text
            return dict(r.json())
    raise AssertionError("the ticket kept changing")


async def _frames_for(ws: Any, seconds: float) -> list[Frame]:
    out: list[Frame] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                out.append(json.loads(await ws.recv()))
    except TimeoutError:
        return out


async def test_a_reassigned_chat_reaches_the_new_agents_open_console_and_the_old_one_sees_it_moved(
    ops: Operators,
) -> None:
    first = await ops.login(["support_agent"], brands=["demo"])
    second = await ops.login(["support_agent"], brands=["demo"])
    supervisor = await ops.login(["supervisor"], brands=["demo"])
    _, chat = await new_chat("my withdrawal is stuck")
    tid = chat["ticket_id"]
    async with agent_socket(first) as a, agent_socket(second) as b, player_socket(chat["token"]) as p:
        await until(a, kind("ready"))
        ready_b = await until(b, kind("ready"))
        assert all(c["ticket_id"] != tid for c in ready_b["chats"])
        await until(p, kind("ready"))

        await _reassign(supervisor, tid, first.operator_id)
        offered = await until(a, kind("chat", ticket_id=tid))
        assert offered["assignee"] == first.operator_id and offered["last_seq"] == 1

        # The console joins what it is offered (as static/chat.js does) and replays the chat.
        await send(a, {"type": "join", "ticket_id": tid, "after": 0})
        assert (await until(a, kind("message", ticket_id=tid, seq=1)))["body"] == "my withdrawal is stuck"

        await _reassign(supervisor, tid, second.operator_id)
        moved = await until(a, kind("moved", ticket_id=tid))
        assert moved["assignee"] == second.operator_id
        offered = await until(b, kind("chat", ticket_id=tid))
        assert offered["assignee"] == second.operator_id

        # The new agent follows the chat live from the offer on, with no reload.
        asked = await line(p, tid, "hello? anyone there")
        got = await until(b, kind("message", ticket_id=tid, seq=asked["seq"]))
        assert got["body"] == "hello? anyone there"
        await send(b, {"type": "join", "ticket_id": tid, "after": 0})
        replayed = await until(b, kind("message", ticket_id=tid, seq=1))
        assert replayed["body"] == "my withdrawal is stuck"
        answer = await line(b, tid, "I am looking at it now", to=tid)
        assert (await until(p, kind("message", seq=answer["seq"])))["author_id"] == second.operator_id

        # The player's socket never carries the notice (nor agent ids from it).
        assert not [f for f in await _frames_for(p, 1.0) if f.get("type") == "moved"]

    # A console opened later lists the chat among the new agent's chats, and no longer among the
    # previous agent's (the `moved` notice above followed the removal).
    async with agent_socket(second) as b2, agent_socket(first) as a2:
        ready = await until(b2, kind("ready"))
        assert tid in [c["ticket_id"] for c in ready["chats"]]
        ready_first = await until(a2, kind("ready"))
        assert tid not in [c["ticket_id"] for c in ready_first["chats"]]


async def test_a_non_chat_ticket_reassignment_sends_no_chat_frame(ops: Operators) -> None:
    agent = await ops.login(["support_agent"], brands=["demo"])
    supervisor = await ops.login(["supervisor"], brands=["demo"])
    tid = (await new_ticket(supervisor.client, "Not a chat"))["ticket_id"]
    async with agent_socket(agent) as a:
        await until(a, kind("ready"))
        await _reassign(supervisor, tid, agent.operator_id)
        assert not [f for f in await _frames_for(a, 2.0) if f.get("ticket_id") == tid]
