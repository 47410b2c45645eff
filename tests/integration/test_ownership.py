"""Single writer: shard leases fence a stale owner; a player homed elsewhere is read locally
but not written without that region's lease. Uses PlayerShard in this process against the
real Cassandra (no Ray needed: the fencing lives in the shard and the lease table)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest

from actors.shard import PlayerShard
from adapters.settings import Settings
from domain.errors import NotHomeRegion, StaleOwner, Unavailable
from schemas.commands import RegisterPlayer, UpdateProfile
from schemas.players import PlayerCreate, PlayerUpdate

pytestmark = pytest.mark.stack


@pytest.fixture
def short_leases(stack: Settings) -> Iterator[None]:
    old = os.environ.get("PITBOSS_LEASE_SECONDS")
    os.environ["PITBOSS_LEASE_SECONDS"] = "2"
    yield
    if old is None:
        os.environ.pop("PITBOSS_LEASE_SECONDS", None)
    else:
        os.environ["PITBOSS_LEASE_SECONDS"] = old


def registration(region: str) -> RegisterPlayer:
    pid = uuid.uuid4()
    return RegisterPlayer(
        player_id=pid,
        brand="demo",
        home_region=region,
        command_id=f"register:{pid}",
        data=PlayerCreate(player_id=pid, currency="EUR", country="MT"),
    )


async def stop_renewing(shard: PlayerShard) -> None:
    for task in list(shard._tasks):
        task.cancel()
    await asyncio.sleep(0)


async def test_a_second_owner_waits_and_a_stale_owner_is_refused(short_leases: None) -> None:
    region = f"fence{uuid.uuid4().hex[:8]}"
    first = PlayerShard(region, 0, 1)
    await first.ready()
    reg = registration(region)
    assert (await first.command(reg))[0] == 201

    second = PlayerShard(region, 0, 1)
    with pytest.raises(Unavailable):
        await second.ready()

    await stop_renewing(first)  # as if the first owner hung or was partitioned away
    await asyncio.sleep(2.5)
    await second.ready()
    assert second.leases[region].lease_epoch == first.leases[region].lease_epoch + 1
    change = UpdateProfile(player_id=reg.player_id, brand="demo", data=PlayerUpdate(first_name="New"))
    status, body = await second.command(change)
    assert status == 200 and body["profile"]["first_name"] == "New"

    stale = UpdateProfile(player_id=reg.player_id, brand="demo", data=PlayerUpdate(first_name="Stale"))
    with pytest.raises(StaleOwner):
        await first.command(stale)
    current = await second.read(reg.player_id, "demo")
    assert current["profile"]["first_name"] == "New"
    await stop_renewing(second)


async def test_a_player_homed_in_a_live_region_is_read_but_not_written_here(short_leases: None) -> None:
    home = f"home{uuid.uuid4().hex[:8]}"
    owner = PlayerShard(home, 0, 1)
    reg = registration(home)
    await owner.command(reg)
    visitor = PlayerShard(f"away{uuid.uuid4().hex[:8]}", 0, 1)
    assert (await visitor.read(reg.player_id, "demo"))["home_region"] == home
    change = UpdateProfile(player_id=reg.player_id, brand="demo", data=PlayerUpdate(first_name="X"))
    with pytest.raises(NotHomeRegion):
        await visitor.command(change)
    # The home region is lost: once its lease expires, the other region takes its players over.
    await stop_renewing(owner)
    await asyncio.sleep(2.5)
    status, body = await visitor.command(change)
    assert status == 200 and body["profile"]["first_name"] == "X"
    await stop_renewing(visitor)
