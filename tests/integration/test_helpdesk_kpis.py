"""Help-desk KPIs from real tickets: an agent opens, answers and solves tickets; the figures follow."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.operators import BASE_URL, LoggedIn, Operators, new_ticket, problem

HD = f"{BASE_URL}/helpdesk/v1"
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _open(agent: LoggedIn, channel: str) -> dict[str, Any]:
    t = await new_ticket(agent.client, "KPI ticket", channel=channel)
    r = await agent.client.patch(f"{HD}/tickets/{t['ticket_id']}", json={"version": t["version"],
                                                                        "assignee": agent.operator_id})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _reply(agent: LoggedIn, t: dict[str, Any]) -> None:
    r = await agent.client.post(f"{HD}/tickets/{t['ticket_id']}/messages", json={
        "message_id": str(uuid.uuid4()), "body": "On it.", "author_kind": "agent"})
    assert r.status_code == 201, r.text


async def _solve(agent: LoggedIn, ticket_id: str) -> None:
    current = (await agent.client.get(f"{HD}/tickets/{ticket_id}")).json()["ticket"]
    r = await agent.client.patch(f"{HD}/tickets/{ticket_id}", json={"version": current["version"], "status": "solved"})
    assert r.status_code == 200, r.text


async def test_kpis_reflect_opened_answered_and_solved_tickets(ops: Operators) -> None:
    agent = await ops.login(["support_agent"], brands=["demo"])
    supervisor = await ops.login(["supervisor"], brands=["demo"])
    started = datetime.now(UTC) - timedelta(minutes=1)
    answered_solved = await _open(agent, "web")
    answered = await _open(agent, "web")
    untouched = await _open(agent, "phone")
    await _reply(agent, answered_solved)
    await _reply(agent, answered)
    await _solve(agent, answered_solved["ticket_id"])
    ended = datetime.now(UTC) + timedelta(minutes=1)
    period = {"brand": "demo", "from": started.isoformat(), "to": ended.isoformat()}

    # The period's figures come from the fact table, which the ticket events keep current (moments behind).
    deadline = time.monotonic() + 60
    while True:
        r = await agent.client.get(f"{HD}/kpis", params=period)
        assert r.status_code == 200, r.text
        own = r.json()
        o = own["overall"]
        if (o["tickets"], o["solved"], o["first_response"]["count"]) == (3, 1, 2) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert own["scope"] == "own" and own["time_basis"] == "calendar"
    o = own["overall"]
    assert (o["tickets"], o["solved"], o["first_response"]["count"], o["resolution"]["count"]) == (3, 1, 2, 1)
    assert o["by_channel"] == {"phone": 1, "web": 2}
    assert o["backlog_total"] == 2 and o["backlog"]["<1h"] == 2
    assert 0 <= o["first_response"]["median_seconds"] <= o["first_response"]["p90_seconds"] < 600
    assert list(own["by_agent"]) == [agent.operator_id]
    assert untouched["ticket_id"] not in r.text  # figures, never ticket contents

    r = await supervisor.client.get(f"{HD}/kpis", params=period)
    assert r.status_code == 200, r.text
    everything = r.json()
    assert everything["scope"] == "all"
    assert everything["by_agent"][agent.operator_id] == own["overall"]
    assert everything["overall"]["tickets"] >= 3


async def test_kpi_periods_are_checked(ops: Operators) -> None:
    supervisor = await ops.login(["supervisor"], brands=["demo"])
    now = datetime.now(UTC)
    r = await supervisor.client.get(f"{HD}/kpis", params={"brand": "demo", "from": now.isoformat(),
                                                          "to": (now - timedelta(days=1)).isoformat()})
    assert r.status_code == 422 and problem(r)["field"] == "to"
    r = await supervisor.client.get(f"{HD}/kpis", params={"brand": "demo", "from": "2024-01-01T00:00:00",
                                                          "to": "2024-01-02T00:00:00"})
    assert r.status_code == 422 and problem(r)["field"] == "from"
    r = await supervisor.client.get(f"{HD}/kpis", params={"brand": "Not A Brand"})
    assert r.status_code == 422
    other = await ops.login(["support_agent"], brands=["other-brand"])
    r = await other.client.get(f"{HD}/kpis", params={"brand": "demo"})
    assert r.status_code == 403
    async with httpx.AsyncClient(timeout=30) as anonymous:
        r = await anonymous.get(f"{HD}/kpis", params={"brand": "demo"})
        assert r.status_code == 401
