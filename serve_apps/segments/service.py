"""Segmentation use cases, shared by the JSON API (`/segments/v1`) and the dashboard pages: each
checks the policy on what it touches, does the work, and audits every change and every export.

Storage: segment and experiment definitions in the tables of `schemas/cql/014_segments_defs.cql`
(`adapters/cassandra/segment_defs.py`); membership, size history and the feature matrix belong to the region's
segment engine (`actors/segments.py`, `adapters/cassandra/segments.py`), reached with a timeout.

Rules are checked here with `domain.segments.parse_rule` before anything is stored or sent to the
engine, so a bad rule is a 422 naming its part (`rule.all[2].value`) and leaves nothing behind.

Brands: a segment belongs to one brand, and only operators with that brand in scope see it. The
engine evaluates (previews, materialises) within the brand; member lists, samples and exports keep
only players of the segment's brand in the operator's scope (read from the player's own state, the
one profile, which also carries the personal data masked by role).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import hashlib
import importlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from actors.router import call
from adapters.cassandra.segment_defs import ACTIVE as ACTIVE  # re-exported for the pages
from adapters.cassandra.segment_defs import RETIRED, DefinitionStore
from adapters.cassandra.segments import SegmentStore
from adapters.cassandra.session import utc
from adapters.settings import Settings
from domain import ab
from domain.errors import Conflict, InvalidInput, NotFound, Unavailable
from domain.policy import Resource
from domain.segments import parse_rule
from schemas.experiments import BUCKETS, HOLDOUT, Experiment
from schemas.features import FEATURES
from schemas.segment_api import (
    AssignmentPublic,
    ExperimentCreate,
    ExperimentPublic,
    ExperimentUpdate,
    FeaturePublic,
    MemberRow,
    PreviewPublic,
    SegmentCreate,
    SegmentPublic,
    SegmentUpdate,
    SizePoint,
    SplitPublic,
)
from schemas.segments import OPS
from serve_apps.backoffice import auditing
from serve_apps.backoffice.deps import Operator, authorize
from serve_apps.backoffice.runtime import BackOffice

log = logging.getLogger("pitboss.segments")

MAX_PAGE = 500
PROFILE_FIELDS = ("email", "first_name", "last_name", "phone", "country", "language")
DEFAULT_FEATURES = ("country", "lifecycle_stage", "deposits_sum_30d", "last_active_at", "churn_risk")
_READ_CONCURRENCY = 32
_EXPORT_PAGE = 500
_ORDERED = ("eq", "ne", "lt", "le", "gt", "ge", "between", "is_null")
_OPS_BY_KIND: dict[str, tuple[str, ...]] = {
    "int": (*_ORDERED[:-1], "in", "is_null"),
    "float": _ORDERED,
    "bool": ("eq", "ne", "is_null"),
    "category": ("eq", "ne", "in", "is_null"),
    "code": ("eq", "ne", "in", "is_null"),
    "timestamp": ("within", "not_within", "lt", "le", "gt", "ge", "between", "is_null"),
}
assert all(op in OPS for ops in _OPS_BY_KIND.values() for op in ops)


def _ms(value: datetime) -> datetime:
    """Cassandra keeps milliseconds: what we compare must be what is stored."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def encode_cursor(at: datetime, key: str) -> str:
    return base64.urlsafe_b64encode(f"{int(at.timestamp() * 1000)}|{key}".encode()).decode()


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        ms, key = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromtimestamp(int(ms) / 1000, UTC), key
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("not a cursor this API handed out", field="cursor") from None


