"""The segment engine's tables (schemas/cql/013_segments_features.cql). Statements prepared once.

- `FeatureStore`: player feature rows and daily activity (written by the shards, scanned by the
  engine at start and at each catch-up), churn models and scores.
- `SegmentStore`: materialised definitions, members and size samples. Its read API
  (`members`, `sizes`, `is_member`) is what the segments Serve app reads.

Scans page through a partition with the driver's paging state in a worker thread (the driver's
own paging is blocking), using a tuple row factory: a rebuild reads a million rows, and building a
dict per row would cost more than the read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from cassandra.cluster import EXEC_PROFILE_DEFAULT, ExecutionProfile, Session
from cassandra.query import BatchStatement, BatchType, tuple_factory

from adapters.cassandra.session import aexecute, utc
from domain.errors import InvalidInput

MEMBER_BUCKETS = 16  # fixed: readers page through these; changing it strands stored members
SCOPE = "all"
TUPLES = "pitboss_tuples"
PER_BATCH = 64  # rows per unlogged batch (one partition each): ~16 KB, under 4.x's fail threshold
MAX_PAGE = 1000


def bucket_of(player_id: UUID, buckets: int) -> int:
    """A stable bucket of the player id (crc32: ids from the platform need not be random in their low bits)."""
    return zlib.crc32(player_id.bytes) % buckets


def member_bucket(player_id: UUID) -> int:
    return bucket_of(player_id, MEMBER_BUCKETS)


def _tuples(session: Session) -> str:
    """An execution profile like the default one but returning tuples (added once per cluster)."""
    cluster = session.cluster
    if TUPLES not in cluster.profile_manager.profiles:
        base = cluster.profile_manager.profiles[EXEC_PROFILE_DEFAULT]
        cluster.add_execution_profile(
            TUPLES,
            ExecutionProfile(
                load_balancing_policy=base.load_balancing_policy,
                consistency_level=base.consistency_level,
                serial_consistency_level=base.serial_consistency_level,
                request_timeout=60.0,
                row_factory=tuple_factory,
            ),
        )
    return TUPLES


async def pages(session: Session, stmt: Any, params: Sequence[Any], page_size: int = 5000) -> AsyncIterator[list[Any]]:
    """Every page of a query's rows (tuples), read in a worker thread with the paging state."""
    profile = _tuples(session)
    loop = asyncio.get_running_loop()
    state: bytes | None = None
    while True:
        bound = stmt.bind(params)
        bound.fetch_size = page_size

        def fetch(b: Any = bound, s: bytes | None = state) -> tuple[list[Any], bytes | None]:
            rs = session.execute(b, paging_state=s, execution_profile=profile)
            return list(rs.current_rows), rs.paging_state

        rows, state = await loop.run_in_executor(None, fetch)
        if rows:
            yield rows
        if state is None:
            return


async def write_batches(session: Session, statements: list[tuple[Any, Any]], limit: asyncio.Semaphore,
                        op: str) -> None:
    """Write (partition key, bound statement) pairs in unlogged batches of one partition each."""
    by_partition: dict[Any, list[Any]] = {}
    for key, stmt in statements:
        by_partition.setdefault(key, []).append(stmt)
    batches: list[Any] = []
    for stmts in by_partition.values():
        for i in range(0, len(stmts), PER_BATCH):
            chunk = stmts[i : i + PER_BATCH]
            if len(chunk) == 1:
                batches.append(chunk[0])
                continue
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for s in chunk:
                batch.add(s)
            batches.append(batch)
    await asyncio.gather(*(aexecute(session, b, op=op, limit=limit) for b in batches))


# ---------------------------------------------------------------------------- feature rows


@dataclass(frozen=True, slots=True)
class StoredFeatures:
    """A player's feature row as stored and pushed: `features` packed (domain.features.pack_numeric)."""

    player_id: UUID
    brand: str
    features: bytes
    codes: str
    as_of: datetime


@dataclass(frozen=True, slots=True)
class DayActivity:
    player_id: UUID
    day: int  # days since 1970-01-01
    sessions: int
    bets: int
    deposits_minor: int
    net_loss_minor: int


