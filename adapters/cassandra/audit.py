"""The audit chain in Cassandra (tables in schemas/cql/004_audit.cql). Statements are prepared once.

Writing (only the region's AuditLog actor does it):

1. `claim()` takes the chain head with a lightweight transaction that bumps its epoch, and deletes
   whatever lies beyond the head (entries of a batch whose commit never happened).
2. `append()` writes a batch of already-hashed entries, then moves the head with
   `IF epoch = ? AND seq = ?`. Only that transaction commits the entries: a writer that lost the
   head can write rows but never commit them, so two writers cannot fork the chain.
3. Entry rows carry `USING TIMESTAMP epoch << 40 | seq`: a newer owner's rows win over a stale
   owner's late ones, and the cleanup in `claim()` (timestamp `epoch << 40` - 1) removes rows of
   earlier epochs but never the new owner's.

Reading: `verify()` reads the buckets of a seq range in parallel (tuples, paged) and streams them
into `domain.audit.ChainVerifier`; `export()` reads only the buckets the day index names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from cassandra import ConsistencyLevel, OperationTimedOut, WriteTimeout
from cassandra.cluster import EXEC_PROFILE_DEFAULT, ResponseFuture, Session
from cassandra.query import BatchStatement, BatchType

from adapters.cassandra.session import CASSANDRA_LATENCY, aexecute
from domain.audit import GENESIS_HASH, Chained, ChainVerifier, Link, LinkRow, entry_from_body
from domain.errors import Conflict, Unavailable
from schemas.audit import AuditAnchor, AuditEntry, VerifyReport

log = logging.getLogger("pitboss.audit")

BUCKET_SIZE = 10_000  # part of the storage layout: never change it for an existing chain
_EPOCH_SHIFT = 40
# Cassandra 4.x refuses batches above 50 kB (batch_size_fail_threshold_in_kb): entry rows go in
# single-partition unlogged batches of at most this many body bytes, written concurrently.
BATCH_BYTES = 24_000
READ_PAGE = 5000
T = TypeVar("T")


def bucket_of(seq: int) -> int:
    return seq // BUCKET_SIZE


def write_timestamp(epoch: int, seq: int) -> int:
    return (epoch << _EPOCH_SHIFT) | seq


def day_key(at: datetime) -> tuple[str, str]:
    """(month, day) partition and clustering keys of the day index, in UTC."""
    day = at.astimezone(UTC).date().isoformat()
    return day[:7], day


@dataclass(frozen=True, slots=True)
class Head:
    chain: str
    seq: int
    hash: str
    epoch: int
    owner: str


def _link_rows(colnames: Sequence[str], rows: Iterable[LinkRow]) -> list[Link]:
    return list(map(Link._make, rows))


def _raw_rows(colnames: Sequence[str], rows: list[LinkRow]) -> list[LinkRow]:
    # For verification: the driver's tuples are in (seq, prev_hash, hash, body) order already, and
    # making each a Link would cost as much again as checking it.
    return rows


def _tuple_rows(colnames: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return list(rows)


async def fetch_all(session: Session, stmt: Any, params: Sequence[Any], profile: Any, op: str) -> list[Any]:
    """Every row of a query, following the pages in the driver's thread (no round trip through
    the event loop between pages)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[list[Any]] = loop.create_future()
    rows: list[Any] = []
    started = time.perf_counter()
    rf: ResponseFuture = session.execute_async(stmt, params, execution_profile=profile)

    def ok(page: list[Any]) -> None:
        rows.extend(page)
        if rf.has_more_pages:
            rf.start_fetching_next_page()
        else:
            CASSANDRA_LATENCY.labels(op).observe(time.perf_counter() - started)
            loop.call_soon_threadsafe(_resolve, fut, rows, None)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_resolve, fut, None, exc)

    rf.add_callbacks(ok, failed)
    return await fut


