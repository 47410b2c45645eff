"""Fixtures for tests against the real local stack (Cassandra, Redis, RabbitMQ, Ray Serve).

`make test` starts the stack (two datacenters) before pytest; run alone, the first test
that needs it starts it through cluster.local.stack. Set PITBOSS_API_URL to use a stack
that is already running elsewhere.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cassandra.cluster import Session

from adapters.cassandra.session import connect
from adapters.settings import Settings

if TYPE_CHECKING:
    from tests.integration.operators import Operators

API_URL = os.environ.get("PITBOSS_API_URL", "http://127.0.0.1:8000/platform/v1")
API_KEY = os.environ.get("PITBOSS_API_KEY", "local-only-demo-key")


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    if "PITBOSS_API_URL" not in os.environ:
        from cluster.local.stack import ensure_up

        ensure_up(two_dc=True, serve=True, demo=False)
    deadline = time.monotonic() + 180
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{API_URL}/healthz", timeout=5)
            if r.status_code == 200:
                break
            last = r.text
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(1)
    else:
        pytest.fail(f"the platform API is not healthy: {last}")
    yield Settings()


@pytest.fixture(scope="module")
def db(stack: Settings) -> Iterator[Session]:
    """A Cassandra session on the stack's keyspace, for tests that look at what was stored."""
    cluster, session = connect(stack, stack.cassandra_keyspace)
    yield session
    cluster.shutdown()


@pytest.fixture(scope="module")
async def ops(stack: Settings) -> AsyncIterator[Operators]:
    """Creates operators and logs them in over HTTP (tests/integration/operators.py)."""
    from tests.integration.operators import Operators

    o = Operators(stack)
    yield o
    await o.aclose()


@pytest.fixture
async def api(stack: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=API_URL, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as client:
        yield client


def new_id() -> str:
    return str(uuid.uuid4())


def envelope(
    player_id: str, type_: str, payload: dict[str, Any], event_id: str | None = None, brand: str = "demo"
) -> dict[str, Any]:
    return {
        "event_id": event_id or new_id(),
        "type": type_,
        "occurred_at": datetime.now(UTC).isoformat(),
        "player_id": player_id,
        "brand": brand,
        "schema_version": 1,
        "payload": payload,
    }


def bet(player_id: str, amount: int, currency: str = "EUR") -> dict[str, Any]:
    return envelope(
        player_id,
        "game.bet",
        {
            "bet_id": new_id(),
            "amount_minor": amount,
            "currency": currency,
            "game_id": "starburst",
            "game_category": "slots",
        },
    )


async def register(api: httpx.AsyncClient, currency: str = "EUR", **extra: Any) -> str:
    pid = new_id()
    r = await api.post("/players", json={"player_id": pid, "currency": currency, "country": "MT", **extra})
    assert r.status_code == 201, r.text
    return pid


def stack_process(name: str) -> int:
    """The pid to freeze of a local-stack service (RabbitMQ's is the Erlang VM under its script)."""
    from cluster.local.stack import recorded

    rec = recorded(name)
    if rec is None:
        pytest.skip(f"{name} is not a process of the local stack here")
    if name == "rabbitmq":
        children = Path(f"/proc/{rec.pid}/task/{rec.pid}/children").read_text().split()
        beams = [int(c) for c in children if Path(f"/proc/{c}/comm").read_text().strip() == "beam.smp"]
        if not beams:
            pytest.skip("RabbitMQ's Erlang VM not found under its script")
        return beams[0]
    return rec.pid
