"""The back-office API against the deployed stack: logins and their attacks, sessions, CSRF,
brand scope, masking, privilege escalation, API keys, and the audit entries each leaves."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pyotp
import pytest

from adapters.settings import Settings
from tests.integration.conftest import API_URL
from tests.integration.operators import (
    ADMIN,
    LoggedIn,
    Operators,
    next_code,
    problem,
    register_player,
    session_client,
    session_cookie,
)


@pytest.fixture(scope="module")
async def admin(ops: Operators) -> LoggedIn:
    return await ops.login(["admin"])


@pytest.fixture(scope="module")
async def compliance(ops: Operators) -> LoggedIn:
    return await ops.login(["compliance_officer"])


async def audit_entries(who: LoggedIn, **match: Any) -> list[dict[str, Any]]:
    r = await who.client.get(f"{ADMIN}/audit", params={"limit": 500})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["items"] if all(e.get(k) == v for k, v in match.items())]


async def test_a_wrong_password_is_refused_and_audited(ops: Operators, compliance: LoggedIn) -> None:
    _, username, _ = await ops.create(["support_agent"])
    async with session_client() as anon:
        r = await anon.post(f"{ADMIN}/auth/login", json={"username": username, "password": "not-the-password-at-all"})
        assert r.status_code == 401
        assert problem(r)["detail"]
        unknown = await anon.post(
            f"{ADMIN}/auth/login",
            json={"username": f"nobody-{uuid.uuid4().hex[:6]}", "password": "not-the-password-at-all"},
        )
        assert unknown.status_code == 401
        assert problem(unknown)["detail"] == problem(r)["detail"]
    denied = await audit_entries(compliance, action="auth.login", outcome="denied", actor_name=username)
    assert denied


async def test_malformed_login_bodies_get_problems_naming_the_field() -> None:
    async with session_client() as anon:
        r = await anon.post(f"{ADMIN}/auth/login", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and problem(r)["field"] == "body"
        r = await anon.post(f"{ADMIN}/auth/login", json={"username": "x", "password": 5})
        assert r.status_code == 422 and problem(r)["field"] == "password"
        r = await anon.post(f"{ADMIN}/auth/login", json={"username": "a" * 65, "password": "x"})
        assert r.status_code == 422 and problem(r)["field"] == "username"
        r = await anon.post(f"{ADMIN}/auth/login", content=b"x" * 400_000, headers={"content-type": "application/json"})
        assert r.status_code == 413


async def test_brute_force_locks_the_account(ops: Operators, stack: Settings) -> None:
    _, username, password = await ops.create(["support_agent"])
    async with session_client() as anon:
        codes = [
            (await anon.post(f"{ADMIN}/auth/login", json={"username": username, "password": f"wrong-{i}-password"}))
            for i in range(stack.login_max_failures + 1)
        ]
        assert codes[-1].status_code == 429
        assert int(codes[-1].headers["Retry-After"]) > 0
        # Even the right password waits out the lock.
        right = await anon.post(f"{ADMIN}/auth/login", json={"username": username, "password": password})
        assert right.status_code == 429


async def test_a_totp_code_is_accepted_once(ops: Operators) -> None:
    who = await ops.login(["support_agent"])
    async with session_client() as c:
        r = await c.post(f"{ADMIN}/auth/login", json={"username": who.username, "password": who.password})
        assert r.json()["stage"] == "mfa"
        csrf = r.json()["csrf_token"]
        code = next_code(who.totp_secret, who.last_code)
        ok = await c.post(f"{ADMIN}/auth/2fa/verify", json={"code": code}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200, ok.text
    async with session_client() as c:
        r = await c.post(f"{ADMIN}/auth/login", json={"username": who.username, "password": who.password})
        csrf = r.json()["csrf_token"]
        replay = await c.post(f"{ADMIN}/auth/2fa/verify", json={"code": code}, headers={"X-CSRF-Token": csrf})
        assert replay.status_code == 401
        assert (await c.get(f"{ADMIN}/auth/me")).status_code == 401


async def test_a_recovery_code_logs_in_once(ops: Operators) -> None:
    who = await ops.login(["analyst"])
    code = who.recovery_codes[0]
    for expected in (200, 401):
        async with session_client() as c:
            r = await c.post(f"{ADMIN}/auth/login", json={"username": who.username, "password": who.password})
            csrf = r.json()["csrf_token"]
            r = await c.post(f"{ADMIN}/auth/2fa/verify", json={"code": code}, headers={"X-CSRF-Token": csrf})
            assert r.status_code == expected, r.text


async def test_a_password_alone_reaches_nothing(ops: Operators) -> None:
    _, username, password = await ops.create(["admin"])
    async with session_client() as c:
        r = await c.post(f"{ADMIN}/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200 and r.json()["stage"] == "enrol"
        assert (await c.get(f"{ADMIN}/operators")).status_code == 401


async def test_forged_and_revoked_sessions_are_refused(ops: Operators) -> None:
    who = await ops.login(["supervisor"])
    name, sid = session_cookie(who.client)
    for forged in ("forged-" + "x" * 40, sid[:-2] + ("AA" if not sid.endswith("AA") else "BB")):
        async with httpx.AsyncClient(headers={"cookie": f"{name}={forged}"}) as c:
            assert (await c.get(f"{ADMIN}/auth/me")).status_code == 401
    assert (await who.client.get(f"{ADMIN}/auth/me")).status_code == 200
    r = await who.client.post(f"{ADMIN}/auth/logout")
    assert r.status_code == 204
    async with httpx.AsyncClient(headers={"cookie": f"{name}={sid}"}) as replay:
        assert (await replay.get(f"{ADMIN}/auth/me")).status_code == 401


async def test_state_changes_need_the_csrf_token(admin: LoggedIn) -> None:
    body = {"brand": "demo", "label": "csrf test"}
    r = await admin.client.post(f"{ADMIN}/api-keys", json=body, headers={"X-CSRF-Token": ""})
    assert r.status_code == 403 and problem(r)["field"] == "X-CSRF-Token"
    r = await admin.client.post(f"{ADMIN}/api-keys", json=body, headers={"X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    r = await admin.client.post(
        f"{ADMIN}/api-keys", json=body, headers={"Origin": "https://evil.example", "X-CSRF-Token": admin.csrf}
    )
    assert r.status_code == 403
    refused = await audit_entries(admin, action="auth.csrf", actor_id=admin.operator_id)
    assert len(refused) == 3 and all(e["outcome"] == "denied" for e in refused)


async def test_an_operator_of_another_brand_is_refused_the_player_and_it_is_audited(
    ops: Operators, compliance: LoggedIn
) -> None:
    player_id, _ = await register_player()
    other = await ops.login(["support_agent"], brands=["other-brand"])
    r = await other.client.get(f"{ADMIN}/players/{player_id}")
    assert r.status_code == 403
    assert "brand" in problem(r)["detail"]
    entries = await audit_entries(compliance, actor_id=other.operator_id, outcome="denied", target_id=player_id)
    assert entries and entries[0]["action"] == "player.read"


async def test_an_operator_outside_the_jurisdiction_is_refused(ops: Operators) -> None:
    player_id, _ = await register_player(country="MT")
    agent = await ops.login(["support_agent"], brands=["demo"], jurisdictions=["SE"])
    assert (await agent.client.get(f"{ADMIN}/players/{player_id}")).status_code == 403


async def test_personal_data_is_masked_for_a_marketer(ops: Operators, compliance: LoggedIn) -> None:
    player_id, email = await register_player()
    marketer = await ops.login(["marketer"], brands=["demo"])
    shown = (await marketer.client.get(f"{ADMIN}/players/{player_id}")).json()
    assert shown["profile"]["email"] != email and email not in str(shown)
    assert "email" in shown["masked_fields"]
    full = (await compliance.client.get(f"{ADMIN}/players/{player_id}")).json()
    assert full["profile"]["email"] == email and full["masked_fields"] == []


async def test_a_vip_manager_sees_only_assigned_players(ops: Operators) -> None:
    player_id, _ = await register_player()
    vip = await ops.login(["vip_manager"])
    supervisor = await ops.login(["supervisor"])
    assert (await vip.client.get(f"{ADMIN}/players/{player_id}")).status_code == 403
    r = await supervisor.client.put(f"{ADMIN}/players/{player_id}/vip-manager", json={"operator_id": vip.operator_id})
    assert r.status_code == 200, r.text
    assert (await vip.client.get(f"{ADMIN}/players/{player_id}")).status_code == 200


async def test_no_one_edits_their_own_roles(admin: LoggedIn, ops: Operators) -> None:
    r = await admin.client.patch(f"{ADMIN}/operators/{admin.operator_id}", json={"roles": ["admin", "supervisor"]})
    assert r.status_code == 403
    supervisor = await ops.login(["supervisor"])
    r = await supervisor.client.patch(f"{ADMIN}/operators/{supervisor.operator_id}", json={"roles": ["admin"]})
    assert r.status_code == 403
    r = await supervisor.client.post(
        f"{ADMIN}/operators",
        json={"username": f"x{uuid.uuid4().hex[:8]}", "display_name": "x", "roles": ["admin"], "brands": ["*"]},
    )
    assert r.status_code == 403


async def test_an_admin_cannot_grant_a_scope_beyond_their_own(ops: Operators) -> None:
    scoped = await ops.login(["admin"], brands=["demo"], jurisdictions=["MT"])
    r = await scoped.client.post(
        f"{ADMIN}/operators",
        json={
            "username": f"x{uuid.uuid4().hex[:8]}",
            "display_name": "x",
            "roles": ["support_agent"],
            "brands": ["*"],
            "jurisdictions": ["MT"],
        },
    )
    assert r.status_code == 422 and problem(r)["field"] == "brands"


async def test_operator_lifecycle_create_disable_reset(admin: LoggedIn, ops: Operators) -> None:
    username = f"life-{uuid.uuid4().hex[:8]}"
    r = await admin.client.post(
        f"{ADMIN}/operators",
        json={"username": username, "display_name": "Life", "roles": ["support_agent"], "brands": ["demo"]},
    )
    assert r.status_code == 201, r.text
    target = r.json()["operator"]["operator_id"]
    dup = await admin.client.post(
        f"{ADMIN}/operators", json={"username": username, "display_name": "Dup", "roles": ["support_agent"]}
    )
    assert dup.status_code == 409 and problem(dup)["field"] == "username"
    bad = await admin.client.post(
        f"{ADMIN}/operators", json={"username": f"r{uuid.uuid4().hex[:6]}", "display_name": "R", "roles": ["wizard"]}
    )
    assert bad.status_code == 422 and problem(bad)["field"] == "roles"

    agent = await ops.login(["support_agent"])
    assert (await agent.client.get(f"{ADMIN}/auth/me")).status_code == 200
    r = await admin.client.post(f"{ADMIN}/operators/{agent.operator_id}/disable")
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert (await agent.client.get(f"{ADMIN}/auth/me")).status_code == 401
    async with session_client() as c:
        r = await c.post(f"{ADMIN}/auth/login", json={"username": agent.username, "password": agent.password})
        assert r.status_code in (401, 403)

    r = await admin.client.post(f"{ADMIN}/operators/{target}/reset")
    assert r.status_code == 200 and r.json()["operator"]["mfa_enrolled"] is False
    assert r.json()["temporary_password"]
    assert (await admin.client.post(f"{ADMIN}/operators/{uuid.uuid4()}/disable")).status_code == 404
    entries = await audit_entries(admin, target_id=agent.operator_id, action="operator.disable")
    assert entries and entries[0]["before"]["disabled"] is False and entries[0]["after"]["disabled"] is True


async def test_an_operator_lists_and_ends_their_own_sessions(ops: Operators) -> None:
    who = await ops.login(["analyst"])
    mine = (await who.client.get(f"{ADMIN}/sessions")).json()
    assert [s["current"] for s in mine] == [True]
    other = await ops.login(["analyst"])
    r = await who.client.delete(f"{ADMIN}/sessions/{(await other.client.get(f'{ADMIN}/sessions')).json()[0]['handle']}")
    assert r.status_code == 404
    r = await who.client.delete(f"{ADMIN}/sessions/{mine[0]['handle']}")
    assert r.status_code == 204
    assert (await who.client.get(f"{ADMIN}/sessions")).status_code == 401


async def test_api_keys_are_created_rotated_and_revoked(admin: LoggedIn) -> None:
    r = await admin.client.post(f"{ADMIN}/api-keys", json={"brand": "demo", "label": "rotation test"})
    assert r.status_code == 201, r.text
    first = r.json()
    key1 = first["key"]

    async def status(key: str) -> int:
        async with httpx.AsyncClient(base_url=API_URL, headers={"Authorization": f"Bearer {key}"}) as api:
            return (await api.get(f"/players/{uuid.uuid4()}")).status_code

    assert await status(key1) == 404
    r = await admin.client.post(f"{ADMIN}/api-keys/demo/{first['key_id']}/rotate", json={"grace_seconds": 0})
    assert r.status_code == 201, r.text
    key2 = r.json()["new"]["key"]
    listed = (await admin.client.get(f"{ADMIN}/api-keys", params={"brand": "demo"})).json()
    assert all("key" not in k for k in listed)
    assert {first["key_id"], r.json()["new"]["key_id"]} <= {k["key_id"] for k in listed}
    r = await admin.client.post(f"{ADMIN}/api-keys/demo/{r.json()['new']['key_id']}/revoke")
    assert r.status_code == 200
    again = await admin.client.post(f"{ADMIN}/api-keys/demo/{first['key_id']}/revoke")
    assert again.status_code == 409
    # Revocation reaches the platform API within its key cache time.
    assert await status(key2) in (401, 404)
    unknown = await admin.client.post(f"{ADMIN}/api-keys/demo/{uuid.uuid4()}/revoke")
    assert unknown.status_code == 404


async def test_the_audit_chain_verifies_and_exports(admin: LoggedIn, compliance: LoggedIn) -> None:
    r = await compliance.client.get(f"{ADMIN}/audit/verify")
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True, r.json()["problems"][:3]
    r = await compliance.client.get(
        f"{ADMIN}/audit/export", params={"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "format": "csv"}
    )
    assert r.status_code == 200 and r.text.splitlines()[0].startswith("seq")
    r = await compliance.client.get(
        f"{ADMIN}/audit/export", params={"from": "2030-01-01T00:00:00Z", "to": "2020-01-01T00:00:00Z"}
    )
    assert r.status_code == 422
    exports = await audit_entries(compliance, action="audit.export", actor_id=compliance.operator_id)
    assert exports
    marketer_denied = await admin.client.get(
        f"{ADMIN}/audit/export", params={"from": "2020-01-01T00:00:00Z", "to": "2021-01-01T00:00:00Z"}
    )
    assert marketer_denied.status_code in (200, 403)


async def test_a_temporary_password_must_be_replaced_before_anything_else(ops: Operators) -> None:
    _, username, password = await ops.create(["admin"])
    async with session_client() as c:
        r = await c.post(f"{ADMIN}/auth/login", json={"username": username, "password": password})
        csrf = r.json()["csrf_token"]
        r = await c.post(f"{ADMIN}/auth/2fa/enrol", headers={"X-CSRF-Token": csrf})
        code = pyotp.TOTP(r.json()["secret"]).now()
        r = await c.post(f"{ADMIN}/auth/2fa/enrol/confirm", json={"code": code}, headers={"X-CSRF-Token": csrf})
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        r = await c.get(f"{ADMIN}/operators")
        assert r.status_code == 403 and problem(r)["field"] == "password"
        # A second factor cannot be swapped from a signed-in session either.
        assert (await c.post(f"{ADMIN}/auth/2fa/enrol")).status_code == 401
        weak = await c.post(f"{ADMIN}/auth/password", json={"old_password": password, "new_password": "short"})
        assert weak.status_code == 422 and problem(weak)["field"] == "new_password"
        r = await c.post(f"{ADMIN}/auth/password", json={"old_password": password, "new_password": password + "-x"})
        assert r.status_code == 204
        assert (await c.get(f"{ADMIN}/operators")).status_code == 200
