"""Two datacenters: a player written through `eu` (the platform API) is read through `us`.

The `us` side is a PlayerShard of region `us` in this process, connected to the `us`
Cassandra node (127.0.0.2) with `us` as its local datacenter, reading at LOCAL_QUORUM."""

from __future__ import annotations

import asyncio
import os
import time
from uuid import UUID

import httpx
import pytest

from actors.shard import PlayerShard
from adapters.cassandra.session import connect
from adapters.settings import Settings
from domain.errors import NotHomeRegion
from schemas.commands import UpdateProfile
from schemas.players import PlayerUpdate
from tests.integration.conftest import bet, register

pytestmark = [pytest.mark.stack, pytest.mark.twodc]

US_NODE = os.environ.get("PITBOSS_TEST_US_CONTACT_POINTS", "127.0.0.2")


@pytest.fixture
def us_region(stack: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    cluster, _ = connect(stack)
    try:
        strategy = cluster.metadata.keyspaces[stack.cassandra_keyspace].replication_strategy
        replicas = strategy.dc_replication_factors
    finally:
        cluster.shutdown()
    assert int(replicas.get("us", 0)) >= 1, f"the keyspace needs a replica in us, has {replicas}"
    monkeypatch.setenv("PITBOSS_REGION", "us")
    monkeypatch.setenv("PITBOSS_CASSANDRA_LOCAL_DC", "us")
    monkeypatch.setenv("PITBOSS_CASSANDRA_CONTACT_POINTS", US_NODE)
    return Settings()


async def test_the_us_datacenter_is_a_separate_node(us_region: Settings) -> None:
    cluster, session = connect(us_region)
    try:
        local = session.execute("SELECT data_center FROM system.local").one()
        peers = {r["data_center"] for r in session.execute("SELECT data_center FROM system.peers")}
    finally:
        cluster.shutdown()
    assert local["data_center"] == "us" and "eu" in peers


async def test_a_player_written_through_eu_is_read_through_us(api: httpx.AsyncClient, us_region: Settings) -> None:
    pid = await register(api, first_name="Elin")
    await api.post("/events", json={"events": [bet(pid, 125), bet(pid, 75)]})
    eu_view = (await api.get(f"/players/{pid}")).json()
    us_shard = PlayerShard("us", 0, 1)
    deadline = time.monotonic() + 30
    while True:
        try:
            us_view = await us_shard.read(UUID(pid), "demo")
            if us_view["version"] == eu_view["version"]:
                break
        except Exception:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)
    assert us_view["home_region"] == "eu"
    assert us_view["profile"]["first_name"] == "Elin"
    assert us_view["lifetime"]["bets_minor"] == 200
    # Writes go to the home region while it is alive.
    with pytest.raises(NotHomeRegion):
        await us_shard.command(UpdateProfile(player_id=UUID(pid), brand="demo", data=PlayerUpdate(first_name="Nope")))
    for task in list(us_shard._tasks):
        task.cancel()
