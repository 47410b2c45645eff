"""The /healthz verdict from the dependency probes (no service needed: the probes are coroutines)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from serve_apps.probes import health


async def _up() -> None:
    return None


async def _down() -> None:
    raise ConnectionError("refused")


async def _verdict(optional: frozenset[str], **probes: Any) -> tuple[int, dict[str, Any]]:
    r = await health("eu", optional, **probes)
    return r.status_code, json.loads(bytes(r.body))


@pytest.mark.parametrize(
    ("redis", "cassandra", "expected"),
    [(_up, _up, (200, "up")), (_down, _up, (200, "degraded")), (_up, _down, (503, "down")),
     (_down, _down, (503, "down"))],
)
def test_only_a_required_dependency_down_makes_the_replica_unhealthy(redis: Any, cassandra: Any,
                                                                      expected: tuple[int, str]) -> None:
    code, body = asyncio.run(_verdict(frozenset({"redis"}), redis=redis(), cassandra=cassandra()))
    assert (code, body["status"]) == expected
    assert set(body["checks"]) == {"redis", "cassandra"}
    for name, probe in (("redis", redis), ("cassandra", cassandra)):
        assert body["checks"][name]["status"] == ("up" if probe is _up else "down")
    if redis is _down:
        assert "refused" in body["checks"]["redis"]["error"]


def test_without_optional_dependencies_any_failure_is_down() -> None:
    code, body = asyncio.run(_verdict(frozenset(), redis=_down()))
    assert (code, body["status"]) == (503, "down")
