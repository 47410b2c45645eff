"""Agents' loads and phone calls in Cassandra (tables in schemas/cql/008_helpdesk_routing.cql).

An agent's load is the number of active tickets assigned to them, kept as one row per ticket in
the agent's partition (never a counter: a retried or replayed write cannot count twice, and a
move is a delete plus an insert keyed by the committed ticket)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute
from domain.tickets import ACTIVE, Ticket
from schemas.tickets import TimelineKind

_MAX_LOAD_READ = 10_000


class HelpdeskRoutingStore:
    """Statements prepared once (the constructor blocks on the prepares: build it off the event loop)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        p = session.prepare
        self._assign = p("INSERT INTO helpdesk_agent_tickets (agent_id, ticket_id, brand, assigned_at) "
                         "VALUES (?, ?, ?, ?)")
        self._release = p("DELETE FROM helpdesk_agent_tickets WHERE agent_id = ? AND ticket_id = ?")
        self._load = p("SELECT ticket_id FROM helpdesk_agent_tickets WHERE agent_id = ? LIMIT ?")
        self._claim_call = p("INSERT INTO phone_calls (call_id, ticket_id, player_id, started_at) VALUES (?, ?, ?, ?) "
                             "IF NOT EXISTS")
        self._get_call = p("SELECT ticket_id FROM phone_calls WHERE call_id = ?")
        self._timeline = p("INSERT INTO player_timeline (player_id, at, item_id, kind, ticket_id, summary, visibility) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)")
        self._limit = asyncio.Semaphore(16)

    async def _run(self, stmt: Any, params: Sequence[Any], op: str) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params, op=f"helpdesk_{op}", limit=self._limit)

    async def index(self, before: Ticket | None, after: Ticket) -> None:
        """Move the ticket between agents' loads after a committed change (idempotent)."""
        was = before.assignee if before is not None and before.status in ACTIVE else None
        now = after.assignee if after.status in ACTIVE else None
        jobs = []
        if was is not None and was != now:
            jobs.append(self._run(self._release, (was, after.ticket_id), "load"))
        if now is not None:
            jobs.append(self._run(self._assign, (now, after.ticket_id, after.brand, after.updated_at), "load"))
        if jobs:
            await asyncio.gather(*jobs)

    async def load(self, agent_id: str, cap: int = _MAX_LOAD_READ) -> int:
        """The agent's active tickets, counted up to `cap` (a count at the cap means "at least")."""
        rows = await self._run(self._load, (agent_id, max(1, min(cap, _MAX_LOAD_READ))), "load")
        return len(rows)

    async def loads(self, agent_ids: Sequence[str], cap: int = _MAX_LOAD_READ) -> dict[str, int]:
        """`load` of each agent. Routing passes its team's `max_load` as `cap`: an agent at the cap
        takes nothing more whatever the exact count, and the read of a busy agent's partition then
        stays a few rows instead of growing with every ticket they hold."""
        counts = await asyncio.gather(*(self.load(a, cap) for a in agent_ids))
        return dict(zip(agent_ids, counts, strict=True))

    async def claim_call(self, call_id: str, ticket_id: UUID, player_id: UUID | None, at: datetime) -> UUID:
        """The ticket of a call: the one claimed first (this one unless another event got there)."""
        rows = await self._run(self._claim_call, (call_id, ticket_id, player_id, at), "call")
        if rows and not rows[0].get("[applied]", True):
            return UUID(str(rows[0]["ticket_id"]))
        return ticket_id

    async def call_ticket(self, call_id: str) -> UUID | None:
        rows = await self._run(self._get_call, (call_id,), "call")
        return rows[0]["ticket_id"] if rows else None

    async def timeline(self, player_id: UUID, at: datetime, item_id: UUID, kind: TimelineKind, ticket_id: UUID | None,
                       summary: str, visibility: str) -> None:
        """A line of the player's history of a kind the ticket store does not write (calls)."""
        await self._run(self._timeline, (player_id, at.astimezone(UTC), item_id, kind, ticket_id, summary, visibility),
                        "timeline")
