"""A player serves one turn at a time, whatever the interleaving of arrivals (no services)."""

from __future__ import annotations

import asyncio
import random
import uuid

from actors.shard import PlayerShard


async def test_turns_of_one_player_never_overlap() -> None:
    shard = PlayerShard("test", 0, 1)
    pid = uuid.uuid4()
    inside = 0
    most = 0
    rng = random.Random(5)

    async def turn(delay: int) -> None:
        nonlocal inside, most
        for _ in range(delay):
            await asyncio.sleep(0)
        async with shard._turn(pid):
            inside += 1
            most = max(most, inside)
            for _ in range(rng.randint(0, 2)):
                await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(turn(rng.randint(0, 6)) for _ in range(500)))
    assert most == 1
    assert shard.locks == {}


async def test_turns_of_different_players_run_concurrently() -> None:
    shard = PlayerShard("test", 0, 1)
    started = asyncio.Event()
    both = asyncio.Event()
    count = 0

    async def turn(pid: uuid.UUID) -> None:
        nonlocal count
        async with shard._turn(pid):
            count += 1
            if count == 2:
                both.set()
            started.set()
            await asyncio.wait_for(both.wait(), 1.0)

    await asyncio.gather(turn(uuid.uuid4()), turn(uuid.uuid4()))
    assert count == 2
