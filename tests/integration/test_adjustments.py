"""Manual adjustments with four eyes, over HTTP against the deployed back office: approved at
once up to the threshold, pending above it, never approved by the requester, decided once,
scoped by brand, idempotent, validated, audited, and published on the bus when approved."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aio_pika
import pytest

from adapters.settings import Settings
from tests.integration.operators import ADMIN, LoggedIn, Operators, problem, register_player

THRESHOLD = 100_000  # cluster/policy/default.yaml: payment.adjust second_approver_above_minor


@pytest.fixture(scope="module")
async def payments(ops: Operators) -> LoggedIn:
    return await ops.login(["payments_operator"])


@pytest.fixture(scope="module")
async def supervisor(ops: Operators) -> LoggedIn:
    return await ops.login(["supervisor"])


@pytest.fixture(scope="module")
async def compliance(ops: Operators) -> LoggedIn:
    return await ops.login(["compliance_officer"])


@pytest.fixture(scope="module")
async def player() -> str:
    player_id, _ = await register_player()
    return player_id


def adjustment(amount: int, currency: str = "EUR", **kw: Any) -> dict[str, Any]:
    return {
        "adjustment_id": str(uuid.uuid4()),
        "amount_minor": amount,
        "currency": currency,
        "reason": "disputed deposit refunded by hand",
        "case_ref": "CASE-42",
        **kw,
    }


async def request(who: LoggedIn, player_id: str, body: dict[str, Any]) -> Any:
    return await who.client.post(f"{ADMIN}/players/{player_id}/adjustments", json=body)


async def listed(who: LoggedIn, player_id: str) -> dict[str, dict[str, Any]]:
    r = await who.client.get(f"{ADMIN}/players/{player_id}/adjustments")
    assert r.status_code == 200, r.text
    return {a["adjustment_id"]: a for a in r.json()["items"]}


async def audit_entries(who: LoggedIn, **match: Any) -> list[dict[str, Any]]:
    r = await who.client.get(f"{ADMIN}/audit", params={"limit": 500})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["items"] if all(e.get(k) == v for k, v in match.items())]


async def test_a_small_adjustment_is_approved_at_once(payments: LoggedIn, compliance: LoggedIn, player: str) -> None:
    body = adjustment(THRESHOLD)
    r = await request(payments, player, body)
    assert r.status_code == 201, r.text
    adj = r.json()
    assert adj["status"] == "approved" and adj["needs_second_approver"] is False
    assert adj["decided_by"] == payments.operator_id and adj["published_at"]
    assert (await listed(payments, player))[body["adjustment_id"]]["status"] == "approved"
    entries = await audit_entries(compliance, action="payment.adjust", target_id=body["adjustment_id"])
    assert [e["outcome"] for e in entries] == ["succeeded"]
    assert entries[0]["after"]["status"] == "approved"


async def test_a_large_adjustment_waits_for_another_operator_and_is_published_once_approved(
    payments: LoggedIn, supervisor: LoggedIn, compliance: LoggedIn, player: str, stack: Settings
) -> None:
    body = adjustment(-(THRESHOLD + 1))
    r = await request(payments, player, body)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending_approval" and r.json()["needs_second_approver"] is True
    adj_id = body["adjustment_id"]

    queue = await supervisor.client.get(f"{ADMIN}/adjustments", params={"status": "pending_approval"})
    assert queue.status_code == 200, queue.text
    assert adj_id in [a["adjustment_id"] for a in queue.json()["items"]]

    # The requester holds no approve right; the policy's not_self would refuse them anyway.
    r = await payments.client.post(f"{ADMIN}/adjustments/{adj_id}/approve", json={})
    assert r.status_code == 403, r.text

    conn = await aio_pika.connect(stack.rabbitmq_url)
    async with conn:
        channel = await conn.channel()
        exchange = await channel.declare_exchange(stack.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        events = await channel.declare_queue(exclusive=True, auto_delete=True)
        await events.bind(exchange, routing_key="payment.adjustment.approved")

        r = await supervisor.client.post(f"{ADMIN}/adjustments/{adj_id}/approve", json={"note": "checked the PSP"})
        assert r.status_code == 200, r.text
        approved = r.json()
        assert approved["status"] == "approved" and approved["decided_by"] == supervisor.operator_id
        assert approved["decision_note"] == "checked the PSP" and approved["published_at"]

        got: dict[str, Any] | None = None
        while got is None:
            msg = await events.get(timeout=10)
            await msg.ack()
            if msg.message_id == adj_id:
                got = json.loads(msg.body)
    assert got["event_id"] == adj_id and got["type"] == "payment.adjustment.approved"
    assert got["player_id"] == player and got["brand"] == "demo"
    assert got["payload"] == {
        "adjustment_id": adj_id,
        "amount_minor": -(THRESHOLD + 1),
        "currency": "EUR",
        "reason": body["reason"],
        "case_ref": "CASE-42",
        "requested_by": payments.operator_id,
        "approved_by": supervisor.operator_id,
    }

    for verb in ("approve", "reject"):
        again = await supervisor.client.post(f"{ADMIN}/adjustments/{adj_id}/{verb}", json={})
        assert again.status_code == 409, again.text
        assert problem(again)["field"] == "status"
    queue = await supervisor.client.get(f"{ADMIN}/adjustments")
    assert adj_id not in [a["adjustment_id"] for a in queue.json()["items"]]

    trail = await audit_entries(compliance, target_id=adj_id)
    seen = {(e["action"], e["outcome"], e["actor_id"]) for e in trail}
    assert ("payment.adjust", "succeeded", payments.operator_id) in seen
    assert ("payment.adjust.approve", "succeeded", supervisor.operator_id) in seen
    assert ("payment.adjust.approve", "failed", supervisor.operator_id) in seen
    assert ("payment.adjust.reject", "failed", supervisor.operator_id) in seen
    # The role gate refuses before the adjustment is loaded: that entry names the operator only.
    gate = {"actor_id": payments.operator_id, "action": "payment.adjust.approve", "outcome": "denied"}
    assert await audit_entries(compliance, **gate)
    done = next(e for e in trail if e["action"] == "payment.adjust.approve" and e["outcome"] == "succeeded")
    assert done["before"]["status"] == "pending_approval" and done["after"]["status"] == "approved"


async def test_a_supervisor_who_requested_an_adjustment_cannot_approve_it(
    ops: Operators, supervisor: LoggedIn, compliance: LoggedIn, player: str
) -> None:
    both = await ops.login(["payments_operator", "supervisor"])
    body = adjustment(THRESHOLD * 5)
    r = await request(both, player, body)
    assert r.status_code == 201 and r.json()["status"] == "pending_approval", r.text
    adj_id = body["adjustment_id"]
    r = await both.client.post(f"{ADMIN}/adjustments/{adj_id}/approve", json={})
    assert r.status_code == 403, r.text
    assert "own" in problem(r)["detail"]
    denied = await audit_entries(compliance, target_id=adj_id, action="payment.adjust.approve", outcome="denied")
    assert [e["actor_id"] for e in denied] == [both.operator_id]

    r = await supervisor.client.post(f"{ADMIN}/adjustments/{adj_id}/reject", json={"note": "no evidence"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rejected" and r.json()["published_at"] is None
    assert (await supervisor.client.post(f"{ADMIN}/adjustments/{adj_id}/approve", json={})).status_code == 409


async def test_a_support_agent_and_an_operator_of_another_brand_cannot_request(
    ops: Operators, payments: LoggedIn, compliance: LoggedIn, player: str
) -> None:
    support = await ops.login(["support_agent"])
    elsewhere = await ops.login(["payments_operator"], brands=["otherbrand"])
    for who in (support, elsewhere):
        body = adjustment(500)
        r = await request(who, player, body)
        assert r.status_code == 403, r.text
        assert body["adjustment_id"] not in await listed(payments, player)
    denied = await audit_entries(compliance, actor_id=elsewhere.operator_id, action="payment.adjust", outcome="denied")
    assert denied and "brand" in denied[0]["reason"]


async def test_a_retry_returns_the_first_adjustment_and_a_different_body_under_its_id_conflicts(
    payments: LoggedIn, player: str
) -> None:
    body = adjustment(THRESHOLD * 2)
    first = await request(payments, player, body)
    assert first.status_code == 201, first.text
    again = await request(payments, player, body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    other = await request(payments, player, {**body, "amount_minor": THRESHOLD * 3})
    assert other.status_code == 409, other.text
    assert problem(other)["field"] == "adjustment_id"
    assert (await listed(payments, player))[body["adjustment_id"]]["amount_minor"] == THRESHOLD * 2


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"amount_minor": 0}, "amount_minor", 422),
        ({"amount_minor": 10.5}, "amount_minor", 422),
        ({"amount_minor": "100"}, "amount_minor", 422),
        ({"amount_minor": 10**12 + 1}, "amount_minor", 422),
        ({"currency": "USD"}, "currency", 422),
        ({"currency": "EURO"}, "currency", 422),
        ({"reason": ""}, "reason", 422),
        ({"unexpected": 1}, "unexpected", 422),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(
    payments: LoggedIn, player: str, change: dict[str, Any], field: str, status: int
) -> None:
    body = {**adjustment(500), **change}
    r = await request(payments, player, body)
    assert r.status_code == status, r.text
    assert problem(r)["field"] == field
    assert body["adjustment_id"] not in await listed(payments, player)


async def test_an_unknown_player_or_adjustment_is_not_found(payments: LoggedIn, supervisor: LoggedIn) -> None:
    r = await request(payments, str(uuid.uuid4()), adjustment(500))
    assert r.status_code == 404, r.text
    assert problem(r)["field"] == "player_id"
    r = await supervisor.client.post(f"{ADMIN}/adjustments/{uuid.uuid4()}/approve", json={})
    assert r.status_code == 404, r.text
    assert problem(r)["field"] == "adjustment_id"