class Engine:
    """The region's segment engine actor, reached with a timeout; Ray failures become 503."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handle: Any = None

    async def handle(self) -> Any:
        if self._handle is None:
            try:
                module = importlib.import_module("actors.segments")
            except ImportError:
                raise Unavailable("the segment engine is not deployed in this region") from None
            self._handle = await asyncio.to_thread(module.ensure_segment_engine, self.settings)
        return self._handle

    async def ask(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        h = await self.handle()
        try:
            return await call(getattr(h, method).remote(*args), timeout or self.settings.segments_call_timeout_seconds)
        except Unavailable:
            raise Unavailable("the segment engine did not answer; retry in a moment") from None


@dataclass
class Runtime:
    defs: DefinitionStore
    engine: Engine
    members: SegmentStore


_runtimes: dict[int, Runtime] = {}
_lock = asyncio.Lock()


async def runtime(bo: BackOffice) -> Runtime:
    """One per replica, built on first use (the prepares block, so off the event loop)."""
    found = _runtimes.get(id(bo))
    if found is not None:
        return found
    async with _lock:
        found = _runtimes.get(id(bo))
        if found is None:
            defs = await asyncio.to_thread(DefinitionStore, bo.session)
            members = await asyncio.to_thread(SegmentStore, bo.session)
            found = Runtime(defs, Engine(bo.settings), members)
            _runtimes[id(bo)] = found
    return found


# ---------------------------------------------------------------------------- features and rules


def features() -> list[FeaturePublic]:
    return [
        FeaturePublic(name=f.name, kind=f.kind, unit=f.unit, description=f.description,
                      vocabulary=list(f.vocabulary), ops=list(_OPS_BY_KIND[f.kind]))
        for f in FEATURES
    ]


def check(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule, unchanged, once `parse_rule` accepted it (InvalidInput names the bad part)."""
    parse_rule(rule)
    return rule


# A read page must not hang on an engine that is rebuilding: the stored count is shown meanwhile.
_LIVE_COUNT_TIMEOUT = 2.0


async def live_counts(rt: Runtime) -> dict[str, int]:
    """Current member counts of the segments the region's engine tracks. Size samples are written
    at most once per PITBOSS_SEGMENT_SIZE_SAMPLE_SECONDS, so they cannot show a size changing as
    events arrive; the engine's own count can. Empty when the engine does not answer quickly."""
    try:
        stats = await rt.engine.ask("stats", timeout=_LIVE_COUNT_TIMEOUT)
    except Unavailable:
        return {}
    tracked = stats.get("segments") or {}
    return {str(sid): int(v["count"]) for sid, v in tracked.items() if isinstance(v, dict) and "count" in v}


