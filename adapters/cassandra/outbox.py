"""The outbox of Pitboss's own events, one partition per shard of a home region."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute


@dataclass(frozen=True, slots=True)
class OutboxRow:
    event_id: UUID
    type: str
    body: bytes


class OutboxStore:
    def __init__(self, session: Session, limit: asyncio.Semaphore | None = None) -> None:
        self.session = session
        self.limit = limit
        self._insert = session.prepare(
            "INSERT INTO outbox (region, shard, event_id, type, body) VALUES (?, ?, ?, ?, ?)"
        )
        self._fetch = session.prepare("SELECT event_id, type, body FROM outbox WHERE region = ? AND shard = ? LIMIT ?")
        self._delete = session.prepare("DELETE FROM outbox WHERE region = ? AND shard = ? AND event_id = ?")

    def insert(self, region: str, shard: int, row: OutboxRow) -> Any:
        return self._insert.bind((region, shard, row.event_id, row.type, row.body))

    async def pending(self, region: str, shard: int, limit: int = 200) -> list[OutboxRow]:
        rows = await aexecute(self.session, self._fetch, (region, shard, limit), op="outbox_read", limit=self.limit)
        return [OutboxRow(r["event_id"], r["type"], r["body"]) for r in rows]

    async def done(self, region: str, shard: int, event_id: UUID) -> None:
        await aexecute(self.session, self._delete, (region, shard, event_id), op="outbox_delete", limit=self.limit)
