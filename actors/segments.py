"""`SegmentEngine`: one detached actor per region (`pitboss-segments-<region>`) holding the region's
players' CRM features as a columnar numpy matrix, evaluating segment rules over it and keeping
materialised segments current.

- Start: rebuild the matrix from `player_features` (one scan per bucket, in parallel), overlay the
  churn scores, reload the materialised segments and compare each with its stored members: changes
  that happened while the engine was down are published like any other.
- Shards push changed rows (`apply_rows`, fire and forget); every PITBOSS_SEGMENT_CATCHUP_SECONDS the
  engine re-reads every row and applies those newer than what it holds (a lost push is repaired).
  A row older than the one held is ignored (`as_of`).
- Incremental membership: only the pushed rows are re-evaluated. Every PITBOSS_SEGMENT_REFRESH_SECONDS
  every segment is re-evaluated in full (time windows move with the clock). Windowed counts of a
  player who stopped playing are aged then: once a whole window has passed since the row was
  computed, its counts are zero (any activity would have produced a newer row).
- A change is published first (`segment.entered` / `segment.exited` on the events exchange, routing
  key = type, event_id a UUIDv5 of (segment, version, player, type, stamp) so a retry is the same
  event), then written to `segment_members` and the Redis set `pitboss:segment:<id>`: at least once.
  The first population of a segment (materialise of a segment not tracked yet) publishes nothing:
  the members are the starting point, not news. A new version publishes the difference.
- Churn: retrained every PITBOSS_CHURN_RETRAIN_SECONDS from `player_activity` (120 days: 90 of
  features, 30 of label), held-out AUC and the recency baseline's AUC stored with the model in
  `churn_models`; the scores become the `churn_risk` feature (`churn_scores`). Players with no
  activity in the last 30 days score 1.0 (churned by definition); players with no activity rows keep
  a null score.
- Multi-region: each region's engine holds the players homed in its region (as its shards own
  them); counts and previews are of that region.

`preview` raises InvalidInput from `parse_rule` (it crosses Ray as the same type inside a
RayTaskError: `actors.router.call` unwraps it), with the field path of the bad part.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.router import detached
from adapters.cassandra.segments import FeatureStore, Materialised, SegmentStore
from adapters.cassandra.session import connect, utc
from adapters.rabbit import EventPublisher
from adapters.redis_pool import redis_client
from adapters.settings import Settings
from domain import churn
from domain.errors import Conflict, InvalidInput, NotFound
from domain.features import day_number, unpack_columns
from domain.segments import FeatureMatrix, Rows, evaluate, parse_rule
from schemas.events import PitbossEvent
from schemas.features import FeatureRow
from schemas.segments import Rule

log = logging.getLogger("pitboss.segments")

EVENT_NS = uuid.UUID("5f0c2a52-3d55-4f0e-9a53-7f6d3c1a2b10")
REDIS_PREFIX = "pitboss:segment:"
SCAN_CONCURRENCY = 16
EFFECT_CHUNK = 5000
PUBLISH_CHUNK = 500
WINDOWED = {
    1: ("active_1d", "sessions_1d", "avg_session_minutes_1d", "deposits_count_1d", "bets_count_1d"),
    7: ("active_7d", "sessions_7d", "avg_session_minutes_7d", "deposits_count_7d", "deposits_sum_7d",
        "bets_count_7d"),
    30: ("active_30d", "active_days_30d", "sessions_30d", "avg_session_minutes_30d", "deposits_count_30d",
         "deposits_sum_30d", "withdrawals_count_30d", "withdrawals_sum_30d", "bets_count_30d", "bets_sum_30d",
         "ggr_30d", "net_loss_30d"),
}


def engine_name(region: str) -> str:
    return f"pitboss-segments-{region}"


def ensure_segment_engine(settings: Settings) -> Any:
    """Get or create the region's segment engine (detached, restarted by Ray when it dies)."""
    return detached(SegmentEngine, engine_name(settings.region), settings, 64, settings.region)


