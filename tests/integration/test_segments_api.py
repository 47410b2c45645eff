"""The segmentation API over HTTP against the deployed stack: segments are created, previewed,
changed and retired; a bad rule is refused naming its part and nothing is stored; personal data
is masked for a marketer and clear for a holder of player.pii.read; an export is audited; brand
scope holds; a player becomes a member once their events arrive."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import API_KEY, API_URL
from tests.integration.operators import ADMIN, BASE_URL, LoggedIn, Operators, problem

SEGMENTS = f"{BASE_URL}/segments/v1"
WAIT_SECONDS = 90


@pytest.fixture(scope="module")
async def marketer(ops: Operators) -> LoggedIn:
    return await ops.login(["marketer"], brands=["demo"])


@pytest.fixture(scope="module")
async def pii_reader(ops: Operators) -> LoggedIn:
    # A marketer who may also see players' personal data (support_agent holds player.pii.read).
    return await ops.login(["marketer", "support_agent"], brands=["demo"])


@pytest.fixture(scope="module")
async def other_brand(ops: Operators) -> LoggedIn:
    return await ops.login(["marketer"], brands=["other"])


@pytest.fixture(scope="module")
async def auditor(ops: Operators) -> LoggedIn:
    return await ops.login(["compliance_officer"])


@pytest.fixture
async def platform(stack: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=API_URL, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as c:
        yield c


def tagged(tag: str) -> dict[str, Any]:
    """A rule only the players registered with this traffic source match."""
    return {"all": [{"feature": "traffic_source", "op": "eq", "value": tag}]}


async def register(platform: httpx.AsyncClient, tag: str) -> tuple[str, str]:
    pid, email = str(uuid.uuid4()), f"seg.{uuid.uuid4().hex[:8]}@players.example.test"
    r = await platform.post("/players", json={
        "player_id": pid, "currency": "EUR", "country": "MT", "email": email, "first_name": "Maria",
        "last_name": "Borg", "phone": "+35699123456", "traffic_source": tag,
    })
    assert r.status_code == 201, r.text
    return pid, email


async def create(who: LoggedIn, rule: dict[str, Any], brand: str = "demo", **extra: Any) -> dict[str, Any]:
    body = {"segment_id": str(uuid.uuid4()), "brand": brand, "name": f"test {uuid.uuid4().hex[:6]}", "rule": rule,
            **extra}
    r = await who.client.post(f"{SEGMENTS}/segments", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def wait_members(who: LoggedIn, segment_id: str, want: set[str]) -> list[dict[str, Any]]:
    """Polls the members until every wanted player is listed (events are applied asynchronously)."""
    deadline = time.monotonic() + WAIT_SECONDS
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = await who.client.get(f"{SEGMENTS}/segments/{segment_id}/members", params={"limit": 500})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        if want <= {m["player_id"] for m in items}:
            return items
        await asyncio.sleep(1)
    pytest.fail(f"members {want} did not appear within {WAIT_SECONDS}s; listed: {[m['player_id'] for m in items]}")


async def audit_entries(who: LoggedIn, **match: Any) -> list[dict[str, Any]]:
    r = await who.client.get(f"{ADMIN}/audit", params={"limit": 500})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["items"] if all(e.get(k) == v for k, v in match.items())]


async def test_the_feature_catalogue_lists_each_feature_with_its_operators(marketer: LoggedIn) -> None:
    r = await marketer.client.get(f"{SEGMENTS}/features")
    assert r.status_code == 200, r.text
    by_name = {f["name"]: f for f in r.json()}
    assert "within" in by_name["last_active_at"]["ops"]
    assert by_name["device"]["vocabulary"] and "in" in by_name["device"]["ops"]


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"all": [{"feature": "country", "op": "eq", "value": "MT"}, {"feature": "no_such", "op": "eq", "value": 1}]},
         "rule.all[1].feature"),
        ({"all": [{"feature": "deposits_sum_30d", "op": "gt", "value": "100"}]}, "rule.all[0].value"),
        ({"any": [{"feature": "country", "op": "in", "values": [f"C{i}" for i in range(1001)]}]},
         "rule.any[0].values"),
        ({"all": [{"feature": "last_active_at", "op": "within", "last": {"days": 7}},
                  {"feature": "last_active_at", "op": "not_within", "last": {"days": 30}}]}, "rule.all[1].last"),
        ({"all": [{"feature": "last_active_at", "op": "within", "last": {"days": 0}}]}, "rule.all[0].last.days"),
        ({"all": [{"feature": "deposits_sum_30d", "op": "between", "min": 10, "max": 5}]}, "rule.all[0].min"),
        ({"all": []}, "rule.all"),
        ({"some": [1]}, "rule"),
    ],
)
async def test_a_bad_rule_is_refused_naming_its_part_and_nothing_is_saved(
    marketer: LoggedIn, rule: dict[str, Any], field: str
) -> None:
    r = await marketer.client.post(f"{SEGMENTS}/segments/preview", json={"rule": rule})
    assert r.status_code == 422, r.text
    assert problem(r)["field"] == field
    segment_id = str(uuid.uuid4())
    r = await marketer.client.post(f"{SEGMENTS}/segments",
                                   json={"segment_id": segment_id, "brand": "demo", "name": "bad", "rule": rule})
    assert r.status_code == 422, r.text
    assert problem(r)["field"] == field
    assert (await marketer.client.get(f"{SEGMENTS}/segments/{segment_id}")).status_code == 404


async def test_a_segment_is_created_once_updated_with_a_version_and_retired(
    marketer: LoggedIn, auditor: LoggedIn
) -> None:
    tag = f"t-{uuid.uuid4().hex[:10]}"
    body = {"segment_id": str(uuid.uuid4()), "brand": "demo", "name": "VIP MT", "description": "d", "rule": tagged(tag)}
    r = await marketer.client.post(f"{SEGMENTS}/segments", json=body)
    assert r.status_code == 201, r.text
    seg = r.json()
    assert seg["version"] == 1 and seg["status"] == "active" and seg["count"] == 0
    again = await marketer.client.post(f"{SEGMENTS}/segments", json=body)
    assert again.status_code == 200 and again.json()["segment_id"] == seg["segment_id"]
    clash = await marketer.client.post(f"{SEGMENTS}/segments", json={**body, "name": "another"})
    assert clash.status_code == 409 and problem(clash)["field"] == "segment_id"

    listed = (await marketer.client.get(f"{SEGMENTS}/segments", params={"limit": 500})).json()["items"]
    assert seg["segment_id"] in {s["segment_id"] for s in listed}

    new_rule = {"any": [tagged(tag), {"feature": "traffic_source", "op": "eq", "value": f"{tag}-b"}]}
    r = await marketer.client.patch(f"{SEGMENTS}/segments/{seg['segment_id']}", json={"version": 1, "rule": new_rule})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["rule"] == new_rule
    stale = await marketer.client.patch(f"{SEGMENTS}/segments/{seg['segment_id']}", json={"version": 1, "name": "x"})
    assert stale.status_code == 409 and problem(stale)["field"] == "version"
    bad = await marketer.client.patch(f"{SEGMENTS}/segments/{seg['segment_id']}",
                                      json={"version": 2, "rule": {"not": {"feature": "churn_risk", "op": "gt",
                                                                           "value": True}}})
    assert bad.status_code == 422 and problem(bad)["field"] == "rule.not.value"
    assert (await marketer.client.get(f"{SEGMENTS}/segments/{seg['segment_id']}")).json()["version"] == 2

    r = await marketer.client.delete(f"{SEGMENTS}/segments/{seg['segment_id']}")
    assert r.status_code == 200 and r.json()["status"] == "retired"
    gone = await marketer.client.get(f"{SEGMENTS}/segments/{seg['segment_id']}/members")
    assert gone.status_code == 409

    actions = {e["action"] for e in await audit_entries(auditor, target_id=seg["segment_id"])}
    assert {"segment.create", "segment.update", "segment.retire"} <= actions


async def test_a_player_becomes_a_member_when_their_events_arrive_with_pii_masked_by_role(
    marketer: LoggedIn, pii_reader: LoggedIn, platform: httpx.AsyncClient
) -> None:
    tag = f"t-{uuid.uuid4().hex[:10]}"
    seg = await create(marketer, tagged(tag))
    assert seg["count"] == 0
    pid, email = await register(platform, tag)

    masked = {m["player_id"]: m for m in await wait_members(marketer, seg["segment_id"], {pid})}[pid]
    assert masked["profile"]["email"] != email and "*" in masked["profile"]["email"]
    assert "email" in masked["masked_fields"]
    assert masked["features"]["country"] == "MT"

    clear = {m["player_id"]: m for m in await wait_members(pii_reader, seg["segment_id"], {pid})}[pid]
    assert clear["profile"]["email"] == email and clear["masked_fields"] == []

    preview = await marketer.client.post(f"{SEGMENTS}/segments/preview",
                                         json={"rule": tagged(tag), "brand": "demo", "sample": 10})
    assert preview.status_code == 200, preview.text
    assert preview.json()["count"] == 1
    assert [s["profile"]["email"] for s in preview.json()["sample"]] == [masked["profile"]["email"]]

    # The size is the engine's live count, not the last (throttled) size sample.
    now = await marketer.client.get(f"{SEGMENTS}/segments/{seg['segment_id']}")
    assert now.status_code == 200 and now.json()["count"] == 1, now.text

    sizes = await marketer.client.get(f"{SEGMENTS}/segments/{seg['segment_id']}/sizes")
    assert sizes.status_code == 200 and sizes.json()["points"], sizes.text


async def test_an_export_streams_csv_masked_by_role_and_is_audited(
    marketer: LoggedIn, pii_reader: LoggedIn, auditor: LoggedIn, platform: httpx.AsyncClient
) -> None:
    tag = f"t-{uuid.uuid4().hex[:10]}"
    seg = await create(marketer, tagged(tag))
    players = dict([await register(platform, tag) for _ in range(3)])
    await wait_members(marketer, seg["segment_id"], set(players))

    r = await marketer.client.get(f"{SEGMENTS}/segments/{seg['segment_id']}/export.csv",
                                  params={"features": "country,lifecycle_stage"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["player_id"] for row in rows} == set(players)
    assert all(row["email"] != players[row["player_id"]] for row in rows)
    assert all(row["country"] == "MT" for row in rows)

    r = await pii_reader.client.get(f"{SEGMENTS}/segments/{seg['segment_id']}/export.csv")
    assert {row["email"] for row in csv.DictReader(io.StringIO(r.text))} == set(players.values())

    entries = await audit_entries(auditor, action="segment.export", target_id=seg["segment_id"])
    by_actor = {e["actor_id"]: e for e in entries}
    assert by_actor[marketer.operator_id]["after"]["rows"] == 3
    assert by_actor[marketer.operator_id]["after"]["pii_masked"] is True
    assert by_actor[pii_reader.operator_id]["after"]["pii_masked"] is False


async def test_an_operator_of_another_brand_neither_sees_nor_creates_the_brands_segments(
    marketer: LoggedIn, other_brand: LoggedIn
) -> None:
    seg = await create(marketer, tagged(f"t-{uuid.uuid4().hex[:10]}"))
    r = await other_brand.client.get(f"{SEGMENTS}/segments/{seg['segment_id']}")
    assert r.status_code == 403
    for path in ("members", "sizes", "export.csv"):
        assert (await other_brand.client.get(f"{SEGMENTS}/segments/{seg['segment_id']}/{path}")).status_code == 403
    listed = (await other_brand.client.get(f"{SEGMENTS}/segments", params={"limit": 500})).json()["items"]
    assert seg["segment_id"] not in {s["segment_id"] for s in listed}
    r = await other_brand.client.post(f"{SEGMENTS}/segments", json={
        "segment_id": str(uuid.uuid4()), "brand": "demo", "name": "x", "rule": tagged("x")})
    assert r.status_code == 403


async def test_an_analyst_reads_segments_but_cannot_change_or_export_them(
    ops: Operators, marketer: LoggedIn
) -> None:
    analyst = await ops.login(["analyst"], brands=["demo"])
    seg = await create(marketer, tagged(f"t-{uuid.uuid4().hex[:10]}"))
    assert (await analyst.client.get(f"{SEGMENTS}/segments/{seg['segment_id']}")).status_code == 200
    assert (await analyst.client.patch(f"{SEGMENTS}/segments/{seg['segment_id']}",
                                       json={"version": 1, "name": "x"})).status_code == 403
    assert (await analyst.client.get(f"{SEGMENTS}/segments/{seg['segment_id']}/export.csv")).status_code == 403