def _with_live(row: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    live = counts.get(str(row["segment_id"]))
    return {**row, "last_count": live} if live is not None and row["status"] == ACTIVE else row


def segment_resource(row: dict[str, Any]) -> Resource:
    return Resource(kind="segment", id=str(row["segment_id"]), brand=row["brand"])


def public(row: dict[str, Any]) -> SegmentPublic:
    return SegmentPublic(
        segment_id=row["segment_id"],
        brand=row["brand"],
        name=row["name"],
        description=row["description"] or "",
        rule=json.loads(row["rule"]),
        version=row["version"],
        status=row["status"],
        count=row.get("last_count"),
        created_by_name=row.get("created_by_name"),
        created_at=utc(row["created_at"]) or datetime.now(UTC),
        updated_by_name=row.get("updated_by_name"),
        updated_at=utc(row.get("updated_at")),
    )


# ---------------------------------------------------------------------------- people (PII by role)


async def _state(bo: BackOffice, player_id: UUID, limit: asyncio.Semaphore) -> dict[str, Any] | None:
    assert bo.players is not None
    async with limit:
        try:
            return await bo.players.read(player_id, None)
        except NotFound:
            return None


async def people(
    bo: BackOffice, op: Operator, permission: str, brand: str, player_ids: Sequence[UUID], feature_names: Sequence[str],
    engine: Engine,
) -> list[MemberRow]:
    """Members as this operator may see them: players of `brand` inside the operator's scope, with
    their features and their personal data masked unless the operator holds player.pii.read on
    that player. Players of other brands or out of scope are left out."""
    if not player_ids:
        return []
    limit = asyncio.Semaphore(_READ_CONCURRENCY)
    states, rows = await asyncio.gather(
        asyncio.gather(*(_state(bo, pid, limit) for pid in player_ids)),
        engine.ask("rows", [str(p) for p in player_ids]) if feature_names else _none(len(player_ids)),
    )
    rows = list(rows or [])
    if rows and all(isinstance(r, dict) and "player_id" in r for r in rows):
        # Matched by id, not position: the engine leaves out players it does not hold.
        by_id = {str(r["player_id"]): r for r in rows}
        rows = [by_id.get(str(p)) for p in player_ids]
    rows += [None] * (len(player_ids) - len(rows))
    out: list[MemberRow] = []
    for pid, state, row in zip(player_ids, states, rows, strict=False):
        if state is None or state.get("brand") != brand:
            continue
        profile = state.get("profile") or {}
        resource = Resource(kind="player", id=str(pid), brand=state["brand"], jurisdiction=profile.get("country"))
        decision = bo.policy.decide(op.subject, permission, resource)
        if not decision.allowed:
            continue
        shown = bo.policy.mask(op.subject, {k: profile.get(k) for k in PROFILE_FIELDS}, resource)
        # segment.* permissions are not marked shows_pii, so their decision lists no masked fields:
        # whether the profile is masked is the PII permission's own decision on this player.
        clear = bo.policy.decide(op.subject, bo.policy.pii_permission, resource).allowed
        masked_fields = [] if clear else sorted(bo.policy.pii_fields & set(PROFILE_FIELDS))
        feats = {k: _plain(row.get(k)) for k in feature_names} if isinstance(row, dict) else {}
        out.append(MemberRow(player_id=pid, brand=state["brand"], features=feats, profile=shown,
                             masked_fields=masked_fields))
    return out


async def _none(n: int) -> list[None]:
    return [None] * n


def _plain(value: Any) -> Any:
    """A JSON-friendly feature value (numpy scalars and datetimes from the engine)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def feature_list(text: str | None) -> list[str]:
    if text is None:
        return list(DEFAULT_FEATURES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = {f.name for f in FEATURES}
    for i, n in enumerate(names):
        if n not in known:
            raise InvalidInput(f"unknown feature {n!r}", field=f"features[{i}]")
    return names[:20]


# ---------------------------------------------------------------------------- segments


async def preview(
    bo: BackOffice, op: Operator, rule: dict[str, Any], sample: int, seed: int, brand: str | None
) -> PreviewPublic:
    check(rule)
    if brand is not None:
        await authorize(bo, op, "segment.read", Resource(kind="segment", brand=brand))
    rt = await runtime(bo)
    started = time.perf_counter()
    answer = await rt.engine.ask("preview", rule, sample, seed, brand)
    ids = [UUID(str(p)) for p in answer.get("sample", [])]
    shown = await people(bo, op, "segment.read", brand, ids, DEFAULT_FEATURES, rt.engine) if brand else []
    return PreviewPublic(
        count=int(answer["count"]),
        total=int(answer["total"]),
        sample=shown,
        evaluated_ms=float(answer.get("evaluated_ms", (time.perf_counter() - started) * 1000)),
    )


async def _materialise(bo: BackOffice, rt: Runtime, row: dict[str, Any]) -> dict[str, Any]:
    answer = await rt.engine.ask("materialise", str(row["segment_id"]), json.loads(row["rule"]), row["version"],
                                 row["brand"])
    count = int(answer["count"])
    await rt.defs.set_count(row["segment_id"], count)
    return {**row, "last_count": count}


async def create_segment(bo: BackOffice, op: Operator, data: SegmentCreate) -> tuple[SegmentPublic, bool]:
    """(the segment, whether this call created it). A retry with the same id and body returns the
    first answer; the same id with another body is a 409."""
    await authorize(bo, op, "segment.write", Resource(kind="segment", id=str(data.segment_id), brand=data.brand))
    check(data.rule)
    rt = await runtime(bo)
    now = _ms(datetime.now(UTC))
    body = data.model_dump(mode="json")
    row = {
        "segment_id": data.segment_id, "brand": data.brand, "name": data.name, "description": data.description,
        "rule": json.dumps(data.rule, separators=(",", ":")), "fingerprint": _fingerprint(body),
        "created_by": op.id, "created_by_name": op.name, "created_at": now,
    }
    stored, created = await rt.defs.insert_segment(row)
    if not created and stored["fingerprint"] != row["fingerprint"]:
        raise Conflict("segment_id already used for another segment", field="segment_id")
    await rt.defs.index_segment(utc(stored["created_at"]) or now, data.segment_id, data.brand)
    if stored["status"] == ACTIVE:
        # On a retry too: a first attempt that stored the definition and then lost the engine
        # is completed by the retry.
        stored = await _materialise(bo, rt, stored)
    if created:
        await auditing.record(bo, op, "segment.create", target_kind="segment", target_id=str(data.segment_id),
                              brand=data.brand, after={**body, "count": stored.get("last_count")})
    return public(stored), created


async def get_segment(
    bo: BackOffice, op: Operator, segment_id: UUID, permission: str = "segment.read"
) -> SegmentPublic:
    rt = await runtime(bo)
    row = await rt.defs.segment(segment_id)
    await authorize(bo, op, permission, segment_resource(row))
    return public(_with_live(row, await live_counts(rt)))


async def list_segments(
    bo: BackOffice, op: Operator, cursor: str | None, limit: int, brand: str | None = None
) -> tuple[list[SegmentPublic], str | None]:
    keys = await _scan(bo, op, "segment", cursor, limit, brand, "segment.read")
    rt = await runtime(bo)
    rows = await asyncio.gather(*(rt.defs.segment(UUID(k)) for k, _ in keys[0]))
    counts = await live_counts(rt) if rows else {}
    return [public(_with_live(r, counts)) for r in rows], keys[1]


async def _scan(
    bo: BackOffice, op: Operator, kind: str, cursor: str | None, limit: int, brand: str | None, permission: str
) -> tuple[list[tuple[str, datetime]], str | None]:
    """Keys of the index newest first, in the operator's brands, one page."""
    rt = await runtime(bo)
    limit = max(1, min(limit, MAX_PAGE))
    after = decode_cursor(cursor)
    key_col = "segment_id" if kind == "segment" else "experiment_key"
    out: list[tuple[str, datetime]] = []
    fetch = limit + 1
    while True:
        rows = await rt.defs.index_page(kind, after, fetch)
        progressed = False
        for r in rows:
            at, key = utc(r["created_at"]) or datetime.now(UTC), str(r[key_col])
            if after is not None and at == after[0] and key <= after[1]:
                continue  # the cursor's own row, and those listed before it at the same instant
            progressed = True
            if brand is not None and r["brand"] != brand:
                continue
            if not bo.policy.allowed(op.subject, permission, Resource(kind=kind, brand=r["brand"])):
                continue
            out.append((key, at))
            if len(out) > limit:
                last_key, last_at = out[limit - 1]
                return out[:limit], encode_cursor(last_at, last_key)
        if len(rows) < fetch or not progressed:
            return out, None
        last = rows[-1]
        after = (utc(last["created_at"]) or datetime.now(UTC), str(last[key_col]))


async def update_segment(bo: BackOffice, op: Operator, segment_id: UUID, data: SegmentUpdate) -> SegmentPublic:
    rt = await runtime(bo)
    before = await rt.defs.segment(segment_id)
    await authorize(bo, op, "segment.write", segment_resource(before))
    if before["status"] != ACTIVE:
        raise Conflict("the segment is retired; create a new one", field="segment_id")
    if data.rule is not None:
        check(data.rule)
    if before["version"] != data.version:
        raise Conflict(f"the segment is at version {before['version']}, not {data.version}: reload and retry",
                       field="version", extra={"current_version": before["version"]})
    rule_text = json.dumps(data.rule, separators=(",", ":")) if data.rule is not None else before["rule"]
    # Only a new rule is a new version (membership changes); a new name or description is not.
    new_version = before["version"] + (1 if rule_text != before["rule"] else 0)
    values = {
        "name": data.name if data.name is not None else before["name"],
        "description": data.description if data.description is not None else before["description"],
        "rule": rule_text, "version": new_version, "status": ACTIVE,
        "updated_by_name": op.name, "updated_at": _ms(datetime.now(UTC)),
    }
    if not await rt.defs.update_segment(segment_id, data.version, values):
        current = await rt.defs.segment(segment_id)
        raise Conflict(f"the segment changed meanwhile (now version {current['version']}): reload and retry",
                       field="version", extra={"current_version": current["version"]})
    after = await rt.defs.segment(segment_id)
    if new_version != before["version"]:
        after = await _materialise(bo, rt, after)
    await auditing.record(
        bo, op, "segment.update", target_kind="segment", target_id=str(segment_id), brand=before["brand"],
        before=_audit_view(before), after=_audit_view(after),
    )
    return public(after)


def _audit_view(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("name", "description", "version", "status", "last_count")} | {
        "rule": json.loads(row["rule"])
    }


async def retire_segment(bo: BackOffice, op: Operator, segment_id: UUID) -> SegmentPublic:
    rt = await runtime(bo)
    before = await rt.defs.segment(segment_id)
    await authorize(bo, op, "segment.write", segment_resource(before))
    if before["status"] == RETIRED:
        return public(before)
    values = {**before, "status": RETIRED, "updated_by_name": op.name, "updated_at": _ms(datetime.now(UTC))}
    if not await rt.defs.update_segment(segment_id, before["version"], values):
        raise Conflict("the segment changed meanwhile: reload and retry", field="version")
    with contextlib.suppress(NotFound):  # never materialised (the engine was down at creation): nothing to drop
        await rt.engine.ask("retire", str(segment_id))
    after = await rt.defs.segment(segment_id)
    await auditing.record(bo, op, "segment.retire", target_kind="segment", target_id=str(segment_id),
                          brand=before["brand"], before=_audit_view(before), after=_audit_view(after))
    return public(after)


async def _active(bo: BackOffice, op: Operator, segment_id: UUID, permission: str) -> tuple[Runtime, dict[str, Any]]:
    rt = await runtime(bo)
    row = await rt.defs.segment(segment_id)
    await authorize(bo, op, permission, segment_resource(row))
    if row["status"] != ACTIVE:
        raise Conflict("the segment is retired: it has no members", field="segment_id")
    return rt, row


async def members(
    bo: BackOffice, op: Operator, segment_id: UUID, cursor: str | None, limit: int, feature_names: Sequence[str]
) -> tuple[list[MemberRow], str | None]:
    rt, row = await _active(bo, op, segment_id, "segment.read")
    ids, nxt = await rt.members.members(str(segment_id), cursor, max(1, min(limit, MAX_PAGE)))
    shown = await people(bo, op, "segment.read", row["brand"], [UUID(str(p)) for p in ids], feature_names, rt.engine)
    clear = [m for m in shown if not m.masked_fields and any(m.profile.get(k) for k in ("email", "phone"))]
    if clear:
        # Personal data shown in clear is on the record, as for a player's page.
        await auditing.record(bo, op, "segment.members", target_kind="segment", target_id=str(segment_id),
                              brand=row["brand"], after={"players_in_clear": len(clear)})
    return shown, nxt


async def sizes(bo: BackOffice, op: Operator, segment_id: UUID, since: datetime | None) -> list[SizePoint]:
    rt = await runtime(bo)
    row = await rt.defs.segment(segment_id)
    await authorize(bo, op, "segment.read", segment_resource(row))
    start = since or datetime.now(UTC) - timedelta(days=30)
    points = await rt.members.sizes(str(segment_id), start)
    return [SizePoint(at=utc(at) or start, count=int(n)) for at, n in points]


async def export_csv(
    bo: BackOffice, op: Operator, segment_id: UUID, feature_names: Sequence[str]
) -> AsyncIterator[str]:
    """Checks before the first byte, then a generator of CSV lines. The export is audited with the
    rows written and whether personal data was masked, when it ends (also if the client left)."""
    rt, row = await _active(bo, op, segment_id, "segment.export")
    limit = bo.settings.segments_export_max_rows
    if (row.get("last_count") or 0) > limit:
        raise InvalidInput(f"the segment has more than {limit} members: narrow it before exporting",
                           field="segment_id")

    async def lines() -> AsyncIterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)

        def line(values: Sequence[Any]) -> str:
            buf.seek(0)
            buf.truncate()
            writer.writerow(["" if v is None else _cell(v) for v in values])
            return buf.getvalue()

        written, masked = 0, False
        outcome: auditing.Outcome = "failed"
        try:
            yield line(["player_id", "brand", *PROFILE_FIELDS, *feature_names])
            cursor: str | None = None
            while written < limit:
                ids, cursor = await rt.members.members(str(segment_id), cursor, _EXPORT_PAGE)
                shown = await people(bo, op, "segment.export", row["brand"], [UUID(str(p)) for p in ids],
                                     feature_names, rt.engine)
                for m in shown[: limit - written]:
                    masked = masked or bool(m.masked_fields)
                    yield line([m.player_id, m.brand, *(m.profile.get(k) for k in PROFILE_FIELDS),
                                *(m.features.get(k) for k in feature_names)])
                    written += 1
                if not cursor:
                    break
            outcome = "succeeded"
        finally:
            await asyncio.shield(auditing.record(
                bo, op, "segment.export", target_kind="segment", target_id=str(segment_id), brand=row["brand"],
                after={"rows": written, "pii_masked": masked or not _holds_pii(bo, op), "features": list(feature_names),
                       "version": row["version"]},
                outcome=outcome,
            ))

    return lines()