@dataclass(slots=True)
class Tracked:
    segment_id: str
    version: int
    rule: Rule
    rule_json: str
    brand: str | None
    mask: npt.NDArray[np.bool_]
    sampled_at: float = 0.0


@dataclass(slots=True)
class Effect:
    segment_id: str
    version: int
    entered: list[uuid.UUID]
    exited: list[uuid.UUID]
    stamp: str
    publish: bool = True
    brands: dict[uuid.UUID, str] = field(default_factory=dict)


@dataclass(slots=True)
class Scanned:
    """Every stored feature row of a region, as read (columns of Python values)."""

    ids: list[Any] = field(default_factory=list)
    brands: list[Any] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    as_of: list[datetime] = field(default_factory=list)


async def scan_features(store: FeatureStore, region: str, buckets: int, concurrency: int = SCAN_CONCURRENCY
                        ) -> Scanned:
    """Read a region's feature rows: one paged scan per bucket, `concurrency` at a time."""
    out = Scanned()
    gate = asyncio.Semaphore(concurrency)

    async def one(bucket: int) -> None:
        async with gate:
            async for page in store.scan(region, bucket):
                for pid, brand, blob, code, at in page:
                    out.ids.append(pid)
                    out.brands.append(brand)
                    out.blobs.append(blob)
                    out.codes.append(code or "")
                    out.as_of.append(at)

    await asyncio.gather(*(one(b) for b in range(buckets)))
    return out


def build_matrix(scanned: Scanned) -> FeatureMatrix:
    """A new matrix holding the scanned rows (one vectorised decode and bulk load)."""
    matrix = FeatureMatrix(capacity=max(1024, len(scanned.ids)))
    if scanned.ids:
        matrix.bulk_load(scanned.ids, unpack_columns(scanned.blobs, scanned.codes))
    return matrix


