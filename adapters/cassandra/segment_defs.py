"""Segment and experiment definitions (`schemas/cql/014_segments_defs.cql`): `segment_defs`
(created IF NOT EXISTS, changed with `IF version = ?`), the newest-first indexes `segment_index`
and `experiment_index`, `experiments`, and the sticky `experiment_assignments` (first write wins,
IF NOT EXISTS). Membership and sizes are the engine's (`adapters/cassandra/segments.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute, applied
from domain.errors import NotFound
from schemas.experiments import Assignment

SCOPE = "all"
ACTIVE, RETIRED = "active", "retired"


class DefinitionStore:
    """Segment and experiment definitions (014). Statements prepared once per replica; the
    constructor blocks on the prepares, so it is built off the event loop (`runtime`)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        p = session.prepare
        self._seg_insert = p(
            "INSERT INTO segment_defs (segment_id, brand, name, description, rule, version, status, fingerprint, "
            "created_by, created_by_name, created_at, last_count) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?) "
            "IF NOT EXISTS"
        )
        self._seg_get = p("SELECT * FROM segment_defs WHERE segment_id = ?")
        self._seg_update = p(
            "UPDATE segment_defs SET name = ?, description = ?, rule = ?, version = ?, status = ?, "
            "updated_by_name = ?, updated_at = ? WHERE segment_id = ? IF version = ?"
        )
        self._seg_count = p("UPDATE segment_defs SET last_count = ? WHERE segment_id = ?")
        self._seg_index = p("INSERT INTO segment_index (scope, created_at, segment_id, brand) VALUES (?, ?, ?, ?)")
        self._seg_list = p("SELECT created_at, segment_id, brand FROM segment_index WHERE scope = ? LIMIT ?")
        self._seg_list_from = p(
            "SELECT created_at, segment_id, brand FROM segment_index WHERE scope = ? AND created_at <= ? LIMIT ?"
        )
        self._exp_insert = p(
            "INSERT INTO experiments (experiment_key, brand, segment_id, definition, version, fingerprint, created_by, "
            "created_by_name, created_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._exp_get = p("SELECT * FROM experiments WHERE experiment_key = ?")
        self._exp_update = p(
            "UPDATE experiments SET definition = ?, version = ?, updated_at = ? WHERE experiment_key = ? IF version = ?"
        )
        self._exp_index = p(
            "INSERT INTO experiment_index (scope, created_at, experiment_key, brand) VALUES (?, ?, ?, ?)"
        )
        self._exp_list = p("SELECT created_at, experiment_key, brand FROM experiment_index WHERE scope = ? LIMIT ?")
        self._exp_list_from = p(
            "SELECT created_at, experiment_key, brand FROM experiment_index WHERE scope = ? AND created_at <= ? LIMIT ?"
        )
        self._assign_insert = p(
            "INSERT INTO experiment_assignments (experiment_key, player_id, variant, bucket, in_holdout, "
            "definition_version, assigned_at) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._assign_get = p("SELECT * FROM experiment_assignments WHERE experiment_key = ? AND player_id = ?")

    # -- segments

    async def insert_segment(self, row: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        rows = await aexecute(
            self.session,
            self._seg_insert,
            (row["segment_id"], row["brand"], row["name"], row["description"], row["rule"], ACTIVE,
             row["fingerprint"], row["created_by"], row["created_by_name"], row["created_at"], None),
            op="segment_create",
        )
        if applied(rows):
            return await self.segment(row["segment_id"]), True
        return await self.segment(row["segment_id"]), False

    async def index_segment(self, created_at: datetime, segment_id: UUID, brand: str) -> None:
        await aexecute(self.session, self._seg_index, (SCOPE, created_at, segment_id, brand), op="segment_index")

    async def segment(self, segment_id: UUID) -> dict[str, Any]:
        rows = await aexecute(self.session, self._seg_get, (segment_id,), op="segment_get")
        if not rows:
            raise NotFound(f"no segment {segment_id}", field="segment_id")
        return dict(rows[0])

    async def update_segment(self, segment_id: UUID, expected: int, values: dict[str, Any]) -> bool:
        rows = await aexecute(
            self.session,
            self._seg_update,
            (values["name"], values["description"], values["rule"], values["version"], values["status"],
             values["updated_by_name"], values["updated_at"], segment_id, expected),
            op="segment_update",
        )
        return applied(rows)

    async def set_count(self, segment_id: UUID, count: int) -> None:
        await aexecute(self.session, self._seg_count, (count, segment_id), op="segment_count")

    async def index_page(self, kind: str, after: tuple[datetime, str] | None, fetch: int) -> list[dict[str, Any]]:
        seg = kind == "segment"
        params: tuple[Any, ...]
        if after is None:
            stmt, params = (self._seg_list if seg else self._exp_list), (SCOPE, fetch)
        else:
            stmt, params = (self._seg_list_from if seg else self._exp_list_from), (SCOPE, after[0], fetch)
        return [dict(r) for r in await aexecute(self.session, stmt, params, op=f"{kind}_list")]

    # -- experiments

    async def insert_experiment(self, row: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        rows = await aexecute(
            self.session,
            self._exp_insert,
            (row["experiment_key"], row["brand"], row["segment_id"], row["definition"], row["fingerprint"],
             row["created_by"], row["created_by_name"], row["created_at"], row["created_at"]),
            op="experiment_create",
        )
        return await self.experiment(row["experiment_key"]), applied(rows)

    async def index_experiment(self, created_at: datetime, key: str, brand: str) -> None:
        await aexecute(self.session, self._exp_index, (SCOPE, created_at, key, brand), op="experiment_index")

    async def experiment(self, key: str) -> dict[str, Any]:
        rows = await aexecute(self.session, self._exp_get, (key,), op="experiment_get")
        if not rows:
            raise NotFound(f"no experiment {key!r}", field="experiment_key")
        return dict(rows[0])

    async def update_experiment(self, key: str, expected: int, definition: str, now: datetime) -> bool:
        rows = await aexecute(
            self.session, self._exp_update, (definition, expected + 1, now, key, expected), op="experiment_update"
        )
        return applied(rows)

    async def assignment(self, key: str, player_id: UUID) -> dict[str, Any] | None:
        rows = await aexecute(self.session, self._assign_get, (key, player_id), op="assignment_get")
        return dict(rows[0]) if rows else None

    async def claim(self, key: str, player_id: UUID, a: Assignment, version: int, now: datetime) -> bool:
        rows = await aexecute(
            self.session,
            self._assign_insert,
            (key, player_id, a.variant, a.bucket, a.in_holdout, version, now),
            op="assignment_claim",
        )
        return applied(rows)