class FeatureStore:
    def __init__(self, session: Session, buckets: int, max_in_flight: int = 64) -> None:
        self.session = session
        self.buckets = buckets
        self.limit = asyncio.Semaphore(max_in_flight)
        self._write = session.prepare(
            "INSERT INTO player_features (region, bucket, player_id, brand, features, codes, as_of) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self._scan = session.prepare(
            "SELECT player_id, brand, features, codes, as_of FROM player_features WHERE region = ? AND bucket = ?"
        )
        self._activity = session.prepare(
            "INSERT INTO player_activity (region, day, bucket, player_id, sessions, bets, deposits_minor, "
            "net_loss_minor) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._activity_scan = session.prepare(
            "SELECT player_id, sessions, bets, deposits_minor, net_loss_minor FROM player_activity "
            "WHERE region = ? AND day = ? AND bucket = ?"
        )
        self._model_write = session.prepare(
            "INSERT INTO churn_models (region, version, trained_at, model, auc, auc_baseline, n_train, n_held_out) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._model_latest = session.prepare(
            "SELECT version, trained_at, model, auc, auc_baseline, n_train, n_held_out FROM churn_models "
            "WHERE region = ? LIMIT 1"
        )
        self._score_write = session.prepare(
            "INSERT INTO churn_scores (region, bucket, player_id, score, version) VALUES (?, ?, ?, ?, ?)"
        )
        self._score_scan = session.prepare(
            "SELECT player_id, score, version FROM churn_scores WHERE region = ? AND bucket = ?"
        )

    async def write(self, region: str, rows: Iterable[StoredFeatures], days: Iterable[tuple[str, DayActivity]] = ()
                    ) -> None:
        """Feature rows (and activity days: (region, day)) in one unlogged batch per partition."""
        stmts: list[tuple[Any, Any]] = []
        for r in rows:
            b = bucket_of(r.player_id, self.buckets)
            stmts.append(((region, b), self._write.bind(
                (region, b, r.player_id, r.brand, r.features, r.codes, r.as_of))))
        for day_region, d in days:
            b = bucket_of(d.player_id, self.buckets)
            stmts.append(((day_region, d.day, b), self._activity.bind(
                (day_region, d.day, b, d.player_id, d.sessions, d.bets, d.deposits_minor, d.net_loss_minor))))
        await write_batches(self.session, stmts, self.limit, "features_write")

    async def scan(self, region: str, bucket: int, page_size: int = 5000) -> AsyncIterator[list[Any]]:
        """Pages of (player_id, brand, features, codes, as_of) tuples of one bucket."""
        async for page in pages(self.session, self._scan, (region, bucket), page_size):
            yield page

    async def activity(self, region: str, day: int, bucket: int) -> AsyncIterator[list[Any]]:
        """Pages of (player_id, sessions, bets, deposits_minor, net_loss_minor) tuples of one day and bucket."""
        async for page in pages(self.session, self._activity_scan, (region, day, bucket)):
            yield page

    async def save_model(self, region: str, version: int, trained_at: datetime, model_json: str, auc: float,
                         auc_baseline: float, n_train: int, n_held_out: int) -> None:
        await aexecute(self.session, self._model_write,
                       (region, version, trained_at, model_json, auc, auc_baseline, n_train, n_held_out),
                       op="churn_model_write", limit=self.limit)

    async def latest_model(self, region: str) -> dict[str, Any] | None:
        rows = await aexecute(self.session, self._model_latest, (region,), op="churn_model_read", limit=self.limit)
        if not rows:
            return None
        row = dict(rows[0])
        row["trained_at"] = utc(row["trained_at"])
        return row

    async def save_scores(self, region: str, version: int, scores: Iterable[tuple[UUID, float]]) -> None:
        stmts = []
        for pid, score in scores:
            b = bucket_of(pid, self.buckets)
            stmts.append(((region, b), self._score_write.bind((region, b, pid, score, version))))
        await write_batches(self.session, stmts, self.limit, "churn_scores_write")

    async def scores(self, region: str, bucket: int) -> AsyncIterator[list[Any]]:
        """Pages of (player_id, score, version) tuples of one bucket."""
        async for page in pages(self.session, self._score_scan, (region, bucket)):
            yield page


# ---------------------------------------------------------------------------- segments


@dataclass(frozen=True, slots=True)
class Materialised:
    segment_id: str
    version: int
    rule: str  # JSON
    retired: bool
    updated_at: datetime


def _cursor(bucket: int, after: UUID | None) -> str:
    raw = f"{bucket}:{after or ''}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[int, UUID | None]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        bucket_text, _, after = raw.partition(":")
        bucket = int(bucket_text)
        if not 0 <= bucket < MEMBER_BUCKETS:
            raise ValueError(bucket)
        return bucket, UUID(after) if after else None
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidInput("not a cursor this list returned", field="cursor") from None


