"""Full rebuild of the segment engine's feature matrix from Cassandra, beside the driver's raw read
ceiling measured in the same run.

Writes --players synthetic feature rows (default 1,000,000) once into the region `bench-rebuild`
of `player_features` (skipped when the rows are already there), then:

1. raw read ceiling: the same paged scans of every bucket (same concurrency, tuple rows), rows
   dropped as they arrive: what the driver can deliver to Python;
2. rebuild: `actors.segments.scan_features` + `build_matrix`, the engine's own code path (read,
   vectorised decode, bulk load), reported as time and rows/s.

    python -m benchmarks segment_rebuild --players 1000000
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from actors.segments import SCAN_CONCURRENCY, build_matrix, scan_features
from adapters.cassandra.segments import FeatureStore, StoredFeatures, pages
from adapters.cassandra.session import connect
from adapters.settings import Settings
from benchmarks.common import Report, host_note, say
from domain.features import pack
from schemas.features import FeatureRow

REGION = "bench-rebuild"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RebuildOptions:
    players: int = 1_000_000
    write_concurrency: int = 8


def _rows(n: int, seed: int) -> list[StoredFeatures]:
    rng = np.random.default_rng(seed)
    countries = ["DE", "GB", "SE", "FI", "MT", "IE", "NL", "AT", "ES", "IT"]
    out = []
    for i in range(n):
        row = FeatureRow(
            registered_at=NOW - timedelta(days=int(rng.integers(0, 900))),
            last_active_at=NOW - timedelta(minutes=int(rng.integers(0, 60 * 24 * 60))),
            active_30d=bool(rng.random() < 0.6),
            sessions_30d=int(rng.integers(0, 60)),
            deposits_count_30d=int(rng.integers(0, 10)),
            deposits_sum_30d=int(rng.integers(0, 500_000)),
            deposits_sum_lifetime=int(rng.integers(0, 5_000_000)),
            ggr_30d=int(rng.integers(-100_000, 300_000)),
            churn_risk=float(rng.random()),
            country=countries[i % len(countries)],
            language="en",
            currency="EUR",
            lifecycle_stage="active",
            traffic_source=f"aff-{i % 400}",
        )
        blob, codes = pack(row)
        out.append(StoredFeatures(uuid.UUID(bytes=rng.bytes(16), version=4), "demo", blob, codes, NOW))
    return out


async def _count_bucket(store: FeatureStore, bucket: int) -> int:
    n = 0
    async for page in store.scan(REGION, bucket):
        n += len(page)
    return n


async def _ensure_rows(store: FeatureStore, opts: RebuildOptions) -> None:
    expected = opts.players / store.buckets
    have = await _count_bucket(store, 0)
    if have >= expected * 0.8:
        say(f"{REGION}: rows already written (bucket 0 holds {have})")
        return
    say(f"writing {opts.players} feature rows to {REGION}...")
    started = time.perf_counter()
    chunk = 20_000
    gate = asyncio.Semaphore(opts.write_concurrency)

    async def write(i: int) -> None:
        async with gate:
            rows = await asyncio.get_running_loop().run_in_executor(None, _rows, min(chunk, opts.players - i), i)
            await store.write(REGION, rows)

    await asyncio.gather(*(write(i) for i in range(0, opts.players, chunk)))
    say(f"wrote {opts.players} rows in {time.perf_counter() - started:.0f}s")


async def _raw(store: FeatureStore) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    gate = asyncio.Semaphore(SCAN_CONCURRENCY)

    async def one(bucket: int) -> None:
        nonlocal count
        async with gate:
            async for page in pages(store.session, store._scan, (REGION, bucket)):
                count += len(page)

    await asyncio.gather(*(one(b) for b in range(store.buckets)))
    return count, time.perf_counter() - started


async def run(opts: RebuildOptions) -> Report:
    settings = Settings()
    loop = asyncio.get_running_loop()
    cluster, session = await loop.run_in_executor(None, lambda: connect(settings, settings.cassandra_keyspace))
    try:
        store = FeatureStore(session, settings.segment_feature_buckets)
        await _ensure_rows(store, opts)
        raw_rows, raw_s = await _raw(store)
        started = time.perf_counter()
        scanned = await scan_features(store, REGION, store.buckets)
        read_s = time.perf_counter() - started
        matrix = build_matrix(scanned)
        total_s = time.perf_counter() - started
    finally:
        cluster.shutdown()
    n = len(matrix)
    report = Report("segment_rebuild", f"{n:,} players, {store.buckets} buckets, {SCAN_CONCURRENCY} scans at once")
    report.add("raw driver read (ceiling)", f"{raw_s:.1f} s, {raw_rows / raw_s:,.0f} rows/s")
    report.add("matrix rebuild (read + decode + load)", f"{total_s:.1f} s, {n / total_s:,.0f} rows/s")
    report.add("  of which read", f"{read_s:.1f} s ({read_s / raw_s:.2f} x the raw read)")
    report.add("  of which decode + bulk load", f"{total_s - read_s:.2f} s")
    report.add("matrix memory", f"{matrix.nbytes() / max(1, matrix.capacity):.0f} bytes/player", "<= 200 bytes/player",
               matrix.nbytes() / max(1, matrix.capacity) <= 200)
    report.notes.append(host_note())
    report.notes.append("Cassandra is the local test stack (2.1, one node per DC); the driver is the Cython build")
    return report
