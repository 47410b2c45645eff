"""A/B experiments over HTTP against the deployed stack: assignments are sticky (stored on first
call, unchanged after a weight change), the holdout is flagged for campaigns, the split counts
over the segment's members are the pure bucketing's and within binomial bounds of the weights,
and the platform reads an assignment with its brand API key."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain import ab
from schemas.experiments import Experiment
from tests.integration.conftest import API_KEY, API_URL
from tests.integration.operators import LoggedIn, Operators, problem
from tests.integration.test_segments_api import SEGMENTS, create, register, tagged, wait_members

PLAYERS = 40


@pytest.fixture(scope="module")
async def marketer(ops: Operators) -> LoggedIn:
    return await ops.login(["marketer"], brands=["demo"])


@pytest.fixture(scope="module")
async def populated(marketer: LoggedIn, stack: Any) -> tuple[dict[str, Any], list[str]]:
    """A segment of PLAYERS freshly registered players, once they are all members."""
    tag = f"t-{uuid.uuid4().hex[:10]}"
    seg = await create(marketer, tagged(tag))
    async with httpx.AsyncClient(base_url=API_URL, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as p:
        players = [(await register(p, tag))[0] for _ in range(PLAYERS)]
    await wait_members(marketer, seg["segment_id"], set(players))
    return seg, players


def experiment_body(segment_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "experiment_key": f"exp-{uuid.uuid4().hex[:10]}",
        "segment_id": segment_id,
        "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
        "holdout_bp": 2000,
        "starts_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        **extra,
    }


async def test_assignments_are_sticky_and_flag_the_holdout_even_after_the_weights_change(
    marketer: LoggedIn, populated: tuple[dict[str, Any], list[str]]
) -> None:
    seg, players = populated
    body = experiment_body(seg["segment_id"])
    r = await marketer.client.post(f"{SEGMENTS}/experiments", json=body)
    assert r.status_code == 201, r.text
    assert (await marketer.client.post(f"{SEGMENTS}/experiments", json=body)).status_code == 200
    key = body["experiment_key"]
    definition = Experiment.model_validate({k: v for k, v in body.items() if k != "segment_id"})

    first: dict[str, dict[str, Any]] = {}
    for pid in players:
        r = await marketer.client.get(f"{SEGMENTS}/experiments/{key}/assignments/{pid}")
        assert r.status_code == 200, r.text
        a = r.json()
        assert a["first"] is True
        expected = ab.assign(definition, uuid.UUID(pid))
        assert (a["variant"], a["in_holdout"], a["bucket"]) == (expected.variant, expected.in_holdout, expected.bucket)
        first[pid] = a

    r = await marketer.client.patch(f"{SEGMENTS}/experiments/{key}", json={
        "version": 1, "holdout_bp": 0, "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 99}]})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    stale = await marketer.client.patch(f"{SEGMENTS}/experiments/{key}", json={"version": 1, "holdout_bp": 10})
    assert stale.status_code == 409

    for pid in players:
        a = (await marketer.client.get(f"{SEGMENTS}/experiments/{key}/assignments/{pid}")).json()
        assert a["first"] is False
        assert (a["variant"], a["in_holdout"]) == (first[pid]["variant"], first[pid]["in_holdout"])


async def test_the_split_counts_are_the_bucketings_and_within_bounds_of_the_weights(
    marketer: LoggedIn, populated: tuple[dict[str, Any], list[str]]
) -> None:
    seg, players = populated
    body = experiment_body(seg["segment_id"], holdout_bp=1000,
                           variants=[{"name": "control-a", "weight": 3}, {"name": "b", "weight": 1}])
    assert (await marketer.client.post(f"{SEGMENTS}/experiments", json=body)).status_code == 201
    r = await marketer.client.get(f"{SEGMENTS}/experiments/{body['experiment_key']}/split")
    assert r.status_code == 200, r.text
    split = r.json()
    assert split["members"] == PLAYERS
    assert split["holdout"] + sum(split["counts"].values()) == PLAYERS

    definition = Experiment.model_validate({k: v for k, v in body.items() if k != "segment_id"})
    idx = ab.assign_many(definition, ab.uuids_to_array(uuid.UUID(p) for p in players))
    assert split["holdout"] == int((idx == ab.HOLDOUT_INDEX).sum())
    assert split["counts"] == {"control-a": int((idx == 0).sum()), "b": int((idx == 1).sum())}
    # Each group's count is binomial(n, share): within 5 standard deviations (a false alarm once in ~3.5M runs).
    for name, count in [("holdout", split["holdout"]), *split["counts"].items()]:
        p = split["expected_share"][name]
        assert abs(count - PLAYERS * p) <= 5 * math.sqrt(PLAYERS * p * (1 - p)) + 1, (name, count, p)


async def test_the_platform_reads_an_assignment_with_its_brand_key(
    marketer: LoggedIn, populated: tuple[dict[str, Any], list[str]]
) -> None:
    seg, players = populated
    body = experiment_body(seg["segment_id"])
    assert (await marketer.client.post(f"{SEGMENTS}/experiments", json=body)).status_code == 201
    key, pid = body["experiment_key"], players[0]
    url = f"{SEGMENTS}/service/experiments/{key}/assignments/{pid}"
    async with httpx.AsyncClient(timeout=30) as c:
        by_service = await c.get(url, headers={"Authorization": f"Bearer {API_KEY}"})
        assert by_service.status_code == 200, by_service.text
        assert (await c.get(url)).status_code == 401
        assert (await c.get(url, headers={"Authorization": "Bearer not-a-key"})).status_code == 401
    by_operator = (await marketer.client.get(f"{SEGMENTS}/experiments/{key}/assignments/{pid}")).json()
    assert by_operator["variant"] == by_service.json()["variant"]
    assert by_operator["first"] is False


async def test_only_members_of_a_running_experiment_are_assigned(
    marketer: LoggedIn, populated: tuple[dict[str, Any], list[str]]
) -> None:
    seg, players = populated
    body = experiment_body(seg["segment_id"])
    assert (await marketer.client.post(f"{SEGMENTS}/experiments", json=body)).status_code == 201
    outsider = await marketer.client.get(f"{SEGMENTS}/experiments/{body['experiment_key']}/assignments/{uuid.uuid4()}")
    assert outsider.status_code == 404 and problem(outsider)["field"] == "player_id"

    later = experiment_body(seg["segment_id"], starts_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    assert (await marketer.client.post(f"{SEGMENTS}/experiments", json=later)).status_code == 201
    r = await marketer.client.get(f"{SEGMENTS}/experiments/{later['experiment_key']}/assignments/{players[0]}")
    assert r.status_code == 409


async def test_an_invalid_experiment_is_refused_naming_the_field(
    marketer: LoggedIn, populated: tuple[dict[str, Any], list[str]]
) -> None:
    seg, _ = populated
    cases = [
        (experiment_body(seg["segment_id"], holdout_bp=6000), "holdout_bp"),
        (experiment_body(seg["segment_id"], variants=[{"name": "holdout", "weight": 1}, {"name": "b", "weight": 1}]),
         "variants.0.name"),
        (experiment_body(seg["segment_id"], variants=[{"name": "a", "weight": 1}]), "variants"),
        (experiment_body(seg["segment_id"], ends_at="2020-01-01T00:00:00Z"), "ends_at"),
    ]
    for body, field in cases:
        r = await marketer.client.post(f"{SEGMENTS}/experiments", json=body)
        assert r.status_code == 422, r.text
        assert problem(r)["field"] == field
        assert (await marketer.client.get(f"{SEGMENTS}/experiments/{body['experiment_key']}")).status_code == 404