def _cell(value: Any) -> str:
    text = str(value)
    # A cell starting with = + - @ is a formula in a spreadsheet: quote it (CSV injection).
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _holds_pii(bo: BackOffice, op: Operator) -> bool:
    return bo.policy.pii_permission in bo.policy.permissions_for(op.subject.roles)


# ---------------------------------------------------------------------------- experiments


def _experiment(row: dict[str, Any]) -> Experiment:
    return Experiment.model_validate_json(row["definition"])


def experiment_public(row: dict[str, Any], now: datetime | None = None) -> ExperimentPublic:
    exp = _experiment(row)
    return ExperimentPublic(
        experiment_key=exp.experiment_key, segment_id=row["segment_id"], brand=row["brand"],
        variants=list(exp.variants), holdout_bp=exp.holdout_bp, starts_at=exp.starts_at, ends_at=exp.ends_at,
        version=row["version"], running=ab.is_running(exp, now or datetime.now(UTC)),
        created_by_name=row.get("created_by_name"), created_at=utc(row["created_at"]) or datetime.now(UTC),
    )


def _exp_resource(row: dict[str, Any]) -> Resource:
    return Resource(kind="segment", id=str(row["segment_id"]), brand=row["brand"])


async def create_experiment(bo: BackOffice, op: Operator, data: ExperimentCreate) -> tuple[ExperimentPublic, bool]:
    rt = await runtime(bo)
    segment = await rt.defs.segment(data.segment_id)
    await authorize(bo, op, "segment.write", segment_resource(segment))
    if segment["status"] != ACTIVE:
        raise Conflict("the segment is retired", field="segment_id")
    exp = Experiment.model_validate(data.model_dump(exclude={"segment_id"}))
    now = _ms(datetime.now(UTC))
    body = data.model_dump(mode="json")
    row = {
        "experiment_key": exp.experiment_key, "brand": segment["brand"], "segment_id": data.segment_id,
        "definition": exp.model_dump_json(), "fingerprint": _fingerprint(body), "created_by": op.id,
        "created_by_name": op.name, "created_at": now,
    }
    stored, created = await rt.defs.insert_experiment(row)
    if not created and stored["fingerprint"] != row["fingerprint"]:
        raise Conflict(f"experiment key {exp.experiment_key!r} is already used", field="experiment_key")
    await rt.defs.index_experiment(utc(stored["created_at"]) or now, exp.experiment_key, segment["brand"])
    if created:
        await auditing.record(bo, op, "experiment.create", target_kind="experiment", target_id=exp.experiment_key,
                              brand=segment["brand"], after=body)
    return experiment_public(stored), created