def _resolve(fut: asyncio.Future[list[Any]], rows: list[Any] | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(rows or [])


async def ordered(jobs: Iterable[Callable[[], Any]], ahead: int) -> AsyncIterator[Any]:
    """Results of `jobs` (coroutine factories) in order, with up to `ahead` running at once."""
    pending: list[asyncio.Task[Any]] = []
    it = iter(jobs)
    try:
        for job in it:
            pending.append(asyncio.ensure_future(job()))
            if len(pending) >= ahead:
                break
        while pending:
            result = await pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(asyncio.ensure_future(nxt()))
            yield result
    finally:
        for task in pending:
            task.cancel()


class AuditStore:
    def __init__(self, session: Session, serial: str = "SERIAL", max_in_flight: int = 64) -> None:
        self.session = session
        self.limit = asyncio.Semaphore(max_in_flight)
        serial_cl = ConsistencyLevel.SERIAL if serial.upper() == "SERIAL" else ConsistencyLevel.LOCAL_SERIAL
        self._as_links = session.execution_profile_clone_update(EXEC_PROFILE_DEFAULT, row_factory=_link_rows)
        self._as_raw = session.execution_profile_clone_update(EXEC_PROFILE_DEFAULT, row_factory=_raw_rows)
        self._as_tuples = session.execution_profile_clone_update(EXEC_PROFILE_DEFAULT, row_factory=_tuple_rows)
        prep = session.prepare
        self._insert = prep(
            "INSERT INTO audit_entries (chain, bucket, seq, prev_hash, hash, body) VALUES (?, ?, ?, ?, ?, ?) "
            "USING TIMESTAMP ?"
        )
        self._delete = prep("DELETE FROM audit_entries USING TIMESTAMP ? WHERE chain = ? AND bucket = ? AND seq = ?")
        self._day = prep("INSERT INTO audit_days (chain, month, day, bucket) VALUES (?, ?, ?, ?)")
        self._days = prep("SELECT day, bucket FROM audit_days WHERE chain = ? AND month = ? AND day >= ? AND day <= ?")
        # Readers (verify, export, the viewer) read the head at LOCAL_QUORUM; the writer reads it
        # linearizably, which also completes a half-done transaction on it.
        self._head = prep("SELECT seq, hash, epoch, owner FROM audit_heads WHERE chain = ?")
        self._head_serial = prep("SELECT seq, hash, epoch, owner FROM audit_heads WHERE chain = ?")
        self._head_serial.consistency_level = serial_cl
        self._create = prep(
            "INSERT INTO audit_heads (chain, seq, hash, epoch, owner, claimed_at) VALUES (?, 0, ?, 1, ?, ?) "
            "IF NOT EXISTS"
        )
        self._claim = prep(
            "UPDATE audit_heads SET epoch = ?, owner = ?, claimed_at = ? WHERE chain = ? IF epoch = ?"
        )
        self._commit = prep("UPDATE audit_heads SET seq = ?, hash = ? WHERE chain = ? IF epoch = ? AND seq = ?")
        for stmt in (self._create, self._claim, self._commit):
            stmt.serial_consistency_level = serial_cl
        self._range = prep(
            "SELECT seq, prev_hash, hash, body FROM audit_entries "
            "WHERE chain = ? AND bucket = ? AND seq >= ? AND seq <= ?"
        )
        self._range.fetch_size = READ_PAGE
        self._newest = prep(
            "SELECT seq, prev_hash, hash, body FROM audit_entries "
            "WHERE chain = ? AND bucket = ? AND seq <= ? ORDER BY seq DESC LIMIT ?"
        )
        self._after = prep(
            "SELECT seq, prev_hash, hash, body FROM audit_entries WHERE chain = ? AND bucket = ? AND seq > ?"
        )
        self._after_stamped = prep(
            "SELECT seq, WRITETIME(hash) FROM audit_entries WHERE chain = ? AND bucket = ? AND seq > ?"
        )
        self._anchor = prep(
            "INSERT INTO audit_anchors (chain, bucket, seq, hash, signature, signed_at) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._anchors = prep(
            "SELECT seq, hash, signature, signed_at FROM audit_anchors "
            "WHERE chain = ? AND bucket = ? AND seq >= ? AND seq <= ?"
        )
        self._last_anchor = prep(
            "SELECT seq, hash, signature, signed_at FROM audit_anchors WHERE chain = ? AND bucket = ? "
            "ORDER BY seq DESC LIMIT 1"
        )

    async def _run(self, stmt: Any, params: Sequence[Any] | None = None, op: str = "audit") -> list[Any]:
        return await aexecute(self.session, stmt, params, op=op, limit=self.limit)

    # ---------------------------------------------------------------- the head

    async def read_head(self, chain: str, serial: bool = False) -> Head | None:
        rows = await self._run(self._head_serial if serial else self._head, (chain,), "audit_head_read")
        if not rows:
            return None
        r = rows[0]
        return Head(chain, r["seq"], r["hash"], r["epoch"], r["owner"] or "")

    async def claim(self, chain: str, owner: str, attempts: int = 5) -> Head:
        """Become the chain's writer: bump the epoch (fencing out the previous writer) and delete
        the uncommitted rows beyond the head. Raises Conflict if others keep claiming it."""
        for _ in range(attempts):
            now = datetime.now(UTC)
            cur = await self.read_head(chain, serial=True)
            if cur is None:
                rows = await self._run(self._create, (chain, GENESIS_HASH, owner, now), "audit_head_claim")
                head = Head(chain, 0, GENESIS_HASH, 1, owner)
            else:
                rows = await self._run(
                    self._claim, (cur.epoch + 1, owner, now, chain, cur.epoch), "audit_head_claim"
                )
                head = Head(chain, cur.seq, cur.hash, cur.epoch + 1, owner)
            if rows and rows[0]["[applied]"]:
                await self.clean_beyond(head)
                return head
            await asyncio.sleep(0.05)
        raise Conflict(f"the head of audit chain {chain} keeps changing owner")

    async def clean_beyond(self, head: Head) -> int:
        """Delete rows after the head: a batch can be at most one bucket long, so they lie in the
        head's next two buckets. Returns how many there were."""
        stamp = (head.epoch << _EPOCH_SHIFT) - 1
        found: list[tuple[int, int]] = []
        first = bucket_of(head.seq + 1)
        for bucket in (first, first + 1):
            found += await fetch_all(
                self.session, self._after_stamped, (head.chain, bucket, head.seq), self._as_tuples, "audit_clean_read"
            )
        for seq, written in found:
            if written > stamp:
                # Not written by an audit writer (their timestamps are below the current epoch's):
                # someone wrote into the table. Verify reports it; the entry written there will not show.
                log.error("audit chain %s: row %s beyond the head has a foreign write time", head.chain, seq)
        await asyncio.gather(
            *(self._run(self._delete, (stamp, head.chain, bucket_of(seq), seq), "audit_clean") for seq, _ in found)
        )
        return len(found)

    # ---------------------------------------------------------------- appending

    def _entry_batches(self, head: Head, rows: Sequence[Chained]) -> list[Any]:
        batches: list[Any] = []
        current: BatchStatement | None = None
        size = 0
        bucket = -1
        for row in rows:
            b = bucket_of(row.seq)
            if current is None or b != bucket or size + len(row.body) > BATCH_BYTES:
                current = BatchStatement(batch_type=BatchType.UNLOGGED)
                batches.append(current)
                size, bucket = 0, b
            stamp = write_timestamp(head.epoch, row.seq)
            current.add(self._insert, (head.chain, b, row.seq, row.prev_hash, row.hash, row.body.decode(), stamp))
            size += len(row.body)
        days = {(*day_key(r.appended_at), bucket_of(r.seq)) for r in rows}
        batches += [self._day.bind((head.chain, month, day, b)) for month, day, b in sorted(days)]
        return batches

    async def append(self, head: Head, rows: Sequence[Chained]) -> Head:
        """Write `rows` (hashed entries following `head`) and commit them; durable (LOCAL_QUORUM)
        when this returns the new head. Unavailable or Conflict: nothing was committed; claim the
        head again (which removes what was written) before writing more."""
        await self.write_rows(head, rows)
        return await self.commit(head, rows)

    async def write_rows(self, head: Head, rows: Sequence[Chained]) -> None:
        """The rows and their day index, not yet part of the chain: only `commit` makes them so.
        `head` gives the chain and the writer's epoch (the rows' write time)."""
        try:
            await asyncio.gather(*(self._run(b, None, "audit_append") for b in self._entry_batches(head, rows)))
        except Exception as exc:
            raise Unavailable("the audit log could not write to Cassandra; retry") from exc

    async def commit(self, head: Head, rows: Sequence[Chained]) -> Head:
        """Move the head from `head` to the last of `rows` (written already), if `head` is still it."""
        if not rows:
            return head
        last = rows[-1]
        new = Head(head.chain, last.seq, last.hash, head.epoch, head.owner)
        try:
            result = await self._run(
                self._commit, (last.seq, last.hash, head.chain, head.epoch, head.seq), "audit_commit"
            )
        except (WriteTimeout, OperationTimedOut) as exc:
            # The transaction may or may not have been applied; a serial read tells.
            try:
                now = await self.read_head(head.chain, serial=True)
            except Exception:
                raise Unavailable("the audit log does not know whether its last write landed; retry") from exc
            if now == new:
                return new
            raise Unavailable("the audit log's commit did not land; retry") from exc
        except Exception as exc:
            raise Unavailable("the audit log could not commit to Cassandra; retry") from exc
        if result and result[0]["[applied]"]:
            return new
        raise Conflict(
            f"the head of audit chain {head.chain} moved (epoch {result[0].get('epoch') if result else '?'}, "
            f"seq {result[0].get('seq') if result else '?'}): another writer took it"
        )

    async def write_anchor(self, anchor: AuditAnchor) -> None:
        await self._run(
            self._anchor,
            (anchor.chain, bucket_of(anchor.seq), anchor.seq, anchor.hash, anchor.signature, anchor.signed_at),
            "audit_anchor",
        )

    # ---------------------------------------------------------------- reading

    async def read_bucket(self, chain: str, bucket: int, first: int, last: int) -> list[Link]:
        lo, hi = max(first, bucket * BUCKET_SIZE), min(last, (bucket + 1) * BUCKET_SIZE - 1)
        return await fetch_all(self.session, self._range, (chain, bucket, lo, hi), self._as_links, "audit_read")

    async def read_rows(self, chain: str, bucket: int, first: int, last: int) -> list[LinkRow]:
        """Like `read_bucket`, as plain tuples (the verification's fast path)."""
        lo, hi = max(first, bucket * BUCKET_SIZE), min(last, (bucket + 1) * BUCKET_SIZE - 1)
        return await fetch_all(self.session, self._range, (chain, bucket, lo, hi), self._as_raw, "audit_read")

    async def links(self, chain: str, first: int, last: int, ahead: int = 8) -> AsyncIterator[list[LinkRow]]:
        """The rows of seqs first..last, bucket by bucket in seq order, `ahead` buckets read at once."""
        if last < first:
            return
        jobs = (partial(self.read_rows, chain, b, first, last) for b in range(bucket_of(first), bucket_of(last) + 1))
        async for rows in ordered(jobs, ahead):
            yield rows

    async def read_link(self, chain: str, seq: int) -> Link | None:
        rows = await self.read_bucket(chain, bucket_of(seq), seq, seq)
        return rows[0] if rows else None

    async def beyond(self, head: Head) -> list[Link]:
        """Rows after the head (forged, or written by a batch that never committed)."""
        first = bucket_of(head.seq + 1)
        out: list[Link] = []
        for bucket in (first, first + 1):
            params = (head.chain, bucket, head.seq)
            out += await fetch_all(self.session, self._after, params, self._as_links, "audit_read")
        return out

    async def anchors(self, chain: str, first: int, last: int, ahead: int = 8) -> list[AuditAnchor]:
        async def one(bucket: int) -> list[AuditAnchor]:
            lo, hi = max(first, bucket * BUCKET_SIZE), min(last, (bucket + 1) * BUCKET_SIZE - 1)
            rows = await fetch_all(self.session, self._anchors, (chain, bucket, lo, hi), self._as_tuples, "audit_read")
            return [
                AuditAnchor(chain=chain, seq=s, hash=h, signature=sig, signed_at=at.replace(tzinfo=UTC))
                for s, h, sig, at in rows
            ]

        out: list[AuditAnchor] = []
        if last < first:
            return out
        jobs = (partial(one, b) for b in range(bucket_of(first), bucket_of(last) + 1))
        async for part in ordered(jobs, ahead):
            out += part
        return out

    async def anchors_beyond(self, chain: str, seq: int) -> list[AuditAnchor]:
        """Anchors after `seq`, bucket by bucket until one has none: evidence of a cut tail."""
        out: list[AuditAnchor] = []
        bucket = bucket_of(seq)
        while True:
            part = await self.anchors(chain, max(seq + 1, bucket * BUCKET_SIZE), (bucket + 1) * BUCKET_SIZE - 1)
            if not part and bucket > bucket_of(seq):
                return out
            out += part
            bucket += 1

    async def last_anchor(self, chain: str, head_seq: int) -> AuditAnchor | None:
        for bucket in (bucket_of(head_seq), bucket_of(head_seq) - 1):
            if bucket < 0:
                break
            rows = await self._run(self._last_anchor, (chain, bucket), "audit_read")
            if rows:
                r = rows[0]
                at = r["signed_at"].replace(tzinfo=UTC)
                return AuditAnchor(chain=chain, seq=r["seq"], hash=r["hash"], signature=r["signature"], signed_at=at)
        return None

    async def newest(self, chain: str, at_most: int, limit: int) -> AsyncIterator[list[Link]]:
        """Rows from seq `at_most` down to 1, newest first, `limit` rows a request."""
        cursor = at_most
        while cursor >= 1:
            rows = await fetch_all(
                self.session, self._newest, (chain, bucket_of(cursor), cursor, limit), self._as_links, "audit_recent"
            )
            if rows:
                yield rows
                cursor = rows[-1].seq - 1
                if len(rows) == limit:
                    continue
            # The rest of this bucket is empty: go on below it.
            cursor = min(cursor, bucket_of(cursor) * BUCKET_SIZE - 1)

    async def day_buckets(self, chain: str, start: datetime, end: datetime) -> list[int]:
        """Buckets holding entries appended on the UTC days from `start` to `end` (inclusive)."""
        first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
        months: list[str] = []
        d = date(first.year, first.month, 1)
        while d <= last:
            months.append(d.isoformat()[:7])
            d = (d + timedelta(days=32)).replace(day=1)
        parts = await asyncio.gather(
            *(
                self._run(self._days, (chain, month, first.isoformat(), last.isoformat()), "audit_days")
                for month in months
            )
        )
        return sorted({r["bucket"] for rows in parts for r in rows})

    # ---------------------------------------------------------------- verification and export

    async def verify(
        self, chain: str, key: bytes, start_seq: int | None = None, end_seq: int | None = None, ahead: int = 8
    ) -> VerifyReport:
        """Verify seqs start..end (default: the whole chain) against the head and the anchors."""
        head = await self.read_head(chain)
        head_seq = head.seq if head is not None else 0
        first = max(1, start_seq or 1)
        last = head_seq if end_seq is None else min(end_seq, head_seq)
        to_head = last == head_seq
        genesis: str | None = GENESIS_HASH
        if first > 1:
            before = await self.read_link(chain, first - 1)
            # Without its predecessor the first link is taken on trust; the gap before is not ours.
            genesis = before.hash if before is not None else None
        anchors = await self.anchors(chain, first, last)
        if to_head:
            anchors += await self.anchors_beyond(chain, last)
        verifier = ChainVerifier(
            chain,
            anchors,
            key,
            first,
            genesis,
            expected_last_seq=last,
            expected_last_hash=head.hash if head is not None and to_head else None,
        )
        loop = asyncio.get_running_loop()
        async for rows in self.links(chain, first, last, ahead):
            if len(rows) > 2000:
                # Hashing a bucket takes tens of ms: off the event loop, so the next reads proceed.
                await loop.run_in_executor(None, verifier.feed, rows)
            else:
                verifier.feed(rows)
        if to_head and head is not None:
            verifier.feed(await self.beyond(head))
        return verifier.finish()

    async def export(
        self, chain: str, start: datetime, end: datetime, ahead: int = 4
    ) -> AsyncIterator[AuditEntry]:
        """Committed entries appended in [start, end), in seq order."""
        head = await self.read_head(chain)
        if head is None or head.seq == 0:
            return
        buckets = await self.day_buckets(chain, start, end)
        jobs = (partial(self.read_bucket, chain, b, 1, head.seq) for b in buckets)
        async for rows in ordered(jobs, ahead):
            for link in rows:
                entry = parse(chain, link)
                if start <= entry.appended_at < end:
                    yield entry


def parse(chain: str, link: Link) -> AuditEntry:
    return entry_from_body(chain, link.seq, link.prev_hash, link.hash, link.body)


def record_id_of(body: str | bytes) -> str | None:
    """The record id inside a stored body (for the writer's duplicate window), without validating."""
    try:
        value = json.loads(body).get("record_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
