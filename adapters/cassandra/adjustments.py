"""Manual payment adjustments in Cassandra (tables in schemas/cql/006_adjustments.cql).

Creation and every status change are lightweight transactions on `payment_adjustments`, the
one row that says what an adjustment is: a retry cannot create it twice, two approvers cannot
both decide it. The other two tables are indexes of keys, written after the row and repaired
by a retry (upserts), and a reader trusts the row, never the index.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute, applied, utc
from domain.errors import NotFound
from schemas.adjustments import PENDING, AdjustmentPublic

_OPEN = "open"
_COLUMNS = (
    "adjustment_id, player_id, brand, jurisdiction, amount_minor, currency, reason, case_ref, status, "
    "needs_second_approver, requested_by, requested_by_name, requested_at, decided_by, decided_by_name, "
    "decided_at, decision_note, published_at"
)
_FETCH_CONCURRENCY = 16


def _from_row(row: dict[str, Any]) -> AdjustmentPublic:
    return AdjustmentPublic.model_validate(
        {
            **{k: v for k, v in row.items() if k in AdjustmentPublic.model_fields},
            "requested_at": utc(row["requested_at"]),
            "decided_at": utc(row["decided_at"]),
            "published_at": utc(row["published_at"]),
        }
    )


class AdjustmentStore:
    """Statements prepared once per replica (the constructor blocks on the prepares: build it off
    the event loop, see `serve_apps.backoffice.actions`)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._insert = session.prepare(
            f"INSERT INTO payment_adjustments ({_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._get = session.prepare(f"SELECT {_COLUMNS} FROM payment_adjustments WHERE adjustment_id = ?")
        self._decide = session.prepare(
            "UPDATE payment_adjustments SET status = ?, decided_by = ?, decided_by_name = ?, decided_at = ?, "
            "decision_note = ? WHERE adjustment_id = ? IF status = ?"
        )
        self._published = session.prepare(
            "UPDATE payment_adjustments SET published_at = ? WHERE adjustment_id = ? IF status = ?"
        )
        self._index_player = session.prepare(
            "INSERT INTO player_adjustments (player_id, requested_at, adjustment_id) VALUES (?, ?, ?)"
        )
        self._of_player = session.prepare(
            "SELECT adjustment_id FROM player_adjustments WHERE player_id = ? LIMIT ?"
        )
        self._open = session.prepare(
            "INSERT INTO open_adjustments (scope, requested_at, adjustment_id, brand) VALUES (?, ?, ?, ?)"
        )
        self._close = session.prepare(
            "DELETE FROM open_adjustments WHERE scope = ? AND requested_at = ? AND adjustment_id = ?"
        )
        self._list_open = session.prepare(
            "SELECT adjustment_id FROM open_adjustments WHERE scope = ? LIMIT ?"
        )
        self._limit = asyncio.Semaphore(_FETCH_CONCURRENCY)

    async def create(self, adj: AdjustmentPublic) -> tuple[AdjustmentPublic, bool]:
        """(the stored adjustment, whether this call created it). An id already used gives the
        first adjustment back, unchanged, for the caller to compare."""
        rows = await aexecute(
            self.session,
            self._insert,
            (
                adj.adjustment_id,
                adj.player_id,
                adj.brand,
                adj.jurisdiction,
                adj.amount_minor,
                adj.currency,
                adj.reason,
                adj.case_ref,
                adj.status,
                adj.needs_second_approver,
                adj.requested_by,
                adj.requested_by_name,
                adj.requested_at,
                adj.decided_by,
                adj.decided_by_name,
                adj.decided_at,
                adj.decision_note,
                adj.published_at,
            ),
            op="adjustment_create",
        )
        if applied(rows):
            stored, created = adj, True
        else:
            stored, created = await self.get(adj.adjustment_id), False
        await self.index(stored)
        return stored, created

    async def index(self, adj: AdjustmentPublic) -> None:
        """The index rows of an adjustment; upserts, so a retry repairs a crash between writes."""
        key = (adj.player_id, adj.requested_at, adj.adjustment_id)
        await aexecute(self.session, self._index_player, key, op="adjustment_index")
        if adj.status == PENDING or (adj.status == "approved" and adj.published_at is None):
            await aexecute(
                self.session,
                self._open,
                (_OPEN, adj.requested_at, adj.adjustment_id, adj.brand),
                op="adjustment_index",
            )

    async def get(self, adjustment_id: UUID) -> AdjustmentPublic:
        rows = await aexecute(self.session, self._get, (adjustment_id,), op="adjustment_read")
        if not rows:
            raise NotFound("unknown adjustment", field="adjustment_id")
        return _from_row(rows[0])

    async def decide(self, decided: AdjustmentPublic) -> AdjustmentPublic | None:
        """Stores a decision if the adjustment is still pending: None when it was, else the
        adjustment as someone else left it (the caller answers Conflict)."""
        rows = await aexecute(
            self.session,
            self._decide,
            (
                decided.status,
                decided.decided_by,
                decided.decided_by_name,
                decided.decided_at,
                decided.decision_note,
                decided.adjustment_id,
                PENDING,
            ),
            op="adjustment_decide",
        )
        if applied(rows):
            if decided.status != "approved":
                await self.close(decided)
            return None
        return await self.get(decided.adjustment_id)

    async def mark_published(self, adj: AdjustmentPublic, at: datetime) -> AdjustmentPublic:
        await aexecute(
            self.session, self._published, (at, adj.adjustment_id, "approved"), op="adjustment_published"
        )
        await self.close(adj)
        return adj.model_copy(update={"published_at": at})

    async def close(self, adj: AdjustmentPublic) -> None:
        await aexecute(
            self.session, self._close, (_OPEN, adj.requested_at, adj.adjustment_id), op="adjustment_index"
        )

    async def _many(self, ids: list[UUID]) -> list[AdjustmentPublic]:
        async def one(i: UUID) -> AdjustmentPublic | None:
            async with self._limit:
                try:
                    return await self.get(i)
                except NotFound:  # an index row written before a crash that lost the adjustment
                    return None

        found = await asyncio.gather(*(one(i) for i in ids))
        return [a for a in found if a is not None]

    async def of_player(self, player_id: UUID, limit: int = 100) -> list[AdjustmentPublic]:
        """The player's newest adjustments first."""
        rows = await aexecute(self.session, self._of_player, (player_id, limit), op="adjustment_list")
        return await self._many(list(dict.fromkeys(r["adjustment_id"] for r in rows)))

    async def open(self, limit: int = 500) -> list[AdjustmentPublic]:
        """Unfinished adjustments, oldest first: pending, or approved with the event unconfirmed."""
        rows = await aexecute(self.session, self._list_open, (_OPEN, limit), op="adjustment_list")
        return await self._many(list(dict.fromkeys(r["adjustment_id"] for r in rows)))
