"""Help-desk SLA clocks in Cassandra (tables in schemas/cql/009_helpdesk_sla.cql, rules in domain/sla.py).

What is stored and why:

- `ticket_sla_events`: every SLA event of a ticket, keyed by (time, ticket version * 64 + place in
  its command, event id). The clock is always *rebuilt* from these rows, never patched in place,
  so two writers recording consecutive ticket versions in either order end with the same clock,
  and a retry (same ids, same keys) changes nothing.
- `ticket_sla`: the rebuilt clock (JSON) and what chooses its policy (priority and category of the
  newest ticket version seen), written by compare-and-set on a row version so a slow writer never
  puts an older clock back. Status reads only this row.
- `ticket_sla_open`: the scheduler's index of unsolved clocks in OPEN_BUCKETS partitions, with the
  clock (without its event ids) so a scan reads nothing else. An index may lag: the scheduler
  re-reads `ticket_sla` before it fires anything.
- `ticket_sla_changes` (017): the open index's change feed. Each index write or delete is written
  again, in the same batch, under the writer's 10-second slot with the clock version, so the
  scheduler reads what changed since its last scan (`changes`) instead of every open clock
  (`open_subjects`), which it reads only every few minutes to repair a lost change row.
- `ticket_autoclose`: solved tickets by UTC solve day, for the auto-close pass.
- `ticket_sla_fired`: warnings and breaches already fired (one per ticket, target, cycle, kind).

Refused events. An event the clock refuses (it can only happen when an earlier event was lost,
e.g. a record call that failed after its ticket was committed) is skipped and logged; the clock
goes on from the events it could apply. A ticket's `started` event is written again from the
ticket itself (same key as the original) when a ticket has no clock yet, so a lost first call
does not leave the ticket without a clock.

Usage by the ticket service, after every committed command:

    after, events = tickets.apply(before, command, now)
    ... commit ...
    await clocks.record(after, tickets.sla_events(events))
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import abatch, aexecute, applied, utc
from domain import sla
from domain.errors import Conflict, InvalidInput, Unavailable
from domain.sla import SlaClock, SlaStatus, SlaSubject, TargetClock
from domain.tickets import Ticket
from schemas.helpdesk_sla import SlaEvent, SlaPolicy, SlaPolicySet

log = logging.getLogger("pitboss.helpdesk.sla")

OPEN_BUCKETS = 32  # fixed: changing it needs the open index rebuilt (every ticket re-recorded)
CHANGE_SLOT_SECONDS = 10  # fixed: the change feed's partitions (ticket_sla_changes.slot)
_FORGOTTEN = 2**31 - 1  # the change version of a dropped index row: nothing later can undo it
_CONCURRENCY = 16
_CAS_ATTEMPTS = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VERSIONED_ID = re.compile(r"^[0-9a-fA-F-]{36}:(\d{1,9}):")
FiredKind = Literal["warning", "breach"]
_Write = tuple[Any, tuple[Any, ...]]  # a prepared statement and its parameters
# Per ticket, its index row as last read and the OpenClock made of it.
_Decoded = dict[UUID, tuple[tuple[str, str, str, str, int], "OpenClock"]]


# ---------------------------------------------------------------------------- pure helpers


def change_slot(epoch_seconds: float) -> int:
    """The change-feed partition of a write made at `epoch_seconds` (the writer's clock)."""
    return int(epoch_seconds // CHANGE_SLOT_SECONDS)


def bucket_of(ticket_id: UUID) -> int:
    """The open-index bucket of a ticket: a hash, so time-ordered (uuid1) ids spread evenly too."""
    return int.from_bytes(hashlib.blake2b(ticket_id.bytes, digest_size=4).digest(), "big") % OPEN_BUCKETS


def event_seq(event: SlaEvent, ticket_version: int, index: int) -> int:
    """Order of an event among events of the same instant: its ticket version (from a
    `<ticket_id>:<version>:<kind>` id, else the ticket's), then its place in the command."""
    m = _VERSIONED_ID.match(event.event_id)
    version = int(m.group(1)) if m else ticket_version
    return min(version, 2**25 - 1) * 64 + min(index, 63)


def started_event(ticket: Ticket) -> SlaEvent:
    """The `started` event `domain.tickets` emitted when the ticket was created (same id and time)."""
    return SlaEvent(event_id=f"{ticket.ticket_id}:1:started", kind="started", at=ticket.created_at)


def rebuild(events: Iterable[SlaEvent]) -> tuple[SlaClock, list[tuple[SlaEvent, str]]]:
    """The clock after `events` in order, skipping each event the clock refuses (with why)."""
    clock = SlaClock()
    refused: list[tuple[SlaEvent, str]] = []
    for event in events:
        try:
            clock = sla.apply(clock, event)
        except (Conflict, InvalidInput) as exc:
            refused.append((event, exc.detail))
    return clock, refused


def _rebuilt(tid: UUID, events: Iterable[SlaEvent]) -> SlaClock:
    """`rebuild`, logging each event the clock refused (a lost earlier event; see the module docstring)."""
    clock, refused = rebuild(events)
    for event, why in refused:
        log.warning("ticket %s: SLA event %s skipped: %s", tid, event.event_id, why)
    return clock


def _sec(t: datetime | None) -> int | None:
    return None if t is None else int((t - _EPOCH).total_seconds())


def _time(s: int | None) -> datetime | None:
    return None if s is None else _EPOCH + timedelta(seconds=s)


def _target_json(t: TargetClock) -> dict[str, Any]:
    return {
        "spans": [[_sec(a), _sec(b)] for a, b in t.spans],
        "live": t.live, "met_at": _sec(t.met_at), "stopped_at": _sec(t.stopped_at), "cycle": t.cycle,
    }


def _target(d: dict[str, Any]) -> TargetClock:
    spans = tuple((cast(datetime, _time(a)), _time(b)) for a, b in d["spans"])
    return TargetClock(spans=spans, live=bool(d["live"]), met_at=_time(d["met_at"]),
                       stopped_at=_time(d["stopped_at"]), cycle=int(d["cycle"]))


def clock_to_json(clock: SlaClock, with_ids: bool = True) -> str:
    """A clock as compact JSON. Instants are whole UTC seconds (the clock keeps no finer ones).
    Without ids the text is smaller (the scheduler's index), and only good for status."""
    data: dict[str, Any] = {
        "state": clock.state, "last_at": _sec(clock.last_at),
        "first_response": _target_json(clock.first_response), "next_response": _target_json(clock.next_response),
        "resolution": _target_json(clock.resolution),
    }
    if with_ids:
        data["event_ids"] = sorted(clock.event_ids)
    return json.dumps(data, separators=(",", ":"))


def clock_from_json(text: str) -> SlaClock:
    d = json.loads(text)
    return SlaClock(
        state=d["state"], first_response=_target(d["first_response"]), next_response=_target(d["next_response"]),
        resolution=_target(d["resolution"]), last_at=_time(d["last_at"]), event_ids=frozenset(d.get("event_ids", ())),
    )


def _day(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d")


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class StoredClock:
    """A `ticket_sla` row."""

    ticket_id: UUID
    brand: str
    status: str
    priority: str
    category: str
    policy_id: str | None
    calendar_id: str | None
    clock: SlaClock
    clock_json: str
    events: int
    ticket_version: int
    solved_at: datetime | None
    version: int


@dataclass(frozen=True, slots=True)
class OpenClock:
    """A row of the scheduler's index: an unsolved ticket's clock."""

    ticket_id: UUID
    brand: str
    priority: str
    category: str
    clock: SlaClock
    version: int


@dataclass(frozen=True, slots=True)
class OpenChange:
    """A row of the change feed: the ticket's index row as written at `version` (None: deleted)."""

    ticket_id: UUID
    version: int
    clock: OpenClock | None


@dataclass(frozen=True, slots=True)
class Fired:
    """A warning or breach already claimed for (ticket, target, cycle, kind)."""

    ticket_id: UUID
    target: str
    cycle: int
    kind: str
    event_id: str
    published: bool
    escalated: bool


@dataclass(frozen=True, slots=True)
class SolvedTicket:
    ticket_id: UUID
    brand: str
    solved_at: datetime
    day: str


class SlaClocks:
    """Statements prepared once (the constructor blocks on the prepares: build it off the event loop)."""

    def __init__(self, session: Session, policies: SlaPolicySet) -> None:
        self.session = session
        self.policies = policies
        # The last scan's rows, decoded: most open clocks do not change between two scans.
        self._decoded: _Decoded = {}
        p = session.prepare
        self._event_put = p("INSERT INTO ticket_sla_events (ticket_id, at, seq, event_id, kind) VALUES (?, ?, ?, ?, ?)")
        self._events = p("SELECT at, seq, event_id, kind FROM ticket_sla_events WHERE ticket_id = ?")
        cols = ("ticket_id, brand, status, priority, category, policy_id, calendar_id, clock, events, ticket_version, "
                "solved_at, version, updated_at")
        self._get = p(f"SELECT {cols} FROM ticket_sla WHERE ticket_id = ?")
        self._create = p(f"INSERT INTO ticket_sla ({cols}) VALUES ({', '.join('?' * 13)}) IF NOT EXISTS")
        self._update = p(
            "UPDATE ticket_sla SET brand = ?, status = ?, priority = ?, category = ?, policy_id = ?, calendar_id = ?, "
            "clock = ?, events = ?, ticket_version = ?, solved_at = ?, version = ?, updated_at = ? "
            "WHERE ticket_id = ? IF version = ?"
        )
        self._open_put = p(
            "INSERT INTO ticket_sla_open (bucket, ticket_id, brand, priority, category, clock, version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self._open_del = p("DELETE FROM ticket_sla_open WHERE bucket = ? AND ticket_id = ?")
        self._change_put = p("INSERT INTO ticket_sla_changes (slot, ticket_id, version, open, brand, priority, "
                             "category, clock) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        self._change_scan = p("SELECT ticket_id, version, open, brand, priority, category, clock "
                              "FROM ticket_sla_changes WHERE slot = ?")
        self._open_scan = p("SELECT ticket_id, brand, priority, category, clock, version FROM ticket_sla_open "
                            "WHERE bucket = ?")
        self._close_put = p("INSERT INTO ticket_autoclose (day, ticket_id, brand, solved_at) VALUES (?, ?, ?, ?)")
        self._close_del = p("DELETE FROM ticket_autoclose WHERE day = ? AND ticket_id = ?")
        self._close_day = p("SELECT ticket_id, brand, solved_at FROM ticket_autoclose WHERE day = ?")
        self._fired_get = p("SELECT target, cycle, kind, event_id, published, escalated FROM ticket_sla_fired "
                            "WHERE ticket_id = ?")
        self._fired_claim = p(
            "INSERT INTO ticket_sla_fired (ticket_id, target, cycle, kind, event_id, brand, due_at, fired_at, "
            "published, escalated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, false, false) IF NOT EXISTS"
        )
        self._fired_done = p("UPDATE ticket_sla_fired SET published = ?, escalated = ? "
                             "WHERE ticket_id = ? AND target = ? AND cycle = ? AND kind = ?")
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    async def _run(self, stmt: Any, params: Sequence[Any], op: str) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params, op=f"sla_{op}", limit=self._limit)

    # ------------------------------------------------------------------------ policies

    def policy_of(self, priority: str, category: str | None) -> SlaPolicy | None:
        return self.policies.pick(cast(Any, priority), category)

    def subject(self, ticket_id: UUID, priority: str, category: str | None, clock: SlaClock) -> SlaSubject | None:
        """What `domain.sla.due_events` needs of one ticket; None when no policy applies."""
        policy = self.policy_of(priority, category)
        if policy is None:
            return None
        calendar = None if policy.twenty_four_seven else sla.calendar_for(self.policies, policy)
        return SlaSubject(key=str(ticket_id), clock=clock, policy=policy, calendar=calendar)

    def evaluate(self, subject: SlaSubject, now: datetime) -> SlaStatus:
        last = subject.clock.last_at
        at = last if last is not None and now < last else now  # a reader's clock may lag the writer's
        return sla.status(subject.clock, subject.policy, subject.calendar, at)

    # ------------------------------------------------------------------------ recording

    async def record(self, ticket: Ticket, events: Sequence[SlaEvent]) -> None:
        """Store `events` (the SLA events of the command that produced `ticket`) and rebuild the
        ticket's clock and indexes. Idempotent: a retry, or a call with no events, is harmless
        (and repairs the indexes)."""
        tid = ticket.ticket_id
        await asyncio.gather(*(self._run(*self._event_row(tid, e, ticket.version, i), "event")
                               for i, e in enumerate(events)))
        for _ in range(_CAS_ATTEMPTS):
            before = await self.load(tid)
            if before is None:
                await self._run(*self._event_row(tid, started_event(ticket), 1, 0), "event")
            stored = await self._stored_events(tid)
            after = self._snapshot(ticket, before, _rebuilt(tid, stored), len(stored))
            if before is not None and _same(before, after):
                await self._reindex(before, before)
                return
            if await self._write(before, after):
                await self._reindex(before, after)
                return
        raise Unavailable(f"ticket {tid}: its SLA clock kept changing under this write; retry")

    async def start(self, ticket: Ticket, events: Sequence[SlaEvent]) -> None:
        """Record the SLA events of a ticket this call just created (`record`'s fast path).

        Only insert-only rows and the indexes are written: the `ticket_sla` row is left to the
        first `record` (the ticket's next change) or to the scheduler, and a reader finding none
        rebuilds the clock from the events (`load`). A lightweight transaction per new ticket
        would cost as much as the ticket's own, the one that decides whether it was created."""
        tid = ticket.ticket_id
        rows = [self._event_row(tid, e, ticket.version, i) for i, e in enumerate(events)]
        unsaved = self._unsaved(ticket, _rebuilt(tid, events), len(events))
        await abatch(self.session, [*rows, *self._index_writes(None, unsaved)], op="sla_start", limit=self._limit)

    def _event_row(self, tid: UUID, e: SlaEvent, ticket_version: int, index: int) -> _Write:
        return self._event_put, (tid, e.at, event_seq(e, ticket_version, index), e.event_id, e.kind)

    async def _stored_events(self, tid: UUID) -> list[SlaEvent]:
        """Every stored SLA event of the ticket, in clock order (the table's clustering order)."""
        rows = await self._run(self._events, (tid,), "events")
        return [SlaEvent(event_id=r["event_id"], kind=r["kind"], at=cast(datetime, utc(r["at"]))) for r in rows]

    def _unsaved(self, ticket: Ticket, clock: SlaClock, events: int) -> StoredClock:
        """The clock of a ticket whose `ticket_sla` row is not written yet (version 0)."""
        return replace(self._snapshot(ticket, None, clock, events), version=0)

    def _snapshot(self, ticket: Ticket, before: StoredClock | None, clock: SlaClock, events: int) -> StoredClock:
        newer = before is None or ticket.version >= before.ticket_version
        brand: str
        status: str
        priority: str
        if newer:
            brand, status, priority, category = ticket.brand, ticket.status, ticket.priority, ticket.category
            tv, solved_at = ticket.version, ticket.solved_at
        else:
            assert before is not None
            brand, status, priority, category = before.brand, before.status, before.priority, before.category
            tv, solved_at = before.ticket_version, before.solved_at
        policy = self.policy_of(priority, category)
        return StoredClock(
            ticket_id=ticket.ticket_id, brand=brand, status=status, priority=priority, category=category,
            policy_id=policy.policy_id if policy else None,
            calendar_id=None if policy is None else ("24x7" if policy.twenty_four_seven else policy.calendar_id),
            clock=clock, clock_json=clock_to_json(clock), events=events, ticket_version=tv, solved_at=solved_at,
            version=1 if before is None else before.version + 1,
        )

    async def _write(self, before: StoredClock | None, a: StoredClock) -> bool:
        now = datetime.now(UTC)
        if before is None:
            rows = await self._run(self._create, (
                a.ticket_id, a.brand, a.status, a.priority, a.category, a.policy_id, a.calendar_id, a.clock_json,
                a.events, a.ticket_version, a.solved_at, a.version, now), "create")
        else:
            rows = await self._run(self._update, (
                a.brand, a.status, a.priority, a.category, a.policy_id, a.calendar_id, a.clock_json, a.events,
                a.ticket_version, a.solved_at, a.version, now, a.ticket_id, before.version), "update")
        return applied(rows)

    async def _reindex(self, before: StoredClock | None, a: StoredClock) -> None:
        await abatch(self.session, self._index_writes(before, a), op="sla_index", limit=self._limit)

    def _index_writes(self, before: StoredClock | None, a: StoredClock) -> list[_Write]:
        """The open-clock and auto-close index rows of a clock (upserts and deletes keyed by it)."""
        tid = a.ticket_id
        writes: list[_Write] = []
        slot = change_slot(time.time())
        if a.clock.state in ("running", "paused") and a.status != "closed":
            indexed = clock_to_json(a.clock, with_ids=False)
            writes.append((self._open_put, (bucket_of(tid), tid, a.brand, a.priority, a.category, indexed,
                                            a.version)))
            writes.append((self._change_put, (slot, tid, a.version, True, a.brand, a.priority, a.category,
                                              indexed)))
        else:
            writes.append((self._open_del, (bucket_of(tid), tid)))
            writes.append((self._change_put, (slot, tid, a.version, False, a.brand, a.priority, a.category, None)))
        if a.status == "solved" and a.solved_at is not None:
            writes.append((self._close_put, (_day(a.solved_at), tid, a.brand, a.solved_at)))
        elif a.solved_at is not None:
            writes.append((self._close_del, (_day(a.solved_at), tid)))
        if before is not None and before.solved_at is not None and before.solved_at != a.solved_at:
            writes.append((self._close_del, (_day(before.solved_at), tid)))
        return writes

    # ------------------------------------------------------------------------ reading

    async def load(self, ticket_id: UUID) -> StoredClock | None:
        """The stored clock; None when its row is not written yet (see `start` and `load_or_rebuild`)."""
        rows = await self._run(self._get, (ticket_id,), "get")
        if not rows or rows[0]["clock"] is None:
            return None
        r = rows[0]
        return StoredClock(
            ticket_id=r["ticket_id"], brand=r["brand"], status=r["status"], priority=r["priority"],
            category=r["category"], policy_id=r["policy_id"], calendar_id=r["calendar_id"],
            clock=clock_from_json(r["clock"]), clock_json=r["clock"], events=r["events"] or 0,
            ticket_version=r["ticket_version"] or 0, solved_at=utc(r["solved_at"]), version=r["version"] or 0,
        )

    async def load_or_rebuild(self, ticket: Ticket) -> StoredClock | None:
        """The stored clock, or for a ticket not changed since `start`, its clock rebuilt from its
        events (version 0, nothing written); None when the ticket has no SLA events at all."""
        stored = await self.load(ticket.ticket_id)
        if stored is not None:
            return stored
        events = await self._stored_events(ticket.ticket_id)
        if not events:
            return None
        clock, _ = rebuild(events)  # a reader does not log what `record` already logged
        return self._unsaved(ticket, clock, len(events))

    async def status(self, ticket: Ticket, now: datetime) -> SlaStatus | None:
        """The ticket's SLA at `now` under the policy of its (current) priority and category; None
        when it has no clock yet or no policy applies."""
        stored = await self.load_or_rebuild(ticket)
        if stored is None:
            return None
        subject = self.subject(ticket.ticket_id, ticket.priority, ticket.category, stored.clock)
        return None if subject is None else self.evaluate(subject, now)

    async def statuses(self, tickets: Sequence[Ticket], now: datetime) -> dict[UUID, SlaStatus]:
        """`status` of each ticket (a queue page), read concurrently; tickets without one are left out."""
        found = await asyncio.gather(*(self.status(t, now) for t in tickets))
        return {t.ticket_id: s for t, s in zip(tickets, found, strict=True) if s is not None}

    # ------------------------------------------------------------------------ the scheduler's view

    async def open_subjects(self, brands: frozenset[str] | None = None) -> list[OpenClock]:
        """Every unsolved clock of the open index (of `brands` only, when given): OPEN_BUCKETS reads."""
        parts = await asyncio.gather(*(self._run(self._open_scan, (b,), "scan") for b in range(OPEN_BUCKETS)))
        out: list[OpenClock] = []
        known, self._decoded = self._decoded, {}
        for rows in parts:
            for r in rows:
                if brands is not None and r["brand"] not in brands:
                    continue
                o = self._open_clock(r, known)
                if o is not None:
                    out.append(o)
        return out

    async def changes(self, first_slot: int, last_slot: int,
                      brands: frozenset[str] | None = None) -> list[OpenChange]:
        """The change feed of the open index in slots first..last, the newest change per ticket:
        what `open_subjects` would now show differently for those tickets (`clock` None: gone).
        Older changes of the same ticket are dropped before decoding, so the decoded-row cache
        keeps the newest row and an unchanged clock stays the same object from scan to scan."""
        slots = range(first_slot, last_slot + 1)
        parts = await asyncio.gather(*(self._run(self._change_scan, (slot,), "changes") for slot in slots))
        newest: dict[UUID, dict[str, Any]] = {}
        for rows in parts:
            for r in rows:
                held = newest.get(r["ticket_id"])
                if held is None or (r["version"] or 0) > (held["version"] or 0):
                    newest[r["ticket_id"]] = r
        out: list[OpenChange] = []
        for r in newest.values():
            if not r["open"]:
                out.append(OpenChange(r["ticket_id"], r["version"] or 0, None))
            elif brands is None or r["brand"] in brands:
                clock = self._open_clock(r, self._decoded)
                if clock is not None:
                    out.append(OpenChange(r["ticket_id"], r["version"] or 0, clock))
        return out

    def _open_clock(self, r: dict[str, Any], known: _Decoded) -> OpenClock | None:
        """An index (or change) row decoded; the same object as before while the row is unchanged,
        because the scheduler keys its own memo on that identity."""
        row = (r["brand"], r["priority"], r["category"], r["clock"], r["version"] or 0)
        cached = known.get(r["ticket_id"])
        if cached is not None and cached[0] == row:
            self._decoded[r["ticket_id"]] = cached
            return cached[1]
        try:
            clock = clock_from_json(r["clock"])
        except (ValueError, KeyError, TypeError):
            log.error("ticket %s: unreadable clock in the SLA index; skipped", r["ticket_id"])
            return None
        o = OpenClock(r["ticket_id"], r["brand"], r["priority"], r["category"], clock, row[4])
        self._decoded[r["ticket_id"]] = (row, o)
        return o

    async def reindex(self, stored: StoredClock) -> None:
        """Write the indexes of a stored clock again (the scheduler found an index row behind it)."""
        await self._reindex(None, stored)

    async def forget_open(self, ticket_id: UUID) -> None:
        """Drop an index row that has no clock behind it."""
        await abatch(self.session, [
            (self._open_del, (bucket_of(ticket_id), ticket_id)),
            (self._change_put, (change_slot(time.time()), ticket_id, _FORGOTTEN, False, "", "", "", None)),
        ], op="sla_open", limit=self._limit)

    async def fired(self, ticket_id: UUID) -> list[Fired]:
        rows = await self._run(self._fired_get, (ticket_id,), "fired")
        return [Fired(ticket_id, r["target"], r["cycle"], r["kind"], r["event_id"], bool(r["published"]),
                      bool(r["escalated"])) for r in rows]

    async def claim_fired(self, ticket_id: UUID, target: str, cycle: int, kind: FiredKind, event_id: str,
                          brand: str, due_at: datetime, now: datetime) -> Fired:
        """Claim a warning or breach (first caller wins); the row as stored (possibly an earlier claim)."""
        rows = await self._run(self._fired_claim, (ticket_id, target, cycle, kind, event_id, brand, due_at, now),
                               "claim")
        if applied(rows):
            return Fired(ticket_id, target, cycle, kind, event_id, False, False)
        r = rows[0]
        return Fired(ticket_id, target, cycle, kind, r.get("event_id") or event_id, bool(r.get("published")),
                     bool(r.get("escalated")))

    async def mark_fired(self, fired: Fired, published: bool = True, escalated: bool = True) -> Fired:
        await self._run(self._fired_done, (published, escalated, fired.ticket_id, fired.target, fired.cycle,
                                           fired.kind), "fired")
        return replace(fired, published=published, escalated=escalated)

    async def solved_days(self, days: Sequence[str]) -> list[SolvedTicket]:
        """Solved tickets waiting for the auto-close, of the given UTC days."""
        parts = await asyncio.gather(*(self._run(self._close_day, (d,), "autoclose") for d in days))
        return [SolvedTicket(r["ticket_id"], r["brand"], cast(datetime, utc(r["solved_at"])), d)
                for d, rows in zip(days, parts, strict=True) for r in rows if r["solved_at"] is not None]

    async def forget_solved(self, item: SolvedTicket) -> None:
        await self._run(self._close_del, (item.day, item.ticket_id), "autoclose")


def _same(a: StoredClock, b: StoredClock) -> bool:
    return (a.clock_json, a.brand, a.status, a.priority, a.category, a.policy_id, a.calendar_id, a.events,
            a.ticket_version, a.solved_at) == (b.clock_json, b.brand, b.status, b.priority, b.category, b.policy_id,
                                               b.calendar_id, b.events, b.ticket_version, b.solved_at)
