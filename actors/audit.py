"""The audit log: `AuditLog`, the single writer of a region's chain; `AuditClient`, what the apps
call; CSV/JSON export lines; and the operators' command:

    python -m actors.audit verify [--chain eu] [--from-seq N] [--to-seq M] [--json]
    python -m actors.audit export --from 2026-03-01T00:00:00Z --to 2026-04-01T00:00:00Z --format csv > march.csv

`AuditLog` is one detached Ray actor per region (`pitboss-audit-<region>`). It claims the chain
head in Cassandra at start (bumping the fencing epoch), then commits appends in groups: while one
batch is being written, the next accumulates, so many concurrent callers share one Cassandra
round trip. It answers an append only once its batch is committed at LOCAL_QUORUM.

Duplicates: an append whose record_id the actor has stored returns the first seq. The actor
remembers the last DEDUP_WINDOW record ids, and at start reloads the ids of the last DEDUP_LOAD
entries from the chain, so a caller retrying after a restart of the actor (seconds) is answered
from memory. A retry arriving later than that would store a second entry with the same record_id;
an audit log may hold a duplicate (it is visible, with its id), it must never lose a record, and a
lookup table written and read on every append would cost a round trip for a case callers avoid
by retrying at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import logging
import os
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import ray
from pydantic import ValidationError
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from actors.router import detached
from adapters.cassandra.audit import AuditStore, Head, parse, record_id_of
from adapters.cassandra.session import connect
from adapters.coalesce import Coalescer
from adapters.settings import Settings, get_settings
from domain.audit import Chained, anchor_signature, chain_bodies, should_anchor
from domain.errors import InvalidInput, PitbossError, Unavailable
from schemas.audit import AuditAnchor, AuditEntry, AuditRecord, VerifyReport, rfc3339

log = logging.getLogger("pitboss.audit")

DEDUP_WINDOW = 100_000
DEDUP_LOAD = 20_000
MAX_BATCH = 1000  # records per commit; far below a bucket, so a batch spans at most two buckets
PIPELINE = 2  # batches in flight: one committing, the next writing its rows
CALL_TIMEOUT = 30.0


def audit_name(chain: str) -> str:
    return f"pitboss-audit-{chain}"


def audit_actor(settings: Settings, chain: str | None = None) -> Any:
    """Get or create the writer of `chain` (default: the region's chain)."""
    name = chain or settings.region
    return detached(AuditLog, audit_name(name), settings, 1000, name)


class AuditLog:
    """The single writer of one chain. Created by `audit_actor` (actors.runtime.ensure_audit)."""

    def __init__(self, chain: str, env: dict[str, str] | None = None) -> None:
        os.environ.update(env or {})
        self.settings = Settings()
        self.chain = chain
        actor_id = (ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None) or uuid.uuid4().hex
        self.owner = f"{chain}/{actor_id}/{uuid.uuid4().hex[:8]}"
        self.key = self.settings.audit_anchor_key.encode()
        self.store: AuditStore | None = None
        self.current: Head | None = None  # None: must claim the head before the next write
        self.last_appended = datetime.fromtimestamp(0, UTC)
        self.seen: OrderedDict[str, int] = OrderedDict()  # record_id -> seq, newest last
        self.inflight: dict[str, asyncio.Future[int]] = {}
        self.queue: list[tuple[AuditRecord, asyncio.Future[int]]] = []
        self.anchored_seq = 0
        self.anchored_at = time.monotonic()
        self.draining = False
        self.tentative: Head | None = None  # the head after the last batch started (maybe uncommitted)
        self.batches: list[asyncio.Task[bool]] = []  # started, not finished; oldest first
        self.counts = {"batches": 0, "entries": 0, "duplicates": 0, "failed_batches": 0, "anchors": 0, "claims": 0}
        self.last_batch = 0
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------- start

    async def ready(self) -> bool:
        """Connect, claim the head and load the duplicate window; retried by every call until it works."""
        if self._lock is None:
            self._lock = asyncio.Lock()
            self._wake = asyncio.Event()
            self._idle = asyncio.Event()
        async with self._lock:
            if self.store is None:
                loop = asyncio.get_running_loop()
                ks = self.settings.cassandra_keyspace
                self.cluster, session = await loop.run_in_executor(None, lambda: connect(self.settings, ks))
                self.store = AuditStore(session, self.settings.lease_serial_consistency)
            if not self._tasks:
                # Later claims (after a failed batch) are the writer's, between batches.
                await self._claim()
                self._spawn(self._writer())
                self._spawn(self._anchor_ticker())
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(self) -> None:
        assert self.store is not None
        head = await self.store.claim(self.chain, self.owner)
        self.counts["claims"] += 1
        if self.counts["claims"] == 1:
            await self._load_tail(head)
        self.current = self.tentative = head
        log.info("audit chain %s: claimed at seq %s, epoch %s", self.chain, head.seq, head.epoch)

    async def _load_tail(self, head: Head) -> None:
        assert self.store is not None
        loaded: list[tuple[str, int]] = []
        async for rows in self.store.newest(self.chain, head.seq, 1000):
            for link in rows:
                if not loaded and link.seq == head.seq:
                    self.last_appended = parse(self.chain, link).appended_at
                    if link.hash != head.hash:
                        log.error("audit chain %s: entry %s does not have the head's hash", self.chain, head.seq)
                rid = record_id_of(link.body)
                if rid is not None:
                    loaded.append((rid, link.seq))
            if len(loaded) >= DEDUP_LOAD:
                break
        for rid, seq in reversed(loaded):
            self.seen[rid] = seq
        anchor = await self.store.last_anchor(self.chain, head.seq)
        if anchor is not None:
            self.anchored_seq = anchor.seq
            age = (datetime.now(UTC) - anchor.signed_at).total_seconds()
            self.anchored_at = time.monotonic() - max(age, 0.0)

    # ---------------------------------------------------------------- appending

    async def append(self, records: list[dict[str, Any]]) -> list[int]:
        """Store `records` (AuditRecord fields); their seqs once durable. A record_id stored
        before answers with its first seq."""
        await self.ready()
        if self.draining:
            raise Unavailable("the audit log is restarting; retry")
        try:
            parsed = [AuditRecord.model_validate(r) for r in records]
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidInput(err["msg"], field=".".join(str(p) for p in err["loc"])) from None
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = []
        for record in parsed:
            rid = str(record.record_id)
            seq = self.seen.get(rid)
            if seq is not None:
                self.counts["duplicates"] += 1
                done: asyncio.Future[int] = loop.create_future()
                done.set_result(seq)
                futures.append(done)
            elif rid in self.inflight:
                self.counts["duplicates"] += 1
                futures.append(self.inflight[rid])
            else:
                fut: asyncio.Future[int] = loop.create_future()
                self.inflight[rid] = fut
                self.queue.append((record, fut))
                futures.append(fut)
        assert self._wake is not None and self._idle is not None
        self._idle.clear()
        self._wake.set()
        return list(await asyncio.gather(*futures))

    async def _writer(self) -> None:
        """Group commit, pipelined: batch n+1 is hashed and its rows written while batch n's head
        transaction runs; the transactions run one after another, each from the head the previous
        one left, so the chain stays a chain. A failed batch fails the one behind it too."""
        assert self._wake is not None and self._idle is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                if len(self.batches) >= PIPELINE:
                    await asyncio.wait({self.batches[0]})
                    continue
                batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
                try:
                    base = await self._begin()
                except Exception as exc:  # no head (Cassandra unreachable): these callers retry
                    self._fail(batch, exc)
                    await asyncio.sleep(0.1)
                    continue
                # The chain's clock never goes back, so a time range is a contiguous range of seqs.
                at = max(datetime.now(UTC), self.last_appended)
                self.last_appended = at
                rows = chain_bodies(self.chain, [r for r, _ in batch], base.seq, base.hash, at)
                self.tentative = Head(self.chain, rows[-1].seq, rows[-1].hash, base.epoch, base.owner)
                previous = self.batches[-1] if self.batches else None
                task = asyncio.get_running_loop().create_task(self._complete(batch, rows, base, previous))
                self.batches.append(task)
                task.add_done_callback(self._batch_done)
            if not self.batches:
                self._idle.set()

    def _batch_done(self, task: asyncio.Task[bool]) -> None:
        self.batches.remove(task)
        if self._wake is not None:
            self._wake.set()  # the writer notices an empty pipeline (drain waits for it)

    async def _begin(self) -> Head:
        """The head the next batch follows: the last batch's, or a fresh claim after a failure."""
        if self.current is None or self.tentative is None:
            if self.batches:
                await asyncio.wait(set(self.batches))
            await self._claim()
        assert self.tentative is not None
        return self.tentative

    async def _complete(
        self,
        batch: list[tuple[AuditRecord, asyncio.Future[int]]],
        rows: list[Chained],
        base: Head,
        previous: asyncio.Task[bool] | None,
    ) -> bool:
        assert self.store is not None
        write = asyncio.ensure_future(self.store.write_rows(base, rows))
        try:
            if previous is not None and not await previous:
                raise Unavailable("an earlier audit batch failed; retry")
            await write
            if self.current is None or self.current.seq != base.seq:
                raise Unavailable("the audit log lost its place in the chain; retry")
            self.current = await self.store.commit(base, rows)
        except Exception as exc:
            if not write.done():
                await asyncio.wait({write})
            if not write.cancelled():
                write.exception()  # retrieved: the batch's error says it all
            # Claim again before the next batch: a new epoch, and what this one wrote is removed.
            self.current = None
            self.tentative = None
            self._fail(batch, exc)
            return False
        self.counts["batches"] += 1
        self.counts["entries"] += len(batch)
        self.last_batch = len(batch)
        for (record, fut), placed in zip(batch, rows, strict=True):
            rid = str(record.record_id)
            self.inflight.pop(rid, None)
            self.seen[rid] = placed.seq
            if not fut.done():
                fut.set_result(placed.seq)
        while len(self.seen) > DEDUP_WINDOW:
            self.seen.popitem(last=False)
        self._spawn(self._maybe_anchor())
        return True

    def _fail(self, batch: list[tuple[AuditRecord, asyncio.Future[int]]], exc: BaseException) -> None:
        self.counts["failed_batches"] += 1
        log.warning("audit chain %s: a batch of %s failed: %r", self.chain, len(batch), exc)
        error = exc if isinstance(exc, Unavailable) else Unavailable("the audit log could not store; retry")
        for record, fut in batch:
            self.inflight.pop(str(record.record_id), None)
            if not fut.done():
                fut.set_exception(error)

    # ---------------------------------------------------------------- anchors

    async def _maybe_anchor(self) -> None:
        head = self.current
        s = self.settings
        if head is None or self.store is None:
            return
        every, seconds = s.audit_anchor_every, s.audit_anchor_seconds
        if not should_anchor(head.seq, self.anchored_seq, self.anchored_at, time.monotonic(), every, seconds):
            return
        anchor = AuditAnchor(
            chain=self.chain,
            seq=head.seq,
            hash=head.hash,
            signature=anchor_signature(self.key, self.chain, head.seq, head.hash),
            signed_at=datetime.now(UTC),
        )
        try:
            await self.store.write_anchor(anchor)
        except Exception:  # the next batch or tick signs a later seq, which covers this one too
            log.warning("audit chain %s: anchor at %s not written", self.chain, head.seq, exc_info=True)
            return
        self.anchored_seq, self.anchored_at = head.seq, time.monotonic()
        self.counts["anchors"] += 1

    async def _anchor_ticker(self) -> None:
        period = min(self.settings.audit_anchor_seconds, 5.0)
        while True:
            await asyncio.sleep(period)
            await self._maybe_anchor()

    # ---------------------------------------------------------------- operations

    async def head(self) -> dict[str, Any]:
        await self.ready()
        head = self.current
        return {
            "chain": self.chain,
            "seq": head.seq if head else None,
            "hash": head.hash if head else None,
            "epoch": head.epoch if head else None,
        }

    async def stats(self) -> dict[str, Any]:
        head = self.current
        return {
            "chain": self.chain,
            "pid": os.getpid(),
            "owner": self.owner,
            "seq": head.seq if head else None,
            "epoch": head.epoch if head else None,
            "queued": len(self.queue),
            "remembered_ids": len(self.seen),
            "anchored_seq": self.anchored_seq,
            "last_batch": self.last_batch,
            **self.counts,
        }

    async def close(self) -> None:
        """Stop the background tasks and the Cassandra connection (an instance used outside Ray)."""
        for task in list(self._tasks):
            task.cancel()
        cluster = getattr(self, "cluster", None)
        if cluster is not None:
            await asyncio.get_running_loop().run_in_executor(None, cluster.shutdown)

    async def drain(self, timeout: float = 30.0) -> dict[str, Any]:
        """Refuse new appends and wait for the queued ones (before a planned restart)."""
        self.draining = True
        if (self.queue or self.batches) and self._idle is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        await self._maybe_anchor()
        return await self.stats()


# ---------------------------------------------------------------------------- the client


class AuditClient:
    """What the apps use. `append` goes through the region's AuditLog actor (concurrent appends of
    one process leave together); `verify`, `export` and `recent` read Cassandra directly."""

    def __init__(self, settings: Settings | None = None, chain: str | None = None, handle: Any = None) -> None:
        self.settings = settings or get_settings()
        self.chain = chain or self.settings.region
        self._handle = handle
        self._store: AuditStore | None = None
        self._cluster: Any = None
        self._connecting: asyncio.Lock | None = None
        self._coalescer = Coalescer(self._send, max_in_flight=2, max_batch=512)

    # -- writing

    async def append(self, record: AuditRecord, attempts: int = 3) -> int:
        """The record's seq, once durable. Retried here on Unavailable: the record_id makes it safe."""
        item = record.model_dump(mode="json")
        delay = 0.2
        for attempt in range(attempts):
            try:
                return int(await self._coalescer.submit(item))
            except Unavailable:
                if attempt == attempts - 1:
                    raise
            await asyncio.sleep(delay)
            delay *= 2.5
        raise AssertionError("unreachable")

    def _actor(self) -> Any:
        if self._handle is None:
            self._handle = audit_actor(self.settings, self.chain)
        return self._handle

    async def _send(self, items: list[dict[str, Any]]) -> list[int]:
        try:
            return list(await asyncio.wait_for(self._actor().append.remote(items), CALL_TIMEOUT))
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, PitbossError):
                raise cause from None
            raise Unavailable("the audit log failed; retry") from exc
        except (ActorDiedError, ActorUnavailableError, RayActorError):
            raise Unavailable("the audit log is restarting; retry in a moment") from None
        except (TimeoutError, GetTimeoutError):
            raise Unavailable("the audit log did not answer in time; retry") from None

    # -- reading

    async def store(self) -> AuditStore:
        if self._store is None:
            if self._connecting is None:
                self._connecting = asyncio.Lock()
            async with self._connecting:
                if self._store is None:
                    loop = asyncio.get_running_loop()
                    s = self.settings
                    cluster, session = await loop.run_in_executor(None, lambda: connect(s, s.cassandra_keyspace))
                    self._cluster = cluster
                    self._store = AuditStore(session, s.lease_serial_consistency)
        return self._store

    async def close(self) -> None:
        if self._cluster is not None:
            cluster, self._cluster, self._store = self._cluster, None, None
            await asyncio.get_running_loop().run_in_executor(None, cluster.shutdown)

    async def head(self, chain: str | None = None) -> Head | None:
        return await (await self.store()).read_head(chain or self.chain)

    async def verify(
        self, chain: str | None = None, start_seq: int | None = None, end_seq: int | None = None
    ) -> VerifyReport:
        """Check seqs start..end (default: the whole chain) against hashes, head and anchors."""
        store = await self.store()
        return await store.verify(chain or self.chain, self.settings.audit_anchor_key.encode(), start_seq, end_seq)

    async def export(self, start: datetime, end: datetime, chain: str | None = None) -> AsyncIterator[AuditEntry]:
        """Entries appended in [start, end), in chain order."""
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidInput("export bounds need a UTC offset", field="start" if start.tzinfo is None else "end")
        store = await self.store()
        async for entry in store.export(chain or self.chain, start, end):
            yield entry

    async def recent_page(
        self,
        limit: int = 50,
        before_seq: int | None = None,
        *,
        chain: str | None = None,
        actor_id: str | None = None,
        action: str | None = None,
        target_kind: str | None = None,
        target_id: str | None = None,
        outcome: str | None = None,
        brand: str | None = None,
        max_scan: int = 20_000,
    ) -> tuple[list[AuditEntry], int | None]:
        """Entries newest first, before seq `before_seq` (the cursor), matching every filter given.
        `action` ending with "." matches a prefix ("player."). Returns (entries, next cursor or None
        at the start of the chain). A page may be short when `max_scan` entries matched too few."""
        limit = max(1, min(limit, 500))
        store = await self.store()
        name = chain or self.chain
        head = await store.read_head(name)
        if head is None or head.seq == 0:
            return [], None
        top = head.seq if before_seq is None else min(before_seq - 1, head.seq)
        given = {
            "actor_id": actor_id, "target_kind": target_kind, "target_id": target_id, "outcome": outcome,
            "brand": brand,
        }  # fmt: skip
        wanted = {k: v for k, v in given.items() if v is not None}
        found: list[AuditEntry] = []
        scanned = 0
        cursor: int | None = top + 1
        async for rows in store.newest(name, top, min(max(limit * 2, 50), 1000)):
            for link in rows:
                scanned += 1
                cursor = link.seq
                entry = parse(name, link)
                if _matches(entry, wanted, action):
                    found.append(entry)
                    if len(found) == limit:
                        return found, (entry.seq if entry.seq > 1 else None)
            if scanned >= max_scan:
                return found, cursor
        return found, None

    async def recent(self, limit: int = 50, before_seq: int | None = None, **filters: Any) -> list[AuditEntry]:
        return (await self.recent_page(limit, before_seq, **filters))[0]


