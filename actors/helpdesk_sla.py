"""`SlaScheduler`: the help desk's SLA warnings, breaches, escalations and auto-close, driven by a
detached actor per region (`pitboss-helpdesk-sla-<region>`), not by anyone having a page open.

Every `PITBOSS_HELPDESK_SLA_SCAN_SECONDS` (15) the actor brings its set of open clocks up to date
(the open-clock index read whole, OPEN_BUCKETS partitions, every
`PITBOSS_HELPDESK_SLA_FULL_SCAN_SECONDS` (300) and at start; in between only the index's change
feed since the last scan, adapters/cassandra/sla_clocks.py), asks `domain.sla.due_events` which
warnings and breaches are due now, and for each one not fired yet:

1. re-reads the ticket's stored clock (the index may lag) and checks the event is still due;
2. claims it in `ticket_sla_fired` (INSERT IF NOT EXISTS: one warning and one breach per ticket,
   target and cycle, whatever restarts happen; a claim a crash left unfinished is finished by the
   next scan, so the bus sees it at least once, with the same event id);
3. publishes `ticket.sla_warning` or `ticket.sla_breached` on the events exchange and pushes a
   supervisor alert onto the Redis list `pitboss:helpdesk:alerts:<brand>` (newest first, capped at
   PITBOSS_HELPDESK_SLA_ALERTS_MAX) that the dashboard shows;
4. on a breach, escalates: the ticket is tagged `sla-breached` and `sla-<target>` and moved to the
   team PITBOSS_HELPDESK_SLA_ESCALATION_TEAM (default `supervisors`; its assignee is kept, so the
   agent still has it and a supervisor sees it in their queue), through `domain.tickets.apply
   (UpdateTicket)` and `TicketStore.update`, then `SlaClocks.record`; the change is on the audit
   chain as the system actor `system:sla-scheduler` (action `ticket.sla_escalate`). The priority is
   not raised: a new priority picks a stricter policy, whose targets would breach at once in a cascade.

Auto-close: solved tickets are closed `PITBOSS_HELPDESK_AUTOCLOSE_DAYS` (7) after they were solved
(`domain.tickets.CloseSolved`, audited as `ticket.auto_close`), at most once a minute.

`scan_once(now)` runs one scan; `now` is for tests that drive time instead of sleeping (the loop
always uses the real clock). Each scan's counts are prometheus metrics `pitboss_helpdesk_sla_*`
(`metric_families()` hands them to whoever re-exports them, like the shards' metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import ray
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from actors.router import detached, pitboss_env
from adapters.cassandra.helpdesk_routing import HelpdeskRoutingStore
from adapters.cassandra.session import connect
from adapters.cassandra.sla_clocks import Fired, OpenClock, SlaClocks, SolvedTicket, change_slot
from adapters.cassandra.tickets import TicketStore
from adapters.rabbit import EventPublisher
from adapters.settings import Settings
from adapters.sla_config import load_sla_policies
from domain import sla
from domain.errors import Conflict, NotFound
from domain.sla import DueEvent, SlaSubject
from domain.ticket_bus import NO_PLAYER, bus_events
from domain.tickets import CloseSolved, Ticket, UpdateTicket, due_to_close, sla_events
from domain.tickets import Event as TicketCommandEvent
from domain.tickets import apply as apply_ticket
from schemas.audit import AuditRecord
from schemas.events import PitbossEvent
from schemas.helpdesk_sla import SlaPolicySet
from schemas.tickets import TicketUpdate

log = logging.getLogger("pitboss.helpdesk.sla")

ACTOR = "system:sla-scheduler"
ACTOR_NAME = "SLA scheduler"
WARNING_EVENT = "ticket.sla_warning"
BREACH_EVENT = "ticket.sla_breached"
BREACH_TAG = "sla-breached"
AUTOCLOSE_EVERY = 60.0  # seconds between two auto-close passes of the loop
AUTOCLOSE_LOOKBACK_DAYS = 30  # solve days read before the first due one (a scheduler down this long misses some)
UPDATE_ATTEMPTS = 4
_IDS = uuid.UUID("0b6f7a38-5f0e-4c39-9a53-1c2f3e6d8a90")  # namespace of the ids derived from fired events
_FIRED_MEMORY = 200_000
_CHANGE_OVERLAP_SLOTS = 3  # change slots (10 s each) read again at the next scan
_MAX_CHANGE_SLOTS = 90  # a longer gap since the last scan (15 min) reads the whole index instead

SCANS = Counter("pitboss_helpdesk_sla_scans_total", "SLA scheduler scans", ["outcome"])
SCAN_SECONDS = Histogram("pitboss_helpdesk_sla_scan_seconds", "Duration of one SLA scan",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
OPEN_CLOCKS = Gauge("pitboss_helpdesk_sla_open_clocks", "Unsolved tickets with an SLA clock, at the last scan")
FIRED = Counter("pitboss_helpdesk_sla_fired_total", "SLA warnings and breaches published", ["kind", "target"])
ESCALATIONS = Counter("pitboss_helpdesk_sla_escalations_total", "Breach escalations", ["outcome"])
AUTOCLOSED = Counter("pitboss_helpdesk_sla_autoclosed_total", "Solved tickets closed by the scheduler")
ERRORS = Counter("pitboss_helpdesk_sla_errors_total", "SLA scheduler failures (retried next scan)", ["stage"])


def sla_scheduler_name(region: str) -> str:
    return f"pitboss-helpdesk-sla-{region}"


def alerts_key(brand: str) -> str:
    return f"pitboss:helpdesk:alerts:{brand}"


def sla_scheduler_actor(settings: Settings, name: str | None = None, env: dict[str, str] | None = None) -> Any:
    """Get or create a scheduler (default: the region's). `env` overrides the PITBOSS_* settings
    handed to it (tests run their own scheduler with their own policies and brands). The SLA file
    is read here first, so a broken one stops the caller (deploy, rollout) with its message."""
    sla_file = (env or {}).get("PITBOSS_HELPDESK_SLA_FILE", settings.helpdesk_sla_file)
    load_sla_policies(settings.model_copy(update={"helpdesk_sla_file": sla_file}))
    if env is None:
        return detached(SlaScheduler, name or sla_scheduler_name(settings.region), settings, 16, settings.region)
    return (
        ray.remote(SlaScheduler)
        .options(name=name or sla_scheduler_name(settings.region), namespace=settings.ray_namespace,
                 lifetime="detached", get_if_exists=True, max_restarts=-1, max_task_retries=0,
                 max_concurrency=16, num_cpus=0)
        .remote(settings.region, {**pitboss_env(), **env})
    )


def escalation_update(target: str, team: str) -> TicketUpdate:
    """What a breach of `target` changes on the ticket (see the module docstring)."""
    tags = [BREACH_TAG, "sla-" + target.replace("_", "-")]
    return TicketUpdate(team=team or None, tags_add=tags)


def event_uuid(event_id: str) -> uuid.UUID:
    """The bus/audit id of a fired event: the same warning or breach always has the same id."""
    return uuid.uuid5(_IDS, event_id)


def autoclose_days(now: datetime, days: int, lookback: int = AUTOCLOSE_LOOKBACK_DAYS) -> list[str]:
    """The UTC solve days whose tickets can be due to close at `now`, newest first."""
    last = (now - timedelta(days=days)).astimezone(UTC).date()
    return [(last - timedelta(days=i)).isoformat() for i in range(lookback + 1)]


class SlaScheduler:
    """One per region; created by `actors.runtime.ensure_sla_scheduler`. Its loop starts with the actor, so a
    restart by Ray (after a crash or `ray.kill`) resumes the scans by itself."""

    def __init__(self, region: str, env: dict[str, str] | None = None) -> None:
        os.environ.update(env or {})
        self.settings = Settings()
        self.region = region
        self.policies: SlaPolicySet = load_sla_policies(self.settings)
        brands = {b.strip() for b in self.settings.helpdesk_sla_brands.split(",") if b.strip()}
        self.brands = frozenset(brands) if brands else None
        self.clocks: SlaClocks | None = None
        self.store: TicketStore | None = None
        self.routes: HelpdeskRoutingStore | None = None
        self.publisher = EventPublisher(self.settings)
        self._redis: Any = None
        self._audit: Any = None
        self._cluster: Any = None
        self._lock = asyncio.Lock()
        self._scan_lock = asyncio.Lock()
        self.done: OrderedDict[tuple[str, str, int, str], None] = OrderedDict()  # fired and finished
        # Per open clock, as last evaluated (the same OpenClock object while its index row is unchanged):
        # the instant before which nothing more can fall due (None: never, e.g. paused), once every
        # event due at that scan was finished. Such a clock is not evaluated again before then.
        self._quiet: dict[uuid.UUID, tuple[OpenClock, datetime | None]] = {}
        # The open clocks as of the last scan: read whole every helpdesk_sla_full_scan_seconds (and
        # at start), brought up to date from the change feed at the scans in between.
        self._opens: dict[uuid.UUID, OpenClock] | None = None
        self._full_at = 0.0  # time.time() of the last whole read
        self._gone: dict[uuid.UUID, int] = {}  # clocks the feed removed since then, by version
        self._changes_from = 0  # the first change slot the next scan reads
        self.last_autoclose = 0.0
        self.last: dict[str, Any] = {}
        self.totals = {"scans": 0, "warnings": 0, "breaches": 0, "escalations": 0, "autoclosed": 0, "errors": 0}
        self.started_at = datetime.now(UTC)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    # ---------------------------------------------------------------- plumbing

    async def ready(self) -> None:
        async with self._lock:
            if self.clocks is None:
                loop = asyncio.get_running_loop()
                s = self.settings
                cluster, session = await loop.run_in_executor(None, lambda: connect(s, s.cassandra_keyspace))
                self._cluster = cluster
                self.store = await loop.run_in_executor(None, TicketStore, session)
                self.routes = await loop.run_in_executor(None, HelpdeskRoutingStore, session)
                self.clocks = await loop.run_in_executor(None, SlaClocks, session, self.policies)

    def _redis_client(self) -> Any:
        if self._redis is None:
            from adapters.redis_pool import redis_client

            self._redis = redis_client(self.settings)
        return self._redis

    def _audit_client(self) -> Any:
        if self._audit is None:
            from actors.audit import AuditClient

            self._audit = AuditClient(self.settings)
        return self._audit

    async def _loop(self) -> None:
        while True:
            try:
                await self.scan_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("SLA scan failed; retried at the next one", exc_info=True)
            await asyncio.sleep(self.settings.helpdesk_sla_scan_seconds)

    # ---------------------------------------------------------------- operations

    async def ping(self) -> bool:
        return True

    async def stats(self) -> dict[str, Any]:
        return {
            "region": self.region, "pid": os.getpid(), "started_at": self.started_at.isoformat(),
            "running": not self._task.done(), "brands": sorted(self.brands) if self.brands else None,
            "policies": [p.policy_id for p in self.policies.policies], "last_scan": dict(self.last), **self.totals,
        }

    async def metric_families(self) -> list[Any]:
        """This process's prometheus samples (pitboss_helpdesk_sla_*), for an app's /metrics to re-export."""
        return [m for m in REGISTRY.collect() if m.name.startswith("pitboss_helpdesk_sla")]

    async def scan_once(self, now: datetime | None = None) -> dict[str, Any]:
        """One scan at `now` (default: the real clock): fire what is due, then the auto-close pass.
        Returns the scan's counts."""
        await self.ready()
        async with self._scan_lock:
            started = time.perf_counter()
            real = now is None
            at = datetime.now(UTC) if now is None else now.astimezone(UTC)
            counts: dict[str, Any] = {"open": 0, "due": 0, "warnings": 0, "breaches": 0, "escalations": 0,
                                      "autoclosed": 0, "errors": 0}
            try:
                await self._fire_due(at, counts)
                if not real or time.monotonic() - self.last_autoclose >= AUTOCLOSE_EVERY:
                    self.last_autoclose = time.monotonic()
                    await self._autoclose(at, counts)
            except Exception:
                SCANS.labels("failed").inc()
                self.totals["errors"] += 1
                raise
            took = time.perf_counter() - started
            SCANS.labels("ok").inc()
            SCAN_SECONDS.observe(took)
            OPEN_CLOCKS.set(counts["open"])
            self.totals["scans"] += 1
            for k in ("warnings", "breaches", "escalations", "autoclosed", "errors"):
                self.totals[k] += counts[k]
            self.last = {"at": at.isoformat(), "seconds": round(took, 4), **counts}
            return dict(self.last)

    # ---------------------------------------------------------------- warnings and breaches

    async def _fire_due(self, now: datetime, counts: dict[str, Any]) -> None:
        assert self.clocks is not None
        opens = await self._open_clocks(counts)
        counts["open"] = len(opens)
        known, self._quiet = self._quiet, {}
        for o in opens:
            if o.clock.last_at is not None and o.clock.last_at > now:
                continue  # written by a clock ahead of ours: evaluated at a later scan
            quiet = known.get(o.ticket_id)
            if quiet is not None and quiet[0] is o and (quiet[1] is None or now < quiet[1]):
                self._quiet[o.ticket_id] = quiet
                continue
            subject = self.clocks.subject(o.ticket_id, o.priority, o.category, o.clock)
            if subject is None:
                continue
            scan = sla.due_events([subject], now)
            finished = True
            for event in scan.events:
                finished = await self._fire_once(event, o, now, counts) and finished
            if finished:
                self._quiet[o.ticket_id] = (o, scan.next_at)

    async def _open_clocks(self, counts: dict[str, Any]) -> list[OpenClock]:
        """Every open clock: the whole index when the last whole read is old (or the feed has a gap
        longer than it), else the last scan's set with the changes since. Slots are read again for
        _CHANGE_OVERLAP_SLOTS: a write in flight, or a writer whose clock is behind ours, lands in
        a slot this scan has already read."""
        assert self.clocks is not None
        real = time.time()
        last = change_slot(real)
        if (self._opens is None or real - self._full_at >= self.settings.helpdesk_sla_full_scan_seconds
                or last - self._changes_from > _MAX_CHANGE_SLOTS):
            self._changes_from = last - _CHANGE_OVERLAP_SLOTS  # changes during the read are read again
            self._opens = {o.ticket_id: o for o in await self.clocks.open_subjects(self.brands)}
            self._gone = {}
            self._full_at = real
            counts["read"] = "whole"
            return list(self._opens.values())
        changes = await self.clocks.changes(self._changes_from, last, self.brands)
        for change in changes:
            known = self._opens.get(change.ticket_id)
            newest = known.version if known is not None else self._gone.get(change.ticket_id, -1)
            if newest > change.version:
                continue  # an older write of a clock this scan already has newer (or gone)
            if change.clock is None:
                self._opens.pop(change.ticket_id, None)
                self._gone[change.ticket_id] = change.version
            else:
                self._opens[change.ticket_id] = change.clock
                self._gone.pop(change.ticket_id, None)
        self._changes_from = last - _CHANGE_OVERLAP_SLOTS
        counts["read"] = f"{len(changes)} changes"
        return list(self._opens.values())

    async def _fire_once(self, event: DueEvent, o: OpenClock, now: datetime, counts: dict[str, Any]) -> bool:
        """Fire `event` unless it was finished before; True once it is finished for good."""
        key = (event.key, event.target, event.cycle, event.kind)
        if key in self.done:
            return True
        counts["due"] += 1
        try:
            if await self._fire(event, o, now, counts):
                self._remember(key)
                return True
        except Exception:
            counts["errors"] += 1
            ERRORS.labels("fire").inc()
            log.warning("ticket %s: SLA %s of %s not finished; retried next scan", event.key, event.kind,
                        event.target, exc_info=True)
        return False

    def _remember(self, key: tuple[str, str, int, str]) -> None:
        self.done[key] = None
        while len(self.done) > _FIRED_MEMORY:
            self.done.popitem(last=False)

    async def _fire(self, event: DueEvent, indexed: OpenClock, now: datetime, counts: dict[str, Any]) -> bool:
        """Publish (and on a breach escalate) one due event; True once it is finished for good."""
        assert self.clocks is not None and self.store is not None
        tid = indexed.ticket_id
        try:
            ticket = await self.store.get(tid)
        except NotFound:  # a clock without a ticket (a benchmark's, or a ticket purged): stop watching it
            await self.clocks.forget_open(tid)
            return True
        stored = await self.clocks.load(tid)
        if stored is None:
            # A ticket not changed since it was created has no clock row yet (SlaClocks.start):
            # write it now, from the stored events, before anything is claimed against it.
            await self.clocks.record(ticket, [])
            stored = await self.clocks.load(tid)
            if stored is None:
                await self.clocks.forget_open(tid)
                return False
        if ticket.version > stored.ticket_version:
            # A change without SLA events (priority, category) may not have been recorded: the
            # policy is chosen by the ticket as it is now.
            await self.clocks.record(ticket, [])
            stored = await self.clocks.load(tid) or stored
        elif stored.version != indexed.version:
            await self.clocks.reindex(stored)  # the index was behind: judge by the stored clock
        if stored.status in ("solved", "closed"):
            return False
        subject = self.clocks.subject(tid, stored.priority, stored.category, stored.clock)
        if subject is None or (stored.clock.last_at is not None and stored.clock.last_at > now):
            return False
        still = [e for e in sla.due_events([subject], now).events
                 if (e.target, e.cycle, e.kind) == (event.target, event.cycle, event.kind)]
        if not still:
            return False
        event = still[0]
        fired = await self.clocks.claim_fired(tid, event.target, event.cycle, event.kind, event.event_id,
                                              stored.brand, event.due_at, now)
        if fired.published and fired.escalated:
            return True
        if not fired.published:
            await self._announce(event, fired, ticket, subject, now)
            counts["warnings" if event.kind == "warning" else "breaches"] += 1
            FIRED.labels(event.kind, event.target).inc()
        escalated = True
        if event.kind == "breach" and not fired.escalated:
            escalated = await self._escalate(ticket, event, fired, now, counts)
        await self.clocks.mark_fired(fired, published=True, escalated=escalated)
        return escalated

    def _payload(self, event: DueEvent, fired: Fired, ticket: Ticket, subject: SlaSubject) -> dict[str, Any]:
        return {
            "ticket_id": str(ticket.ticket_id), "target": event.target, "kind": event.kind, "cycle": event.cycle,
            "due_at": event.due_at.isoformat(), "fell_due_at": event.at.isoformat(), "sla_event_id": fired.event_id,
            "policy_id": subject.policy.policy_id, "priority": ticket.priority, "category": ticket.category,
            "status": ticket.status, "team": ticket.team, "assignee": ticket.assignee, "subject": ticket.subject,
        }

    async def _announce(self, event: DueEvent, fired: Fired, ticket: Ticket, subject: SlaSubject,
                        now: datetime) -> None:
        payload = self._payload(event, fired, ticket, subject)
        await self.publisher.publish(PitbossEvent(
            event_id=event_uuid(fired.event_id), type=WARNING_EVENT if event.kind == "warning" else BREACH_EVENT,
            occurred_at=now, player_id=ticket.player_id or NO_PLAYER, brand=ticket.brand, payload=payload,
        ))
        alert = json.dumps({**payload, "alert_id": str(event_uuid(fired.event_id)), "at": now.isoformat()})
        try:
            r = self._redis_client()
            key = alerts_key(ticket.brand)
            async with r.pipeline(transaction=True) as pipe:
                pipe.lpush(key, alert)
                pipe.ltrim(key, 0, self.settings.helpdesk_sla_alerts_max - 1)
                await pipe.execute()
        except Exception:  # the bus has the event; the dashboard list is a convenience
            ERRORS.labels("alert").inc()
            log.warning("ticket %s: supervisor alert not pushed to Redis", ticket.ticket_id, exc_info=True)

    async def _escalate(self, ticket: Ticket, event: DueEvent, fired: Fired, now: datetime,
                        counts: dict[str, Any]) -> bool:
        assert self.clocks is not None and self.store is not None
        update = UpdateTicket(escalation_update(event.target, self.settings.helpdesk_sla_escalation_team), ACTOR)
        for _ in range(UPDATE_ATTEMPTS):
            try:
                after, events = apply_ticket(ticket, update, now)
            except Conflict:  # closed meanwhile: nothing to escalate
                ESCALATIONS.labels("skipped").inc()
                return True
            if after.version != ticket.version:
                try:
                    await self.store.update(ticket, after)
                except Conflict:  # an agent changed it meanwhile: decide again on the new version
                    ticket = await self.store.get(ticket.ticket_id)
                    continue
                await self._follow_up(ticket, after, events)
            await self._audit_append(
                event_uuid(fired.event_id + ":escalate"), "ticket.sla_escalate", after,
                before={"team": ticket.team, "assignee": ticket.assignee, "tags": list(ticket.tags)},
                after_data={"team": after.team, "assignee": after.assignee, "tags": list(after.tags)},
                reason=f"SLA {event.target} breached (due {event.due_at.isoformat()}, cycle {event.cycle})",
            )
            counts["escalations"] += 1
            ESCALATIONS.labels("escalated").inc()
            return True
        ESCALATIONS.labels("conflict").inc()
        return False

    async def _follow_up(self, before: Ticket, after: Ticket, events: Sequence[TicketCommandEvent]) -> None:
        """What the help desk does after its own commits: the clock, the agents' loads and the bus
        (an escalation or an auto-close is announced like an agent's change, with the same ids)."""
        assert self.clocks is not None and self.routes is not None
        await asyncio.gather(self.clocks.record(after, sla_events(events)), self.routes.index(before, after),
                             *(self.publisher.publish(e) for e in bus_events(after, events)))

    async def _audit_append(self, record_id: uuid.UUID, action: str, ticket: Ticket, *, before: dict[str, Any],
                            after_data: dict[str, Any], reason: str) -> None:
        await self._audit_client().append(AuditRecord(
            record_id=record_id, actor_id=ACTOR, actor_name=ACTOR_NAME, actor_roles=["system"], action=action,
            target_kind="ticket", target_id=str(ticket.ticket_id), brand=ticket.brand, before=before,
            after=after_data, outcome="succeeded", reason=reason, occurred_at=datetime.now(UTC),
        ))

    # ---------------------------------------------------------------- auto-close

    async def _autoclose(self, now: datetime, counts: dict[str, Any]) -> None:
        assert self.clocks is not None
        days = self.settings.helpdesk_autoclose_days
        for item in await self.clocks.solved_days(autoclose_days(now, days)):
            if self.brands is not None and item.brand not in self.brands:
                continue
            if item.solved_at > now - timedelta(days=days):
                continue
            try:
                if await self._close(item, now, days):
                    counts["autoclosed"] += 1
                    AUTOCLOSED.inc()
            except Exception:
                counts["errors"] += 1
                ERRORS.labels("autoclose").inc()
                log.warning("ticket %s: auto-close failed; retried next pass", item.ticket_id, exc_info=True)

    async def _close(self, item: SolvedTicket, now: datetime, days: int) -> bool:
        assert self.clocks is not None and self.store is not None
        for _ in range(UPDATE_ATTEMPTS):
            try:
                ticket = await self.store.get(item.ticket_id)
            except NotFound:
                await self.clocks.forget_solved(item)
                return False
            if ticket.status != "solved" or ticket.solved_at != item.solved_at:
                if ticket.status == "closed":
                    await self.clocks.record(ticket, [])  # repairs the indexes a lost call left behind
                await self.clocks.forget_solved(item)
                return False
            if not due_to_close(ticket, now, days):
                return False
            command = CloseSolved(days=days)
            try:
                after, events = apply_ticket(ticket, command, now)
                await self.store.update(ticket, after)
            except Conflict:
                continue  # changed meanwhile (reopened, or another closer): look again
            await self._follow_up(ticket, after, events)
            await self._audit_append(
                event_uuid(f"{ticket.ticket_id}:{after.version}:auto-close"), "ticket.auto_close", after,
                before={"status": ticket.status, "solved_at": ticket.solved_at},
                after_data={"status": after.status, "closed_at": after.closed_at},
                reason=f"solved {days} days ago or more (PITBOSS_HELPDESK_AUTOCLOSE_DAYS)",
            )
            return True
        return False

    async def close(self) -> None:
        """Stop the loop and the connections (an instance used outside Ray)."""
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        if self._audit is not None:
            with contextlib.suppress(Exception):
                await self._audit.close()
        if self._cluster is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._cluster.shutdown)

