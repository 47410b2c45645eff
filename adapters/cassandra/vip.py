"""Which VIP manager looks after a player (the policy's `assigned_vip` condition)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute


class VipAssignments:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._get = session.prepare("SELECT operator_id FROM player_vip_managers WHERE player_id = ?")
        self._put = session.prepare(
            "INSERT INTO player_vip_managers (player_id, operator_id, assigned_at, assigned_by) VALUES (?, ?, ?, ?)"
        )
        self._del = session.prepare("DELETE FROM player_vip_managers WHERE player_id = ?")

    async def manager_of(self, player_id: UUID) -> str | None:
        rows = await aexecute(self.session, self._get, (player_id,), op="vip_read")
        return str(rows[0]["operator_id"]) if rows and rows[0]["operator_id"] else None

    async def assign(self, player_id: UUID, operator_id: str | None, by: str) -> None:
        if operator_id is None:
            await aexecute(self.session, self._del, (player_id,), op="vip_write")
        else:
            await aexecute(self.session, self._put, (player_id, operator_id, datetime.now(UTC), by), op="vip_write")
