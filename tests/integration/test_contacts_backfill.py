"""The contacts backfill on the running stack: a player missing from `player_contacts` (registered
before the index existed, or a row lost) is indexed again from their live profile, through their
shard; the walk over `player_index` finds every player of the brand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import pytest
from cassandra.cluster import Session

from actors.contacts_backfill import backfill, players_of
from adapters.cassandra.session import aexecute
from adapters.settings import Settings
from tests.integration.operators import register_player
from tests.integration.test_player_contacts import address, indexed, wait_indexed

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def ray_connected(stack: Settings) -> Settings:
    import ray

    if not ray.is_initialized():
        ray.init(address=stack.ray_address, namespace=stack.ray_namespace, log_to_driver=False)
    return stack


async def test_a_player_missing_from_the_index_is_indexed_again(ray_connected: Settings, db: Session) -> None:
    email = address()
    player_id, _ = await register_player(email=email.replace("maria", "MARIA"))
    await wait_indexed(db, email, player_id)
    await aexecute(db, "DELETE FROM player_contacts WHERE brand = %s AND email = %s AND player_id = %s",
                   ("demo", email, UUID(player_id)))
    assert UUID(player_id) not in await indexed(db, email)

    tally = await backfill(ray_connected, None, 4, [UUID(player_id), UUID(player_id)])
    assert (tally.indexed, tally.failed) == (2, [])  # the same row twice: idempotent
    assert UUID(player_id) in await indexed(db, email)


async def test_an_unknown_player_is_counted_gone_and_nothing_is_written(ray_connected: Settings) -> None:
    ghost = UUID("00000000-0000-4000-8000-000000000001")
    tally = await backfill(ray_connected, None, 1, [ghost])
    assert (tally.indexed, tally.gone, tally.failed) == (0, 1, [])


async def _first(it: AsyncIterator[UUID], want: UUID) -> bool:
    async for pid in it:
        if pid == want:
            return True
    return False


async def test_the_walk_finds_a_player_of_the_brand_and_skips_other_brands(stack: Settings, db: Session) -> None:
    player_id, _ = await register_player()
    assert await _first(players_of(db, "demo"), UUID(player_id))
    assert not await _first(players_of(db, "no-such-brand"), UUID(player_id))