def _matches(entry: AuditEntry, wanted: dict[str, str], action: str | None) -> bool:
    if action is not None and not (entry.action.startswith(action) if action.endswith(".") else entry.action == action):
        return False
    return all(getattr(entry, k) == v for k, v in wanted.items())


# ---------------------------------------------------------------------------- export formats

CSV_COLUMNS = (
    "seq", "appended_at", "occurred_at", "record_id", "actor_id", "actor_name", "actor_roles", "action",
    "target_kind", "target_id", "brand", "outcome", "reason", "before", "after", "ip", "user_agent", "request_id",
    "chain", "prev_hash", "hash",
)  # fmt: skip
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(cell: str) -> str:
    """A spreadsheet runs a cell starting with = + - @ (or tab/CR) as a formula: quote it."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def _cell(entry: AuditEntry, column: str) -> str:
    value = getattr(entry, column)
    if value is None:
        return ""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, (dict, list)):
        from domain.audit import canonical_json

        return canonical_json(value).decode()
    return csv_safe(str(value))


def csv_line(values: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def csv_row(entry: AuditEntry) -> str:
    return csv_line([csv_safe(_cell(entry, c)) for c in CSV_COLUMNS])


async def to_csv_lines(entries: AsyncIterable[AuditEntry], header: bool = True) -> AsyncIterator[str]:
    """RFC 4180 CSV, one entry a line; JSON in before/after/actor_roles; formula cells quoted
    (so the CSV is for reading: the JSON export is the one to verify hashes from)."""
    if header:
        yield csv_line(CSV_COLUMNS)
    async for entry in entries:
        yield csv_row(entry)


async def to_json_lines(entries: AsyncIterable[AuditEntry]) -> AsyncIterator[str]:
    """JSON Lines: one entry (every field, hashes included) a line."""
    async for entry in entries:
        yield entry.model_dump_json() + "\n"


async def to_json_array(entries: AsyncIterable[AuditEntry]) -> AsyncIterator[str]:
    """One JSON array, streamed."""
    yield "["
    first = True
    async for entry in entries:
        yield ("\n" if first else ",\n") + entry.model_dump_json()
        first = False
    yield "\n]\n"


# ---------------------------------------------------------------------------- command line


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give a UTC offset, e.g. 2026-03-01T00:00:00Z")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m actors.audit", description="Verify or export the audit chain.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check the chain; exit 1 when a problem is found")
    v.add_argument("--chain", help="chain name (default: PITBOSS_REGION)")
    v.add_argument("--from-seq", type=int, default=None)
    v.add_argument("--to-seq", type=int, default=None)
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    e = sub.add_parser("export", help="write the entries appended in [--from, --to) to stdout")
    e.add_argument("--chain", help="chain name (default: PITBOSS_REGION)")
    e.add_argument("--from", dest="start", type=_when, required=True, help="RFC 3339, inclusive")
    e.add_argument("--to", dest="end", type=_when, required=True, help="RFC 3339, exclusive")
    e.add_argument("--format", choices=("csv", "json", "jsonl"), default="json")
    return p.parse_args(argv)


def render(report: VerifyReport) -> str:
    status = "OK" if report.ok else "PROBLEMS FOUND"
    lines = [
        f"audit chain {report.chain}: {status}",
        f"  entries checked: {report.checked} (seq {report.first_seq}..{report.last_seq})",
        f"  anchors checked: {report.anchors_checked}",
    ]
    for p in report.problems:
        lines.append(f"  seq {p.seq}: {p.kind}: {p.detail}")
    if report.problems_omitted:
        lines.append(f"  ... and {report.problems_omitted} more problems")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    client = AuditClient(get_settings(), chain=args.chain)
    try:
        if args.command == "verify":
            started = time.perf_counter()
            report = await client.verify(start_seq=args.from_seq, end_seq=args.to_seq)
            took = time.perf_counter() - started
            print(report.model_dump_json(indent=2) if args.json else render(report))
            if not args.json:
                print(f"  took {took:.1f}s ({report.checked / max(took, 1e-9):,.0f} entries/s)")
            return 0 if report.ok else 1
        if args.end <= args.start:
            print("--to must be after --from", file=sys.stderr)
            return 2
        entries = client.export(args.start, args.end)
        lines = {"csv": to_csv_lines, "json": to_json_array, "jsonl": to_json_lines}[args.format](entries)
        out = sys.stdout
        async for line in lines:
            out.write(line)
        out.flush()
        return 0
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