class SegmentStore:
    """Materialised segments: definitions, members, size history."""

    def __init__(self, session: Session, max_in_flight: int = 64) -> None:
        self.session = session
        self.limit = asyncio.Semaphore(max_in_flight)
        self._def_write = session.prepare(
            "INSERT INTO segment_materialised (scope, segment_id, version, rule, retired, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._defs = session.prepare(
            "SELECT segment_id, version, rule, retired, updated_at FROM segment_materialised WHERE scope = ?"
        )
        self._add = session.prepare("INSERT INTO segment_members (segment_id, bucket, player_id) VALUES (?, ?, ?)")
        self._remove = session.prepare(
            "DELETE FROM segment_members WHERE segment_id = ? AND bucket = ? AND player_id = ?"
        )
        self._page_first = session.prepare(
            "SELECT player_id FROM segment_members WHERE segment_id = ? AND bucket = ? LIMIT ?"
        )
        self._page_after = session.prepare(
            "SELECT player_id FROM segment_members WHERE segment_id = ? AND bucket = ? AND player_id > ? LIMIT ?"
        )
        self._scan_members = session.prepare(
            "SELECT player_id FROM segment_members WHERE segment_id = ? AND bucket = ?"
        )
        self._member = session.prepare(
            "SELECT player_id FROM segment_members WHERE segment_id = ? AND bucket = ? AND player_id = ?"
        )
        self._size_write = session.prepare(
            "INSERT INTO segment_sizes (segment_id, month, at, region, size, version) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._sizes = session.prepare(
            "SELECT at, region, size FROM segment_sizes WHERE segment_id = ? AND month = ? AND at >= ?"
        )

    # -- the read API of the Serve app

    async def members(self, segment_id: str, cursor: str | None = None, limit: int = 100
                      ) -> tuple[list[str], str | None]:
        """A page of members (player ids, in bucket then id order) and the cursor of the next page
        (None at the end). `limit` is capped at 1,000; a malformed cursor is InvalidInput (field cursor)."""
        limit = max(1, min(limit, MAX_PAGE))
        bucket, after = _parse_cursor(cursor) if cursor else (0, None)
        out: list[str] = []
        while bucket < MEMBER_BUCKETS:
            want = limit - len(out)
            if after is None:
                rows = await aexecute(self.session, self._page_first, (segment_id, bucket, want),
                                      op="segment_members_page", limit=self.limit)
            else:
                rows = await aexecute(self.session, self._page_after, (segment_id, bucket, after, want),
                                      op="segment_members_page", limit=self.limit)
            out += [str(r["player_id"]) for r in rows]
            if len(out) >= limit:
                last = UUID(out[-1])
                # A full page may end exactly at the bucket's end: the next call finds that out.
                return out, _cursor(bucket, last)
            bucket, after = bucket + 1, None
        return out, None

    async def is_member(self, segment_id: str, player_id: UUID | str) -> bool:
        pid = player_id if isinstance(player_id, UUID) else UUID(str(player_id))
        rows = await aexecute(self.session, self._member, (segment_id, member_bucket(pid), pid),
                              op="segment_member_read", limit=self.limit)
        return bool(rows)

    async def sizes(self, segment_id: str, since: datetime, until: datetime | None = None
                    ) -> list[tuple[datetime, int]]:
        """(at, size) samples from `since`, oldest first; samples of several regions at one instant are summed."""
        since = utc(since)
        end = utc(until or datetime.now(UTC))
        totals: dict[datetime, int] = {}
        y, m = since.year, since.month
        while (y, m) <= (end.year, end.month):
            rows = await aexecute(self.session, self._sizes, (segment_id, f"{y:04d}-{m:02d}", since),
                                  op="segment_sizes_read", limit=self.limit)
            for r in rows:
                at = utc(r["at"])
                if at <= end:
                    totals[at] = totals.get(at, 0) + int(r["size"])
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return sorted(totals.items())

    # -- the engine's writes

    async def add_members(self, segment_id: str, player_ids: Iterable[UUID]) -> None:
        stmts = [((segment_id, member_bucket(p)), self._add.bind((segment_id, member_bucket(p), p)))
                 for p in player_ids]
        await write_batches(self.session, stmts, self.limit, "segment_members_write")

    async def remove_members(self, segment_id: str, player_ids: Iterable[UUID]) -> None:
        stmts = [((segment_id, member_bucket(p)), self._remove.bind((segment_id, member_bucket(p), p)))
                 for p in player_ids]
        await write_batches(self.session, stmts, self.limit, "segment_members_write")

    async def all_members(self, segment_id: str) -> list[UUID]:
        async def one(bucket: int) -> list[UUID]:
            out: list[UUID] = []
            async for page in pages(self.session, self._scan_members, (segment_id, bucket)):
                out += [row[0] for row in page]
            return out

        parts = await asyncio.gather(*(one(b) for b in range(MEMBER_BUCKETS)))
        return [p for part in parts for p in part]

    async def add_size(self, segment_id: str, at: datetime, region: str, size: int, version: int) -> None:
        at = utc(at)
        await aexecute(self.session, self._size_write, (segment_id, f"{at.year:04d}-{at.month:02d}", at, region,
                                                        size, version), op="segment_sizes_write", limit=self.limit)

    async def save_definition(self, d: Materialised) -> None:
        await aexecute(self.session, self._def_write, (SCOPE, d.segment_id, d.version, d.rule, d.retired,
                                                       d.updated_at), op="segment_def_write", limit=self.limit)

    async def definitions(self) -> list[Materialised]:
        rows = await aexecute(self.session, self._defs, (SCOPE,), op="segment_def_read", limit=self.limit)
        return [Materialised(r["segment_id"], int(r["version"]), r["rule"], bool(r["retired"]), utc(r["updated_at"]))
                for r in rows]
