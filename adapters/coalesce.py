"""Coalescing of concurrent calls into batches, for Ray calls to shards and Cassandra writes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from domain.errors import PitbossError


class Coalescer:
    """Sends items for one shard method in batches: while `max_in_flight` calls are out, new
    items wait and leave together in the next call. Under light load each item goes at once;
    under heavy load batches grow and the per-call cost of Ray is shared."""

    def __init__(
        self, send: Callable[[list[Any]], Awaitable[list[Any]]], max_in_flight: int = 2, max_batch: int = 256
    ) -> None:
        self.send = send
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self.waiting: list[tuple[Any, asyncio.Future[Any]]] = []
        self.in_flight = 0

    async def submit(self, item: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((item, fut))
        self._pump()
        result = await fut
        if isinstance(result, PitbossError):
            raise result
        return result

    def _pump(self) -> None:
        while self.waiting and self.in_flight < self.max_in_flight:
            batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
            self.in_flight += 1
            asyncio.get_running_loop().create_task(self._flush(batch))

    async def _flush(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            results = await self.send([item for item, _ in batch])
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
        finally:
            self.in_flight -= 1
            self._pump()