async def get_experiment(bo: BackOffice, op: Operator, key: str) -> ExperimentPublic:
    rt = await runtime(bo)
    row = await rt.defs.experiment(key)
    await authorize(bo, op, "segment.read", _exp_resource(row))
    return experiment_public(row)


async def list_experiments(
    bo: BackOffice, op: Operator, cursor: str | None, limit: int
) -> tuple[list[ExperimentPublic], str | None]:
    keys, nxt = await _scan(bo, op, "experiment", cursor, limit, None, "segment.read")
    rt = await runtime(bo)
    rows = await asyncio.gather(*(rt.defs.experiment(k) for k, _ in keys))
    return [experiment_public(r) for r in rows], nxt


async def update_experiment(bo: BackOffice, op: Operator, key: str, data: ExperimentUpdate) -> ExperimentPublic:
    """New weights, holdout or end: players already assigned keep their group (sticky)."""
    rt = await runtime(bo)
    row = await rt.defs.experiment(key)
    await authorize(bo, op, "segment.write", _exp_resource(row))
    if row["version"] != data.version:
        raise Conflict(f"the experiment is at version {row['version']}, not {data.version}: reload and retry",
                       field="version", extra={"current_version": row["version"]})
    old = _experiment(row)
    merged = old.model_dump()
    for name in ("variants", "holdout_bp", "ends_at"):
        if name in data.model_fields_set:
            value = getattr(data, name)
            merged[name] = [v.model_dump() for v in value] if name == "variants" and value is not None else value
    try:
        new = Experiment.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{field}: {first['msg']}", field=field) from None
    if not await rt.defs.update_experiment(key, data.version, new.model_dump_json(), _ms(datetime.now(UTC))):
        raise Conflict("the experiment changed meanwhile: reload and retry", field="version")
    after = await rt.defs.experiment(key)
    await auditing.record(bo, op, "experiment.update", target_kind="experiment", target_id=key, brand=row["brand"],
                          before=old.model_dump(mode="json"), after=new.model_dump(mode="json"))
    return experiment_public(after)


