"""The email -> players index (schemas/cql/015_player_contacts.cql; rules in domain/player_links.py).

Written only by the player's shard (`write`, from its coalesced CRM flush), read by the help desk
(`players`), which checks every row against the live profile: a row is a hint, never the truth.
Statements are prepared once (the constructor blocks on the prepares: build it off the event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute

# More players than this on one address of one brand is a shared or abused address: the readers
# link nobody past two anyway, so they need not read the whole partition.
MAX_CANDIDATES = 20


@dataclass(frozen=True, slots=True)
class ContactChange:
    """A player's address as it now is (normal form), and the one written before it, if known."""

    player_id: UUID
    brand: str
    email: str
    previous: str | None = None


class PlayerContacts:
    def __init__(self, session: Session, max_in_flight: int = 32) -> None:
        self.session = session
        self.limit = asyncio.Semaphore(max_in_flight)
        p = session.prepare
        self._put = p("INSERT INTO player_contacts (brand, email, player_id, updated_at) VALUES (?, ?, ?, ?)")
        self._drop = p("DELETE FROM player_contacts WHERE brand = ? AND email = ? AND player_id = ?")
        self._find = p("SELECT player_id FROM player_contacts WHERE brand = ? AND email = ? LIMIT ?")

    async def _run(self, stmt: Any, params: Sequence[Any], op: str) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params, op=f"player_contacts_{op}", limit=self.limit)

    async def write(self, changes: Sequence[ContactChange], at: datetime) -> None:
        """Index each new address and drop the player's previous row (each its own partition, in parallel).
        Idempotent: a retried flush writes the same rows."""
        jobs = [self._run(self._put, (c.brand, c.email, c.player_id, at), "write") for c in changes]
        jobs += [self._run(self._drop, (c.brand, c.previous, c.player_id), "drop")
                 for c in changes if c.previous is not None and c.previous != c.email]
        await asyncio.gather(*jobs)

    async def players(self, brand: str, email: str, limit: int = MAX_CANDIDATES) -> list[UUID]:
        """The players the index lists for (brand, normalised email): candidates to verify, not answers."""
        rows = await self._run(self._find, (brand, email, limit), "read")
        return [r["player_id"] for r in rows]
