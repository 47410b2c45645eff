"""Events parked while the broker was down (`parked_events`, schemas/cql/018), until published."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    parked_id: UUID
    event_id: UUID
    type: str
    body: bytes


class ParkedEvents:
    def __init__(self, session: Session, region: str) -> None:
        self.session = session
        self.region = region
        self._insert = session.prepare(
            "INSERT INTO parked_events (region, parked_id, event_id, type, body) VALUES (?, ?, ?, ?, ?)"
        )
        self._fetch = session.prepare(
            "SELECT parked_id, event_id, type, body FROM parked_events WHERE region = ? LIMIT ?"
        )
        self._delete = session.prepare("DELETE FROM parked_events WHERE region = ? AND parked_id = ?")

    async def park(self, event_id: UUID, type_: str, body: bytes) -> None:
        await aexecute(self.session, self._insert, (self.region, uuid.uuid1(), event_id, type_, body), op="park")

    async def oldest(self, limit: int = 200) -> list[ParkedEvent]:
        rows = await aexecute(self.session, self._fetch, (self.region, limit), op="parked_read")
        return [ParkedEvent(r["parked_id"], r["event_id"], r["type"], r["body"]) for r in rows]

    async def done(self, parked_id: UUID) -> None:
        await aexecute(self.session, self._delete, (self.region, parked_id), op="parked_delete")
