"""The player journal, snapshots and index. Statements are prepared once per store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from cassandra.cluster import Session
from cassandra.query import BatchType

from adapters.cassandra.session import aexecute, batch_of, utc
from adapters.coalesce import Coalescer

BUCKET_SIZE = 1000
INDEX_BUCKETS = 64
_EPOCH_SHIFT = 40  # write timestamp = epoch << 40 | seq: a newer owner's writes always win


def write_timestamp(epoch: int, seq: int) -> int:
    return (epoch << _EPOCH_SHIFT) | seq


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    entry_id: str
    kind: str
    body: bytes
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    state: bytes
    seen: bytes


@dataclass(frozen=True, slots=True)
class Loaded:
    snapshot: Snapshot
    tail: list[JournalEntry]


class PlayerStore:
    def __init__(self, session: Session, max_in_flight: int = 256) -> None:
        self.session = session
        self.limit = asyncio.Semaphore(max_in_flight)
        # Concurrent turns' journal writes leave together: one request instead of many is
        # what Cassandra and the driver spend their CPU on.
        self._writes = Coalescer(self._write_batch, max_in_flight=4, max_batch=48)
        self._append = session.prepare(
            "INSERT INTO player_journal (player_id, bucket, seq, entry_id, kind, body, recorded_at, epoch) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )
        self._tail = session.prepare(
            "SELECT seq, entry_id, kind, body, recorded_at FROM player_journal "
            "WHERE player_id = ? AND bucket = ? AND seq > ?"
        )
        self._snap_read = session.prepare("SELECT seq, state, seen FROM player_snapshots WHERE player_id = ?")
        self._snap_write = session.prepare(
            "INSERT INTO player_snapshots (player_id, seq, state, seen, epoch, written_at) "
            "VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )
        self._index = session.prepare(
            "INSERT INTO player_index (bucket, player_id, brand, home_region, registered_at) VALUES (?, ?, ?, ?, ?)"
        )

    def append_statements(self, player_id: UUID, entries: list[JournalEntry], epoch: int) -> list[Any]:
        return [
            self._append.bind(
                (
                    player_id,
                    e.seq // BUCKET_SIZE,
                    e.seq,
                    e.entry_id,
                    e.kind,
                    e.body,
                    e.recorded_at,
                    epoch,
                    write_timestamp(epoch, e.seq),
                )
            )
            for e in entries
        ]

    async def append(self, player_id: UUID, entries: list[JournalEntry], epoch: int, also: Sequence[Any] = ()) -> None:
        """Durable once this returns: every entry written at LOCAL_QUORUM.

        `also` are statements that must land with the entries (outbox rows): they go in one
        logged batch, which Cassandra applies completely or not at all."""
        stmts = self.append_statements(player_id, entries, epoch)
        if also:
            batch = batch_of([*stmts, *also], BatchType.LOGGED)
            await aexecute(self.session, batch, op="journal_append_logged", limit=self.limit)
            return
        await self._writes.submit(stmts)

    async def _write_batch(self, groups: list[list[Any]]) -> list[None]:
        statements = [stmt for group in groups for stmt in group]
        one = statements[0] if len(statements) == 1 else batch_of(statements)
        await aexecute(self.session, one, op="journal_append", limit=self.limit)
        return [None] * len(groups)

    async def write_many(self, statements: list[Any], per_batch: int = 64) -> None:
        """Write journal statements of many players in a few unlogged batches, concurrently."""
        batches = [batch_of(statements[i : i + per_batch]) for i in range(0, len(statements), per_batch)]
        await asyncio.gather(*(aexecute(self.session, b, op="journal_append", limit=self.limit) for b in batches))

    async def load(self, player_id: UUID) -> Loaded | None:
        rows = await aexecute(self.session, self._snap_read, (player_id,), op="snapshot_read", limit=self.limit)
        if not rows:
            # A player is created together with its first snapshot: no snapshot, no player.
            return None
        snapshot = Snapshot(rows[0]["seq"], rows[0]["state"], rows[0]["seen"] or b"")
        after = snapshot.seq
        tail: list[JournalEntry] = []
        bucket = after // BUCKET_SIZE
        while True:
            got = await aexecute(
                self.session, self._tail, (player_id, bucket, after), op="journal_read", limit=self.limit
            )
            tail += [JournalEntry(r["seq"], r["entry_id"], r["kind"], r["body"], utc(r["recorded_at"])) for r in got]
            if tail:
                after = tail[-1].seq
            # Sequence numbers are contiguous, so the journal ends in the first bucket not filled up.
            if (after + 1) // BUCKET_SIZE == bucket:
                break
            bucket += 1
        return Loaded(snapshot, tail)

    def creation_statements(
        self,
        player_id: UUID,
        seq: int,
        state: bytes,
        seen: bytes,
        epoch: int,
        brand: str,
        home_region: str,
        registered_at: datetime,
    ) -> list[Any]:
        """The first snapshot and the index row, written with a new player's first entries."""
        return [
            self._snap_write.bind((player_id, seq, state, seen, epoch, datetime.now(UTC), write_timestamp(epoch, seq))),
            self._index.bind((player_id.int % INDEX_BUCKETS, player_id, brand, home_region, registered_at)),
        ]

    async def save_snapshot(self, player_id: UUID, seq: int, state: bytes, seen: bytes, epoch: int) -> None:
        await aexecute(
            self.session,
            self._snap_write,
            (player_id, seq, state, seen, epoch, datetime.now(UTC), write_timestamp(epoch, seq)),
            op="snapshot_write",
            limit=self.limit,
        )


