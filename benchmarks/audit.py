"""The audit log: sustained appends through the AuditLog actor, and verifying a million entries.

1. Appends: `callers` concurrent tasks append records one after another for `seconds` through one
   AuditClient (as the callers inside one Serve replica do), into a fresh chain `bench-<uuid>`.
   Records are built beforehand (building them is the caller's cost, not the log's). Reports
   entries/s, latency percentiles, entries per commit and the actor's CPU per entry.
2. Verification: a bulk loader writes `entries` entries of a valid chain (with the head, anchors
   and day index, as the writer would) straight into Cassandra under another `bench-<uuid>`,
   then `AuditStore.verify` checks it all. Reports the time and rows/s.

Both chains are deleted afterwards unless `keep` is set (partition deletes: the disk space returns
after compaction). Needs Cassandra and, for the appends, Ray (--ray-address or RAY_ADDRESS).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from actors.audit import AuditClient, audit_actor
from adapters.cassandra.audit import BUCKET_SIZE, AuditStore, bucket_of, day_key, write_timestamp
from adapters.cassandra.session import aexecute, connect
from adapters.settings import Settings
from benchmarks.common import Report, Target, cpu_seconds, ms, percentile, say
from domain.audit import GENESIS_HASH, anchor_signature, canonical_json, link_hash
from schemas.audit import AuditRecord, rfc3339

APPEND_TARGET = 1000.0  # entries/s on the 2-core machine
VERIFY_TARGET = 30.0  # seconds for 1,000,000 entries


@dataclass(frozen=True, slots=True)
class AuditOptions:
    entries: int = 1_000_000
    callers: int = 256
    seconds: float = 15.0
    keep: bool = False
    skip_appends: bool = False
    skip_verify: bool = False


def _record(n: int) -> AuditRecord:
    return AuditRecord(
        record_id=uuid.uuid4(),
        actor_id=f"op-{n % 50}",
        actor_name="Benchmark Operator",
        actor_roles=["support"],
        action="player.block",
        target_kind="player",
        target_id=str(uuid.uuid4()),
        brand="demo",
        before={"blocked": False},
        after={"blocked": True, "reason": "self-exclusion request"},
        ip="10.0.0.7",
        user_agent="Mozilla/5.0 (benchmark)",
        outcome="succeeded",
        request_id=uuid.uuid4().hex,
        occurred_at=datetime.now(UTC),
    )


async def appends(settings: Settings, target: Target, opts: AuditOptions, report: Report) -> str:
    import ray

    if not ray.is_initialized():
        address = target.ray_address or settings.ray_address
        ray.init(address=address, namespace=settings.ray_namespace, logging_level=logging.ERROR, log_to_driver=False)
    chain = f"bench-{uuid.uuid4().hex[:12]}"
    handle = audit_actor(settings, chain)
    client = AuditClient(settings, chain=chain, handle=handle)
    await handle.head.remote()  # started and holding the head before the clock runs
    pid = int((await handle.stats.remote())["pid"])
    pool = [_record(n) for n in range(2000)]
    latencies: list[float] = []
    stop = time.perf_counter() + opts.seconds
    errors = 0

    async def caller(i: int) -> None:
        nonlocal errors
        n = i
        while time.perf_counter() < stop:
            rec = pool[n % len(pool)].model_copy(update={"record_id": uuid.uuid4()})
            n += opts.callers
            sent = time.perf_counter()
            try:
                await client.append(rec)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - sent)

    say(f"appending for {opts.seconds:.0f}s from {opts.callers} concurrent callers into {chain}")
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(opts.callers)))
    took = time.perf_counter() - started
    cpu_after = cpu_seconds(pid)
    stats = await handle.stats.remote()
    ray.kill(handle, no_restart=True)
    rate = len(latencies) / took
    latencies.sort()
    goal = f">= {APPEND_TARGET:,.0f}/s"
    report.add("appends through the actor", f"{rate:,.0f} entries/s", goal, rate >= APPEND_TARGET)
    report.add("append latency p50 / p99", f"{ms(percentile(latencies, 50))} / {ms(percentile(latencies, 99))}")
    per_batch = stats["entries"] / max(stats["batches"], 1)
    report.add("entries per commit", f"{per_batch:.1f} ({stats['batches']} commits, {stats['anchors']} anchors)")
    if cpu_before is not None and cpu_after is not None and latencies:
        report.add("actor CPU per entry", f"{(cpu_after - cpu_before) / len(latencies) * 1e6:.0f} us")
    if errors:
        report.notes.append(f"{errors} appends failed and were not counted")
    verifier = AuditClient(settings, chain=chain)
    try:
        check = await verifier.verify()
        report.notes.append(f"the appended chain verifies: {check.ok} ({check.checked} entries)")
    finally:
        await verifier.close()
    return chain


async def bulk_load(store: AuditStore, settings: Settings, chain: str, count: int) -> float:
    """Write a valid chain of `count` entries straight into the tables; entries/s."""
    session = store.session
    key = settings.audit_anchor_key.encode()
    insert = session.prepare(
        "INSERT INTO audit_entries (chain, bucket, seq, prev_hash, hash, body) VALUES (?, ?, ?, ?, ?, ?) "
        "USING TIMESTAMP ?"
    )
    anchor = session.prepare(
        "INSERT INTO audit_anchors (chain, bucket, seq, hash, signature, signed_at) VALUES (?, ?, ?, ?, ?, ?)"
    )
    from cassandra.query import BatchStatement, BatchType

    limit = asyncio.Semaphore(48)
    template: dict[str, Any] = _record(0).model_dump(mode="json")
    template["occurred_at"] = rfc3339(datetime.now(UTC))
    appended = datetime.now(UTC)
    template["appended_at"] = rfc3339(appended)
    prev = GENESIS_HASH
    pending: set[asyncio.Task[Any]] = set()
    started = time.perf_counter()
    rows_per_batch = 30  # ~18 kB of bodies: under Cassandra 4.x's 50 kB batch limit

    async def send(stmt: Any) -> None:
        async with limit:
            await aexecute(session, stmt, op="audit_bulk")

    def spawn(stmt: Any) -> None:
        task = asyncio.ensure_future(send(stmt))
        pending.add(task)
        task.add_done_callback(pending.discard)

    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for seq in range(1, count + 1):
        template["seq"] = seq
        template["record_id"] = str(uuid.UUID(int=seq))
        template["target_id"] = f"player-{seq}"
        body = canonical_json(template)
        digest = link_hash(chain, seq, prev, body)
        bucket = bucket_of(seq)
        batch.add(insert, (chain, bucket, seq, prev, digest, body.decode(), write_timestamp(1, seq)))
        prev = digest
        if seq % settings.audit_anchor_every == 0 or seq == count:
            spawn(anchor.bind((chain, bucket, seq, digest, anchor_signature(key, chain, seq, digest), appended)))
        if len(batch) >= rows_per_batch or (seq + 1) % BUCKET_SIZE == 0 or seq == count:
            spawn(batch)
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        if len(pending) >= 96:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if seq % 100_000 == 0:
            say(f"loaded {seq:,} entries ({seq / (time.perf_counter() - started):,.0f}/s)")
    if pending:
        await asyncio.gather(*pending)
    month, day = day_key(appended)
    await asyncio.gather(
        *(
            aexecute(session, "INSERT INTO audit_days (chain, month, day, bucket) VALUES (%s, %s, %s, %s)",
                     (chain, month, day, b))
            for b in range(bucket_of(1), bucket_of(count) + 1)
        )
    )  # fmt: skip
    await aexecute(
        session,
        "INSERT INTO audit_heads (chain, seq, hash, epoch, owner, claimed_at) VALUES (%s, %s, %s, 1, 'bench', %s)",
        (chain, count, prev, datetime.now(UTC)),
    )
    return count / (time.perf_counter() - started)


async def drop_chain(store: AuditStore, chain: str, last_seq: int) -> None:
    session = store.session
    buckets = range(0, bucket_of(max(last_seq, 0)) + 2)
    stmts: list[tuple[str, tuple[Any, ...]]] = []
    for table in ("audit_entries", "audit_anchors"):
        stmts += [(f"DELETE FROM {table} WHERE chain = %s AND bucket = %s", (chain, b)) for b in buckets]
    month, _ = day_key(datetime.now(UTC))
    stmts.append(("DELETE FROM audit_days WHERE chain = %s AND month = %s", (chain, month)))
    stmts.append(("DELETE FROM audit_heads WHERE chain = %s", (chain,)))
    await asyncio.gather(*(aexecute(session, q, p, op="audit_bench_drop") for q, p in stmts))


async def run(target: Target, opts: AuditOptions) -> Report:
    settings = Settings()
    report = Report("audit", f"{opts.callers} callers x {opts.seconds:.0f}s; verify {opts.entries:,} entries")
    cluster, session = await asyncio.get_running_loop().run_in_executor(
        None, lambda: connect(settings, settings.cassandra_keyspace)
    )
    store = AuditStore(session, settings.lease_serial_consistency)
    chains: list[tuple[str, int]] = []
    try:
        if not opts.skip_appends:
            chain = await appends(settings, target, opts, report)
            head = await store.read_head(chain)
            chains.append((chain, head.seq if head else 0))
        if not opts.skip_verify:
            chain = f"bench-{uuid.uuid4().hex[:12]}"
            chains.append((chain, opts.entries))
            say(f"bulk-loading {opts.entries:,} entries into {chain}")
            load_rate = await bulk_load(store, settings, chain, opts.entries)
            report.add("bulk load (setup)", f"{load_rate:,.0f} entries/s")
            say("verifying")
            cpu = os.times()
            started = time.perf_counter()
            result = await store.verify(chain, settings.audit_anchor_key.encode())
            took = time.perf_counter() - started
            used = (os.times().user - cpu.user) + (os.times().system - cpu.system)
            scaled = took * 1_000_000 / max(result.checked, 1)
            report.add(
                f"verify {result.checked:,} entries",
                f"{took:.1f} s ({result.checked / took:,.0f} rows/s)",
                f"<= {VERIFY_TARGET:.0f} s per 1M",
                scaled <= VERIFY_TARGET,
            )
            report.add("verify CPU in this process", f"{used:.1f} s ({used / max(result.checked, 1) * 1e6:.1f} us/row)")
            report.notes.append(
                f"verify ok={result.ok}, anchors checked {result.anchors_checked}, problems {len(result.problems)}"
            )
    finally:
        if not opts.keep:
            for chain, last in chains:
                await drop_chain(store, chain, last)
        else:
            report.notes.append("kept chains: " + ", ".join(c for c, _ in chains))
        await asyncio.get_running_loop().run_in_executor(None, cluster.shutdown)
    return report
