"""Coalescing of concurrent shard calls (no services)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.coalesce import Coalescer
from domain.errors import NotFound


async def test_concurrent_items_share_calls_and_get_their_own_answers() -> None:
    calls: list[list[int]] = []

    async def send(items: list[int]) -> list[Any]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [NotFound("odd") if i % 2 else i * 10 for i in items]

    c = Coalescer(send, max_in_flight=1)
    results = await asyncio.gather(*(c.submit(i) for i in range(20)), return_exceptions=True)
    assert [r for r in results if not isinstance(r, Exception)] == [i * 10 for i in range(0, 20, 2)]
    assert all(isinstance(results[i], NotFound) for i in range(1, 20, 2))
    assert len(calls) == 2 and calls[0] == [0] and calls[1] == list(range(1, 20))


async def test_a_failed_call_fails_every_item_in_it_and_the_next_call_still_goes() -> None:
    attempts = 0

    async def send(items: list[int]) -> list[Any]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("shard died")
        return items

    c = Coalescer(send, max_in_flight=1)
    with pytest.raises(ConnectionError):
        await c.submit(1)
    assert await c.submit(2) == 2