async def assignment(bo: BackOffice, key: str, player_id: UUID, *, brand: str | None,
                     op: Operator | None = None) -> AssignmentPublic:
    """The player's group, sticky: a stored assignment is returned whatever the weights are now;
    a player never assigned is assigned (if the experiment runs and the player is in its segment)
    and the assignment stored IF NOT EXISTS, so two concurrent first calls agree. `brand`: the
    calling brand of a service key (another brand's experiment is not found)."""
    rt = await runtime(bo)
    row = await rt.defs.experiment(key)
    if brand is not None and row["brand"] != brand:
        raise NotFound(f"no experiment {key!r}", field="experiment_key")
    if op is not None:
        await authorize(bo, op, "segment.read", _exp_resource(row))
    stored = await rt.defs.assignment(key, player_id)
    if stored is None:
        exp = _experiment(row)
        now = _ms(datetime.now(UTC))
        if not ab.is_running(exp, now):
            raise Conflict(f"experiment {key!r} is not running: it assigns no new players", field="experiment_key")
        member = await rt.members.is_member(str(row["segment_id"]), player_id)
        if not member:
            raise NotFound(f"player {player_id} is not in the experiment's segment", field="player_id")
        fresh = ab.assign(exp, player_id)
        first = await rt.defs.claim(key, player_id, fresh, row["version"], now)
        stored = await rt.defs.assignment(key, player_id)
        if stored is None:  # pragma: no cover - the claim or a concurrent one wrote it
            raise Unavailable("the assignment was not readable yet; retry")
    else:
        first = False
    return AssignmentPublic(
        experiment_key=key, player_id=player_id, variant=stored["variant"], bucket=stored["bucket"],
        in_holdout=bool(stored["in_holdout"]), assigned_at=utc(stored["assigned_at"]) or datetime.now(UTC),
        first=first,
    )