class SegmentEngine:
    def __init__(self, region: str, env: dict[str, str] | None = None) -> None:
        os.environ.update(env or {})
        self.settings = Settings()
        self.region = region
        self.matrix = FeatureMatrix()
        self.as_of = np.zeros(0, dtype=np.int64)  # row -> ms of the row held
        self.brand_of = np.zeros(0, dtype=np.uint16)  # row -> interned brand
        self.brands: list[str] = []
        self.brand_codes: dict[str, int] = {}
        self.segments: dict[str, Tracked] = {}
        self.effects: asyncio.Queue[Effect] | None = None
        self.pending = 0
        self.last_rebuild_at: datetime | None = None
        self.rebuild_seconds: float | None = None
        self.model: churn.Model | None = None
        self.model_figures: dict[str, Any] = {}
        self._rebuilding = False
        self._held: list[list[dict[str, Any]]] = []
        self._lock: asyncio.Lock | None = None
        self._started = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------- start

    async def ready(self) -> bool:
        """Connect, rebuild the matrix and reload the segments; retried by every call until it works."""
        if self._lock is None:
            self._lock = asyncio.Lock()
            self.effects = asyncio.Queue()
        async with self._lock:
            if self._started:
                return True
            if not hasattr(self, "store"):
                loop = asyncio.get_running_loop()
                ks = self.settings.cassandra_keyspace
                self.cluster, session = await loop.run_in_executor(None, lambda: connect(self.settings, ks))
                self.features = FeatureStore(session, self.settings.segment_feature_buckets)
                self.store = SegmentStore(session)
                self.redis = redis_client(self.settings)
                self.publisher = EventPublisher(self.settings)
            await self._rebuild(first=True)
            await self._load_model()
            for d in await self.store.definitions():
                if not d.retired:
                    await self._resume(d)
            self._started = True
            self._spawn(self._effects_loop())
            self._spawn(self._every(self.settings.segment_refresh_seconds, self._refresh))
            self._spawn(self._every(self.settings.segment_catchup_seconds, self._catch_up))
            self._spawn(self._retrain_loop())
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _every(self, seconds: float, job: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("segment engine job %s failed", getattr(job, "__name__", job), exc_info=True)

    # ---------------------------------------------------------------- matrix

    def _brand_code(self, brand: str) -> int:
        code = self.brand_codes.get(brand)
        if code is None:
            code = self.brand_codes[brand] = len(self.brands)
            self.brands.append(brand)
        return code

    def _fit_side_arrays(self) -> None:
        n = self.matrix.size
        if self.as_of.size < n:
            cap = max(n, self.as_of.size * 2, 1024)
            grown = np.zeros(cap, dtype=np.int64)
            grown[: self.as_of.size] = self.as_of
            self.as_of = grown
            brands = np.zeros(cap, dtype=np.uint16)
            brands[: self.brand_of.size] = self.brand_of
            self.brand_of = brands

    async def _scan_all(self) -> Scanned:
        return await scan_features(self.features, self.region, self.settings.segment_feature_buckets)

    async def _rebuild(self, first: bool = False) -> dict[str, Any]:
        started = time.perf_counter()
        self._rebuilding = True
        try:
            scanned = await self._scan_all()
            ids, brands, stamps = scanned.ids, scanned.brands, scanned.as_of
            read_s = time.perf_counter() - started
            matrix = build_matrix(scanned)
            old_matrix, old_segments = self.matrix, {k: (t, t.mask) for k, t in self.segments.items()}
            self.matrix = matrix
            self.as_of = np.zeros(max(1024, len(ids)), dtype=np.int64)
            self.brand_of = np.zeros(self.as_of.size, dtype=np.uint16)
            if ids:
                self.as_of[: len(ids)] = [int(utc(t).timestamp() * 1000) for t in stamps]
                self.brand_of[: len(ids)] = [self._brand_code(b or "") for b in brands]
            await self._overlay_scores()
            now = datetime.now(UTC)
            for t, old_mask in old_segments.values():
                old_ids = set(old_matrix.player_ids(np.flatnonzero(old_mask)))
                t.mask = self._evaluate(t, now)
                new_ids = set(self.matrix.player_ids(np.flatnonzero(t.mask)))
                self._emit(t, sorted(new_ids - old_ids, key=str), sorted(old_ids - new_ids, key=str),
                           f"rebuild:{now.isoformat()}")
            held, self._held = self._held, []
        finally:
            self._rebuilding = False
        for rows in held:
            self._apply(rows)
        self.rebuild_seconds = time.perf_counter() - started
        self.last_rebuild_at = datetime.now(UTC)
        log.info("segment engine %s: %s players rebuilt in %.2fs", self.region, len(ids), self.rebuild_seconds)
        return {"players": len(self.matrix), "seconds": self.rebuild_seconds, "read_seconds": read_s,
                "rows_per_second": len(ids) / self.rebuild_seconds if self.rebuild_seconds else 0.0}

    async def _overlay_scores(self) -> None:
        col = self.matrix._cols["churn_risk"]
        for bucket in range(self.settings.segment_feature_buckets):
            async for page in self.features.scores(self.region, bucket):
                for pid, score, _version in page:
                    r = self.matrix.row_of(pid)
                    if r is not None and score is not None:
                        col[r] = np.float32(score)

    def _apply(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Upsert pushed or caught-up rows newer than those held; returns the rows changed."""
        if not rows:
            return []
        if self._rebuilding:
            self._held.append(list(rows))
            return []
        cols = unpack_columns([r["features"] for r in rows], [r["codes"] or "" for r in rows])
        changed: list[int] = []
        churn_col = self.matrix._cols["churn_risk"]
        names = list(cols)
        for i, r in enumerate(rows):
            pid = r["player_id"] if isinstance(r["player_id"], uuid.UUID) else uuid.UUID(str(r["player_id"]))
            at = r["as_of"]
            ms = int(utc(at if isinstance(at, datetime) else datetime.fromisoformat(at)).timestamp() * 1000)
            row = self.matrix.row_of(pid)
            if row is not None and self.matrix.is_live(pid) and self.as_of[row] >= ms:
                continue
            score = churn_col[row] if row is not None else np.float32("nan")
            values: dict[str, Any] = {}
            for name in names:
                v = cols[name][i]
                if isinstance(v, np.datetime64):
                    values[name] = None if np.isnat(v) else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
                        minutes=int(v.astype(np.int64)))
                elif isinstance(v, np.generic):
                    values[name] = _plain(name, v)
                else:
                    values[name] = v
            row = self.matrix.upsert(pid, FeatureRow.model_construct(**values))
            self._fit_side_arrays()
            churn_col = self.matrix._cols["churn_risk"]
            churn_col[row] = score
            self.as_of[row] = ms
            self.brand_of[row] = self._brand_code(str(r.get("brand") or ""))
            changed.append(row)
        if changed:
            self._track_rows(np.asarray(changed, dtype=np.int64), datetime.now(UTC), rows)
        return changed

    def _track_rows(self, rows: Rows, now: datetime, source: Sequence[dict[str, Any]]) -> None:
        rows = np.unique(rows)
        stamp = max((str(r["as_of"]) for r in source), default=now.isoformat())
        for t in self.segments.values():
            self._fit(t)
            new = evaluate(t.rule, self.matrix, now, rows) & self._brand_mask(t, rows)
            old = t.mask[rows]
            t.mask[rows] = new
            entered = self.matrix.player_ids(rows[new & ~old])
            exited = self.matrix.player_ids(rows[old & ~new])
            self._emit(t, entered, exited, f"push:{stamp}")

    def _fit(self, t: Tracked) -> None:
        n = self.matrix.size
        if t.mask.size < n:
            grown = np.zeros(n, dtype=np.bool_)
            grown[: t.mask.size] = t.mask
            t.mask = grown

    def _brand_mask(self, t: Tracked, rows: Rows | None = None) -> npt.NDArray[np.bool_]:
        n = self.matrix.size
        if t.brand is None:
            return np.ones(n if rows is None else rows.size, dtype=np.bool_)
        code = self.brand_codes.get(t.brand)
        brands = self.brand_of[:n] if rows is None else self.brand_of[rows]
        if code is None:
            return np.zeros(brands.size, dtype=np.bool_)
        return np.asarray(brands == code)

    def _evaluate(self, t: Tracked, now: datetime) -> npt.NDArray[np.bool_]:
        mask = evaluate(t.rule, self.matrix, now)
        np.logical_and(mask, self._brand_mask(t), out=mask)
        return mask

    def _emit(self, t: Tracked, entered: list[uuid.UUID], exited: list[uuid.UUID], stamp: str,
              publish: bool = True) -> None:
        if not entered and not exited:
            return
        assert self.effects is not None
        brands = {}
        for pid in [*entered, *exited]:
            r = self.matrix.row_of(pid)
            brands[pid] = self.brands[int(self.brand_of[r])] if r is not None and self.brands else ""
        self.pending += len(entered) + len(exited)
        self.effects.put_nowait(Effect(t.segment_id, t.version, entered, exited, stamp, publish, brands))

    # ---------------------------------------------------------------- effects

    async def _effects_loop(self) -> None:
        assert self.effects is not None
        while True:
            effect = await self.effects.get()
            delay = 0.5
            while True:
                try:
                    await self._effect(effect)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("segment %s: publishing %s changes failed; retrying", effect.segment_id,
                                len(effect.entered) + len(effect.exited), exc_info=True)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
            self.pending -= len(effect.entered) + len(effect.exited)

    async def _effect(self, e: Effect) -> None:
        now = datetime.now(UTC)
        if e.segment_id not in self.segments:
            return  # retired since: its members are gone and nobody listens for it
        if e.publish:
            events = [
                PitbossEvent(
                    event_id=uuid.uuid5(EVENT_NS, f"{e.segment_id}|{e.version}|{pid}|{type_}|{e.stamp}"),
                    type=type_, occurred_at=now, player_id=pid, brand=e.brands.get(pid) or "unknown",
                    payload={"segment_id": e.segment_id, "version": e.version, "region": self.region},
                )
                for type_, players in (("segment.entered", e.entered), ("segment.exited", e.exited))
                for pid in players
            ]
            # Confirms are awaited together: one round trip per chunk, not per event.
            for i in range(0, len(events), PUBLISH_CHUNK):
                await asyncio.gather(*(self.publisher.publish(ev) for ev in events[i : i + PUBLISH_CHUNK]))
        if e.entered:
            await self.store.add_members(e.segment_id, e.entered)
        if e.exited:
            await self.store.remove_members(e.segment_id, e.exited)
        key = REDIS_PREFIX + e.segment_id
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in range(0, len(e.entered), EFFECT_CHUNK):
                pipe.sadd(key, *[str(p) for p in e.entered[i : i + EFFECT_CHUNK]])
            for i in range(0, len(e.exited), EFFECT_CHUNK):
                pipe.srem(key, *[str(p) for p in e.exited[i : i + EFFECT_CHUNK]])
            await pipe.execute()
        t = self.segments.get(e.segment_id)
        if t is not None and time.monotonic() - t.sampled_at >= self.settings.segment_size_sample_seconds:
            await self._sample(t)

    async def _sample(self, t: Tracked) -> None:
        t.sampled_at = time.monotonic()
        await self.store.add_size(t.segment_id, datetime.now(UTC), self.region, int(np.count_nonzero(t.mask)),
                                  t.version)

    async def _replace_members(self, t: Tracked) -> None:
        """Store a first population: members table and Redis set made equal to the mask (no events)."""
        members = self.matrix.player_ids(np.flatnonzero(t.mask))
        stored = await self._stored_members(t.segment_id)
        current = set(members)
        await self.store.add_members(t.segment_id, sorted(current - stored, key=str))
        await self.store.remove_members(t.segment_id, sorted(stored - current, key=str))
        key = REDIS_PREFIX + t.segment_id
        building = key + ":building"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(building)
            for i in range(0, len(members), EFFECT_CHUNK):
                pipe.sadd(building, *[str(p) for p in members[i : i + EFFECT_CHUNK]])
            await pipe.execute()
        if members:
            await self.redis.rename(building, key)
        else:
            await self.redis.delete(key)

    async def _stored_members(self, segment_id: str) -> set[uuid.UUID]:
        """The stored members this engine answers for: players of other regions are theirs."""
        return {p for p in await self.store.all_members(segment_id) if self.matrix.row_of(p) is not None}

    async def _sync_definitions(self) -> None:
        """Follow segments materialised or retired through another region's engine."""
        for d in await self.store.definitions():
            t = self.segments.get(d.segment_id)
            if d.retired and t is not None and t.version <= d.version:
                self.segments.pop(d.segment_id, None)
            elif not d.retired and (t is None or t.version < d.version):
                await self._resume(d)

    # ---------------------------------------------------------------- segments

    async def _resume(self, d: Materialised) -> None:
        """Track a stored segment again: publish what changed against its stored members."""
        data = json.loads(d.rule)
        rule = parse_rule(data["rule"])
        t = Tracked(d.segment_id, d.version, rule, d.rule, data.get("brand"), np.zeros(0, dtype=np.bool_))
        now = datetime.now(UTC)
        t.mask = self._evaluate(t, now)
        stored = await self._stored_members(d.segment_id)
        current = set(self.matrix.player_ids(np.flatnonzero(t.mask)))
        self.segments[d.segment_id] = t
        self._emit(t, sorted(current - stored, key=str), sorted(stored - current, key=str),
                   f"resume:{now.isoformat()}")

    async def preview(self, rule: dict[str, Any], sample: int = 20, seed: int = 0,
                      brand: str | None = None) -> dict[str, Any]:
        """Count and a sample of the players matching `rule` now (of `brand` only, if given)."""
        await self.ready()
        parsed = parse_rule(rule)
        if not 0 <= sample <= 1000:
            raise InvalidInput("sample must be 0..1000", field="sample")
        started = time.perf_counter()
        t = Tracked("preview", 0, parsed, "", brand, np.zeros(0, dtype=np.bool_))
        mask = self._evaluate(t, datetime.now(UTC))
        rows = np.flatnonzero(mask)
        if rows.size > sample:
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=sample, replace=False))
        ms = (time.perf_counter() - started) * 1000
        return {"count": int(np.count_nonzero(mask)), "total": len(self.matrix),
                "sample": [str(p) for p in self.matrix.player_ids(rows)], "evaluated_ms": ms}

    async def materialise(self, segment_id: str, rule: dict[str, Any], version: int,
                          brand: str | None = None) -> dict[str, Any]:
        """Compute, store and track the segment's members. Idempotent by (segment_id, version); a newer
        version replaces the tracked one and publishes the difference; an older one is a Conflict."""
        await self.ready()
        parsed = parse_rule(rule)
        current = self.segments.get(segment_id)
        if current is not None and current.version > version:
            raise Conflict(f"segment {segment_id} is at version {current.version}", field="version")
        if current is not None and current.version == version:
            return {"count": int(np.count_nonzero(current.mask))}
        stored = {d.segment_id: d for d in await self.store.definitions()}.get(segment_id)
        if stored is not None and stored.version > version:
            raise Conflict(f"segment {segment_id} is at version {stored.version}", field="version")
        rule_json = json.dumps({"rule": rule, "brand": brand}, separators=(",", ":"))
        t = Tracked(segment_id, version, parsed, rule_json, brand, np.zeros(0, dtype=np.bool_))
        now = datetime.now(UTC)
        t.mask = self._evaluate(t, now)
        await self.store.save_definition(Materialised(segment_id, version, rule_json, False, now))
        if current is None:
            await self._replace_members(t)
            self.segments[segment_id] = t
        else:
            self._fit(current)
            old = current.mask
            self.segments[segment_id] = t
            self._emit(t, self.matrix.player_ids(np.flatnonzero(t.mask & ~old)),
                       self.matrix.player_ids(np.flatnonzero(old & ~t.mask)), f"version:{version}")
        await self._sample(t)
        return {"count": int(np.count_nonzero(t.mask))}

    async def retire(self, segment_id: str) -> None:
        """Stop tracking the segment and drop its members (no exited events: the segment is gone)."""
        await self.ready()
        t = self.segments.pop(segment_id, None)
        stored = {d.segment_id: d for d in await self.store.definitions()}.get(segment_id)
        if t is None and stored is None:
            raise NotFound(f"segment {segment_id} is not materialised", field="segment_id")
        d = stored or Materialised(segment_id, t.version if t else 0, t.rule_json if t else "{}", True,
                                   datetime.now(UTC))
        await self.store.save_definition(Materialised(segment_id, d.version, d.rule, True, datetime.now(UTC)))
        await self.store.remove_members(segment_id, await self.store.all_members(segment_id))
        await self.redis.delete(REDIS_PREFIX + segment_id)

    async def is_member(self, segment_id: str, player_id: str) -> bool:
        await self.ready()
        t = self.segments.get(segment_id)
        if t is None:
            raise NotFound(f"segment {segment_id} is not materialised", field="segment_id")
        r = self.matrix.row_of(uuid.UUID(str(player_id)))
        return r is not None and r < t.mask.size and bool(t.mask[r])

    async def rows(self, player_ids: list[str]) -> list[dict[str, Any]]:
        """Feature values of the players the engine holds (others are left out), for display."""
        await self.ready()
        out = []
        for p in player_ids[:1000]:
            pid = uuid.UUID(str(p))
            if self.matrix.is_live(pid):
                out.append({"player_id": str(pid), **self.matrix.get(pid).model_dump(mode="json")})
        return out

    async def stats(self) -> dict[str, Any]:
        await self.ready()
        n = len(self.matrix)
        return {
            "region": self.region,
            "players": n,
            "bytes_per_player": (self.matrix.nbytes() / self.matrix.capacity) if self.matrix.capacity else 0.0,
            "last_rebuild_at": self.last_rebuild_at.isoformat() if self.last_rebuild_at else None,
            "rebuild_seconds": self.rebuild_seconds,
            "segments": {sid: {"version": t.version, "count": int(np.count_nonzero(t.mask))}
                         for sid, t in self.segments.items()},
            "churn_model": dict(self.model_figures) if self.model_figures else None,
            "pending_updates": self.pending,
        }

    async def apply_rows(self, rows: list[dict[str, Any]]) -> None:
        """Rows pushed by the shards: {"player_id", "brand", "features" (bytes), "codes", "as_of" (ISO)}."""
        await self.ready()
        self._apply(rows)

    async def rebuild(self) -> dict[str, Any]:
        await self.ready()
        return await self._rebuild()

    async def retrain(self) -> dict[str, Any]:
        await self.ready()
        return await self._retrain()

    # ---------------------------------------------------------------- schedules

    async def _refresh(self) -> None:
        now = datetime.now(UTC)
        self._age(now)
        for t in list(self.segments.values()):
            self._fit(t)
            old = t.mask
            t.mask = self._evaluate(t, now)
            self._emit(t, self.matrix.player_ids(np.flatnonzero(t.mask & ~old)),
                       self.matrix.player_ids(np.flatnonzero(old & ~t.mask)), f"refresh:{now.isoformat()}")
            if time.monotonic() - t.sampled_at >= self.settings.segment_size_sample_seconds:
                await self._sample(t)

    def _age(self, now: datetime) -> None:
        """Zero the windowed counts of rows computed before their whole window started."""
        n = self.matrix.size
        if n == 0:
            return
        held_day = (self.as_of[:n] // 86_400_000).astype(np.int64)
        today = day_number(now.date())
        for days, names in WINDOWED.items():
            stale = held_day <= today - days
            stale &= self.matrix.live
            if not stale.any():
                continue
            for name in names:
                col = self.matrix._cols[name]
                spec = self.matrix.specs[name]
                if spec.kind == "float":
                    col[:n][stale] = np.nan  # a mean over no sessions is null
                else:
                    col[:n][stale & (col[:n] != _null(spec.dtype))] = 0

    async def _catch_up(self) -> None:
        await self._sync_definitions()
        scanned = await self._scan_all()
        ids, brands, blobs, codes, stamps = scanned.ids, scanned.brands, scanned.blobs, scanned.codes, scanned.as_of
        fresh = []
        for i, pid in enumerate(ids):
            r = self.matrix.row_of(pid)
            ms = int(utc(stamps[i]).timestamp() * 1000)
            if r is None or not self.matrix.is_live(pid) or self.as_of[r] < ms:
                fresh.append({"player_id": pid, "brand": brands[i], "features": blobs[i], "codes": codes[i],
                              "as_of": utc(stamps[i])})
        for i in range(0, len(fresh), 10_000):
            self._apply(fresh[i : i + 10_000])
            await asyncio.sleep(0)

    async def _load_model(self) -> None:
        row = await self.features.latest_model(self.region)
        if row is None:
            return
        with contextlib.suppress(Exception):
            self.model = churn.Model.from_dict(json.loads(row["model"]))
        self.model_figures = {"version": row["version"], "trained_at": row["trained_at"].isoformat(),
                              "auc": row["auc"], "auc_recency_baseline": row["auc_baseline"],
                              "n_train": row["n_train"], "n_held_out": row["n_held_out"]}

    async def _retrain_loop(self) -> None:
        period = self.settings.churn_retrain_seconds
        while True:
            trained = self.model.trained_at if self.model else None
            due = 0.0 if trained is None else period - (datetime.now(UTC) - trained).total_seconds()
            await asyncio.sleep(max(due, 5.0))
            try:
                await self._retrain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("churn retraining failed", exc_info=True)
            if self.model is None or (datetime.now(UTC) - self.model.trained_at).total_seconds() >= period:
                await asyncio.sleep(period)  # not enough history yet: try again next period

    async def _history(self, today: int, days: int) -> churn.History:
        index: dict[uuid.UUID, int] = {}
        cells: list[tuple[int, int, int, int, int, int]] = []
        gate = asyncio.Semaphore(SCAN_CONCURRENCY * 4)

        async def one(d: int, bucket: int) -> None:
            async with gate:
                async for page in self.features.activity(self.region, today - days + d, bucket):
                    for pid, sessions, bets, deposits, net_loss in page:
                        i = index.setdefault(pid, len(index))
                        cells.append((i, d, sessions or 0, bets or 0, deposits or 0, net_loss or 0))

        await asyncio.gather(*(one(d, b) for d in range(days) for b in range(self.settings.segment_feature_buckets)))
        n = len(index)
        arrays = [np.zeros((n, days), dtype=np.int64) for _ in range(4)]
        if cells:
            c = np.asarray(cells, dtype=np.int64)
            for k in range(4):
                arrays[k][c[:, 0], c[:, 1]] = c[:, 2 + k]
        ids = list(index)
        return churn.History(player_ids=ids, sessions=arrays[0], bets=arrays[1], deposits=arrays[2],
                             net_loss=arrays[3])

    async def _retrain(self) -> dict[str, Any]:
        """Train on the last 120 complete days, evaluate on held-out players, score every player."""
        now = datetime.now(UTC)
        today = day_number(now.date())
        days = churn.WINDOW + churn.HORIZON
        history = await self._history(today, days)
        version = (self.model.version if self.model else 0) + 1
        try:
            model, ev = churn.fit(history, churn.WINDOW, trained_at=now, version=version)
        except InvalidInput as exc:
            return {"trained": False, "reason": exc.detail, "players": history.n_players}
        await self.features.save_model(self.region, version, now, json.dumps(model.to_dict()), ev.auc_model,
                                       ev.auc_baseline, ev.n_train, ev.n_held_out)
        self.model = model
        self.model_figures = {"version": version, "trained_at": now.isoformat(), "auc": ev.auc_model,
                              "auc_recency_baseline": ev.auc_baseline, "n_train": ev.n_train,
                              "n_held_out": ev.n_held_out}
        # Score on the latest 90 days (the history's last WINDOW days: cutoff = its end).
        X = churn.features(history, days, churn.WINDOW)
        scores = churn.predict(model, X)
        recent = churn.at_risk(history, days)
        scores[~recent] = 1.0
        pids = list(history.player_ids)
        col = self.matrix._cols["churn_risk"]
        for pid, s in zip(pids, scores, strict=True):
            r = self.matrix.row_of(pid)
            if r is not None:
                col[r] = np.float32(s)
        await self.features.save_scores(self.region, version, zip(pids, (float(s) for s in scores), strict=True))
        await self._refresh()
        return {"trained": True, **self.model_figures, "churn_rate": ev.churn_rate, "players": history.n_players}


def _null(dtype: str) -> Any:
    from schemas.features import NULL_SENTINEL

    return np.dtype(dtype).type(NULL_SENTINEL[dtype])


def _plain(name: str, v: np.generic) -> Any:
    """A numpy scalar of a stored column as the FeatureRow value (None for the null sentinel)."""
    from schemas.features import CATALOGUE, NULL_SENTINEL

    spec = CATALOGUE[name]
    if spec.kind == "float":
        f = float(v)
        return None if f != f else f
    i = int(v)
    if i == NULL_SENTINEL[spec.dtype]:
        return None
    return bool(i) if spec.kind == "bool" else i

