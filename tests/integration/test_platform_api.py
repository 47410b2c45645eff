"""The platform API as the casino platform uses it, against the real stack."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import httpx
import pytest

from tests.integration.conftest import bet, envelope, new_id, register, stack_process

pytestmark = pytest.mark.stack


async def test_register_is_idempotent_on_player_id(api: httpx.AsyncClient) -> None:
    pid = new_id()
    body = {"player_id": pid, "currency": "EUR", "country": "SE", "email": "anna@example.com"}
    first = await api.post("/players", json=body)
    again = await api.post("/players", json=body)
    assert first.status_code == again.status_code == 201
    assert first.json()["player_id"] == again.json()["player_id"] == pid
    clash = await api.post("/players", json={**body, "currency": "SEK"})
    assert clash.status_code == 409
    assert clash.headers["content-type"].startswith("application/problem+json")
    assert (await api.get(f"/players/{pid}")).json()["profile"]["currency"] == "EUR"


async def test_profile_limits_and_counters_are_live(api: httpx.AsyncClient) -> None:
    pid = await register(api)
    r = await api.patch(f"/players/{pid}", json={"first_name": "Ada", "language": "en"})
    assert r.status_code == 200 and r.json()["profile"]["first_name"] == "Ada"
    r = await api.put(f"/players/{pid}/limits", json={"limits": [{"kind": "deposit", "period": "day", "value": 5000}]})
    assert r.json()["limits"][0]["value"] == 5000
    r = await api.put(f"/players/{pid}/limits", json={"limits": [{"kind": "deposit", "period": "day", "value": 9000}]})
    body = r.json()
    assert body["limits"][0]["value"] == 5000
    assert body["pending_limits"][0]["value"] == 9000 and body["pending_limits"][0]["effective_at"]
    r = await api.put(f"/players/{pid}/limits", json={"limits": [{"kind": "deposit", "period": "day", "value": 3000}]})
    assert r.json()["limits"][0]["value"] == 3000 and r.json()["pending_limits"] == []
    r = await api.post("/events", json={"events": [bet(pid, 250), bet(pid, 750)]})
    assert r.json()["accepted"] == 2
    player = (await api.get(f"/players/{pid}")).json()
    assert player["today"]["bets_minor"] == 1000 and player["lifetime"]["bets_count"] == 2


async def test_an_exclusion_denies_deposits_and_cannot_be_shortened(api: httpx.AsyncClient) -> None:
    pid = await register(api)
    r = await api.post(f"/players/{pid}/exclusions", json={"kind": "timeout", "duration_hours": 72})
    assert r.status_code == 201 and r.json()["status"] == "timed_out"
    r = await api.post(f"/players/{pid}/exclusions", json={"kind": "timeout", "duration_hours": 24})
    assert r.status_code == 409
    r = await api.post(
        f"/players/{pid}/deposits/authorize", json={"tx_id": "x1", "amount_minor": 100, "currency": "EUR"}
    )
    assert r.json()["decision"] == "deny" and r.json()["reasons"] == ["timed_out"]
    r = await api.post(f"/players/{pid}/exclusions", json={"kind": "self_exclusion", "indefinite": True})
    assert r.status_code == 201 and r.json()["status"] == "self_excluded"


async def test_fifty_concurrent_authorizations_never_exceed_the_limit(api: httpx.AsyncClient) -> None:
    pid = await register(api)
    await api.put(f"/players/{pid}/limits", json={"limits": [{"kind": "deposit", "period": "day", "value": 10_000}]})
    answers = await asyncio.gather(
        *(
            api.post(
                f"/players/{pid}/deposits/authorize", json={"tx_id": f"tx-{i}", "amount_minor": 700, "currency": "EUR"}
            )
            for i in range(50)
        )
    )
    assert all(a.status_code == 200 for a in answers)
    allowed = [a.json() for a in answers if a.json()["decision"] == "allow"]
    assert len(allowed) == 10_000 // 700
    player = (await api.get(f"/players/{pid}")).json()
    assert player["holds_minor"] == 700 * len(allowed) <= 10_000


async def test_an_authorization_retry_returns_the_first_answer(api: httpx.AsyncClient) -> None:
    pid = await register(api)
    await api.put(f"/players/{pid}/limits", json={"limits": [{"kind": "deposit", "period": "week", "value": 1000}]})
    body = {"tx_id": "t-1", "amount_minor": 800, "currency": "EUR"}
    first = await api.post(f"/players/{pid}/deposits/authorize", json=body)
    await api.put(f"/players/{pid}/limits", json={"limits": [{"kind": "deposit", "period": "week", "value": 500}]})
    again = await api.post(f"/players/{pid}/deposits/authorize", json=body)
    assert first.json() == again.json() and first.json()["decision"] == "allow"
    other = await api.post(f"/players/{pid}/deposits/authorize", json={**body, "amount_minor": 10})
    assert other.status_code == 409 and other.json()["field"] == "tx_id"


async def test_a_completed_deposit_turns_its_hold_into_usage(api: httpx.AsyncClient) -> None:
    pid = await register(api)
    await api.put(f"/players/{pid}/limits", json={"limits": [{"kind": "deposit", "period": "day", "value": 1000}]})
    await api.post(f"/players/{pid}/deposits/authorize", json={"tx_id": "d1", "amount_minor": 600, "currency": "EUR"})
    done = envelope(
        pid, "payment.deposit", {"tx_id": "d1", "status": "completed", "amount_minor": 600, "currency": "EUR"}
    )
    assert (await api.post("/events", json={"events": [done]})).json()["accepted"] == 1
    player = (await api.get(f"/players/{pid}")).json()
    assert player["holds_minor"] == 0 and player["today"]["deposits_minor"] == 600
    assert player["remaining"][0]["remaining"] == 400


async def test_events_delivered_twice_over_http_are_counted_once(api: httpx.AsyncClient) -> None:
    pid = await register(api)
    events = [bet(pid, 100) for _ in range(20)]
    first = (await api.post("/events", json={"events": events})).json()
    second = (await api.post("/events", json={"events": events + events[:3]})).json()
    assert first["accepted"] == 20
    assert second["accepted"] == 0 and second["duplicates"] == 23
    assert (await api.get(f"/players/{pid}")).json()["lifetime"]["bets_minor"] == 2000


async def test_one_bad_event_does_not_sink_the_batch(api: httpx.AsyncClient) -> None:
    pid = await register(api)
    good = bet(pid, 100)
    wrong_currency = bet(pid, 100, currency="USD")
    unknown_player = bet(new_id(), 100)
    other_brand = {**bet(pid, 100), "brand": "other"}
    bad_type = {**bet(pid, 100), "type": "game.jackpot"}
    r = await api.post("/events", json={"events": [good, wrong_currency, unknown_player, other_brand, bad_type]})
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["accepted", "rejected", "rejected", "rejected", "rejected"]
    assert "payload.currency" in results[1]["reason"]
    assert "unknown player" in results[2]["reason"]
    assert "brand" in results[3]["reason"]
    assert results[4]["reason"].startswith("type")


async def _version(api: httpx.AsyncClient, pid: str) -> int:
    return int((await api.get(f"/players/{pid}")).json()["version"])


BAD_REQUESTS: list[tuple[str, str, Any, int, str | None]] = [
    (
        "post",
        "/players/{pid}/deposits/authorize",
        {"tx_id": "b", "amount_minor": -5, "currency": "EUR"},
        422,
        "amount_minor",
    ),
    (
        "post",
        "/players/{pid}/deposits/authorize",
        {"tx_id": "b", "amount_minor": 5.5, "currency": "EUR"},
        422,
        "amount_minor",
    ),
    (
        "post",
        "/players/{pid}/deposits/authorize",
        {"tx_id": "b", "amount_minor": "5", "currency": "EUR"},
        422,
        "amount_minor",
    ),
    (
        "post",
        "/players/{pid}/deposits/authorize",
        {"tx_id": "b", "amount_minor": 5, "currency": "ZZZ"},
        422,
        "currency",
    ),
    (
        "post",
        "/players/{pid}/deposits/authorize",
        {"tx_id": "b", "amount_minor": 5, "currency": "USD"},
        422,
        "currency",
    ),
    (
        "post",
        "/players/{pid}/deposits/authorize",
        {"tx_id": "b", "amount_minor": 5, "currency": "EUR", "x": 1},
        422,
        "x",
    ),
    (
        "put",
        "/players/{pid}/limits",
        {"limits": [{"kind": "deposit", "period": "year", "value": 5}]},
        422,
        "limits.0.period",
    ),
    (
        "put",
        "/players/{pid}/limits",
        {"limits": [{"kind": "deposit", "period": "day", "value": 0}]},
        422,
        "limits.0.value",
    ),
    ("post", "/players/{pid}/exclusions", {"kind": "timeout", "duration_hours": 2}, 422, "duration_hours"),
    ("patch", "/players/{pid}", {"email": "not-an-email"}, 422, "email"),
    ("patch", "/players/{pid}", {}, 422, None),
    ("post", "/events", {"events": []}, 422, "events"),
    ("post", "/events", {"events": [{}] * 1001}, 422, "events"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), BAD_REQUESTS)
async def test_bad_input_is_a_problem_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient, method: str, path: str, body: Any, status: int, field: str | None
) -> None:
    pid = await register(api)
    before = await _version(api, pid)
    r = await api.request(method, path.format(pid=pid), json=body)
    assert r.status_code == status, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["status"] == status and problem["title"] and problem["detail"]
    if field is not None:
        assert problem["field"] == field
    assert "Traceback" not in r.text
    assert await _version(api, pid) == before


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    pid = await register(api)
    r = await api.post(
        f"/players/{pid}/deposits/authorize", content=b'{"tx_id": "a",', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["field"] == "body"


async def test_a_huge_body_is_refused_before_it_is_read(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/events", content=b"[" + b" " * (3 * 1024 * 1024) + b"]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["field"] == "body"


async def test_unknown_player_is_404(api: httpx.AsyncClient) -> None:
    pid = new_id()
    assert (await api.get(f"/players/{pid}")).status_code == 404
    r = await api.post(f"/players/{pid}/deposits/authorize", json={"tx_id": "a", "amount_minor": 1, "currency": "EUR"})
    assert r.status_code == 404 and r.json()["field"] == "player_id"


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic abc", "Bearer"])
async def test_a_wrong_or_missing_api_key_is_401(api: httpx.AsyncClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=str(api.base_url), headers=headers) as anon:
        r = await anon.post("/players", json={"player_id": new_id(), "currency": "EUR", "country": "MT"})
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")


async def test_an_idempotency_key_makes_a_retry_return_the_first_answer(api: httpx.AsyncClient) -> None:
    pid = await register(api)
    headers = {"Idempotency-Key": "ex-1"}
    first = await api.post(
        f"/players/{pid}/exclusions", json={"kind": "timeout", "duration_hours": 24}, headers=headers
    )
    again = await api.post(
        f"/players/{pid}/exclusions", json={"kind": "timeout", "duration_hours": 24}, headers=headers
    )
    assert first.status_code == again.status_code == 201
    assert len(again.json()["exclusions"]) == 1
    reused = await api.post(
        f"/players/{pid}/exclusions", json={"kind": "timeout", "duration_hours": 48}, headers=headers
    )
    assert reused.status_code == 409


async def test_health_and_metrics(api: httpx.AsyncClient) -> None:
    health = (await api.get("/healthz")).json()
    assert health["status"] == "up"
    assert set(health["checks"]) == {"cassandra", "redis", "rabbitmq", "shards", "consumers"}
    text = (await api.get("/metrics")).text
    for name in (
        "pitboss_http_request_duration_seconds",
        "pitboss_events_total",
        "pitboss_shard_active_players",
        "pitboss_cassandra_request_seconds",
    ):
        assert name in text


async def test_a_brand_cannot_reach_another_brands_player(api: httpx.AsyncClient, stack: Any) -> None:
    from adapters.cassandra.apikeys import ApiKeyStore
    from adapters.cassandra.session import connect

    cluster, session = connect(stack, stack.cassandra_keyspace)
    try:
        _, other_key = await ApiKeyStore(session).create("rival", "test")
    finally:
        cluster.shutdown()
    pid = await register(api)
    async with httpx.AsyncClient(base_url=str(api.base_url), headers={"Authorization": f"Bearer {other_key}"}) as rival:
        assert (await rival.get(f"/players/{pid}")).status_code == 403
        r = await rival.post(
            f"/players/{pid}/deposits/authorize", json={"tx_id": "r", "amount_minor": 1, "currency": "EUR"}
        )
        assert r.status_code == 403
        r = await rival.post("/events", json={"events": [bet(pid, 5)]})
        assert r.json()["results"][0]["status"] == "rejected"
    assert (await api.get(f"/players/{pid}")).json()["version"] == 1


@pytest.mark.parametrize("service", ["redis", "rabbitmq"])
async def test_a_frozen_redis_or_broker_leaves_the_platform_serving_and_reports_degraded(
    api: httpx.AsyncClient, service: str
) -> None:
    pid = await register(api)
    frozen = stack_process(service)
    os.kill(frozen, signal.SIGSTOP)  # every call hangs: the worst kind of outage, and no TCP reset
    try:
        health = await api.get("/healthz")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "degraded" and body["checks"][service]["status"] == "down", body
        assert body["checks"]["cassandra"]["status"] == "up"
        r = await api.post(f"/players/{pid}/deposits/authorize",
                           json={"tx_id": new_id(), "amount_minor": 500, "currency": "EUR"})
        assert r.status_code == 200 and r.json()["decision"] == "allow", r.text
        events = await api.post("/events", json={"events": [bet(pid, 300)]})
        assert events.status_code == 200 and events.json()["accepted"] == 1, events.text
    finally:
        os.kill(frozen, signal.SIGCONT)
    for _ in range(20):  # the probe reconnects to the broker on its next call
        if (await api.get("/healthz")).json()["status"] == "up":
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"/healthz did not come back up after {service} resumed")