async def split(bo: BackOffice, op: Operator, key: str) -> SplitPublic:
    """Group sizes over the segment's current members, by the experiment's current weights
    (`domain.ab.assign_many`). Players assigned earlier under other weights keep their stored group."""
    rt = await runtime(bo)
    row = await rt.defs.experiment(key)
    await authorize(bo, op, "segment.read", _exp_resource(row))
    exp = _experiment(row)
    cap = bo.settings.segments_split_max_members
    ids = await rt.members.all_members(str(row["segment_id"]))
    if len(ids) > cap:
        raise InvalidInput(f"the segment has more than {cap} members", field="experiment_key")
    counts = {v.name: 0 for v in exp.variants}
    holdout = 0
    if ids:
        idx = ab.assign_many(exp, ab.uuids_to_array(ids))
        holdout = int((idx == ab.HOLDOUT_INDEX).sum())
        for i, v in enumerate(exp.variants):
            counts[v.name] = int((idx == i).sum())
    bounds = exp.bounds
    share = {HOLDOUT: exp.holdout_bp / BUCKETS} | {
        v.name: (bounds[i + 1] - bounds[i]) / BUCKETS for i, v in enumerate(exp.variants)
    }
    return SplitPublic(experiment_key=key, segment_id=row["segment_id"], members=len(ids), holdout=holdout,
                       counts=counts, expected_share=share)


async def in_holdout(bo: BackOffice, key: str, player_id: UUID) -> bool:
    """For campaigns: whether the player is held out (stored assignment, or the fresh one)."""
    rt = await runtime(bo)
    stored = await rt.defs.assignment(key, player_id)
    if stored is not None:
        return bool(stored["in_holdout"])
    return ab.assign(_experiment(await rt.defs.experiment(key)), player_id).in_holdout

