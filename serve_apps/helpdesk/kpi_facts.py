"""Help-desk KPI facts: who writes `ticket_kpi_facts` (schemas/cql/016) and how a report reads it.

- `KpiFactConsumer`: each help-desk worker replica consumes the ticket events (`ticket.created`,
  `ticket.status_changed`, `ticket.assigned`, agents' public `ticket.message_added`,
  `ticket.sla_breached`; the escalation that follows a breach is announced as `ticket.assigned`)
  from the shared durable queue `PITBOSS_HELPDESK_KPI_QUEUE` (competing
  consumers; dead letters in `<queue>.dlq`) and rewrites the ticket's whole fact row from its
  `tickets` row and SLA clock as they are now. Never an increment: a redelivered, reordered or
  replayed event writes the same row again, and the newest read wins (`USING TIMESTAMP`).
- `KpiFacts.period`: a report's facts, one partition read per UTC day (bounded concurrency). A day
  never rebuilt from the ticket queue (`ticket_kpi_fact_days`) is backfilled on that first read:
  its tickets are read through the queue tables, their facts written, the day marked. Tickets
  created before the fact table existed are counted that way, once.
- `python -m serve_apps.helpdesk.kpi_facts backfill --brand demo --from 2025-01-01 --to 2025-02-01
  [--force]`: rebuild the days of a period (`--force`: also those already marked, e.g. after the
  consumer was down for a while).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from cachetools import LRUCache
from cassandra.cluster import Session
from prometheus_client import Counter

from adapters.bus_consumer import DeadLetter, QueueConsumer
from adapters.cassandra.kb import TicketScan
from adapters.cassandra.kpi_facts import KpiFactStore
from adapters.cassandra.sla_clocks import SlaClocks
from adapters.cassandra.tickets import TicketStore
from adapters.settings import Settings
from domain import helpdesk_kpis as kpis
from domain.errors import InvalidInput, NotFound, PitbossError
from domain.tickets import Ticket
from schemas.tickets import STATUSES

ROUTING_KEYS = ("ticket.created", "ticket.status_changed", "ticket.assigned", "ticket.message_added",
                "ticket.sla_breached")
PREFETCH = 32
BACKFILL_CONCURRENCY = 2  # days rebuilt at once by one report
FACTS = Counter("pitboss_helpdesk_kpi_facts_total", "Ticket events applied to the KPI fact table by outcome",
                ["outcome"])
BACKFILLED = Counter("pitboss_helpdesk_kpi_backfilled_days_total", "KPI fact days rebuilt from the ticket queue")


def _micros() -> int:
    return time.time_ns() // 1000


class KpiFacts:
    """The fact store, its writer and the report's reader, over one Cassandra session (build it in a
    thread: it prepares statements)."""

    def __init__(self, session: Session, tickets: TicketStore, sla: SlaClocks | None,
                 day_concurrency: int = 8) -> None:
        self.store = KpiFactStore(session)
        self.scan = TicketScan(session)
        self.tickets = tickets
        self.sla = sla
        self._days = asyncio.Semaphore(day_concurrency)
        self._backfills = asyncio.Semaphore(BACKFILL_CONCURRENCY)

    # ------------------------------------------------------------------ writing

    async def _breached(self, tickets: Sequence[Ticket], now: datetime) -> dict[UUID, bool | None]:
        if self.sla is None or not tickets:
            return {}
        statuses = await self.sla.statuses(tickets, now)
        return {tid: kpis.sla_breached(s) for tid, s in statuses.items()}

    async def refresh(self, ticket_id: UUID) -> str:
        """Rewrite one ticket's fact from its current row; the outcome ("written", "no_ticket")."""
        return (await self.refresh_version(ticket_id))[0]

    async def refresh_version(self, ticket_id: UUID) -> tuple[str, int]:
        """`refresh`, and the ticket version the fact was written from (0 for no ticket)."""
        read_at = _micros()
        try:
            t = await self.tickets.get(ticket_id)
        except NotFound:
            return "no_ticket", 0
        breached = await self._breached([t], datetime.now(UTC))
        await self.store.put(kpis.fact_of(t, breached.get(t.ticket_id)), t.version, read_at)
        return "written", t.version

    async def backfill_day(self, brand: str, day: str, cap: int) -> int:
        """Rebuild one day's facts from the ticket queue and mark the day; the tickets written."""
        async with self._backfills:
            read_at = _micros()
            ids = await self.scan.ids(brand, STATUSES, day, day, cap)
            tickets = [t for t in await self.scan.tickets(ids) if kpis.day_of(t.created_at) == day]
            breached = await self._breached(tickets, datetime.now(UTC))
            await asyncio.gather(*(self.store.put(kpis.fact_of(t, breached.get(t.ticket_id)), t.version, read_at)
                                   for t in tickets))
            await self.store.mark_backfilled(brand, day, datetime.now(UTC), len(tickets))
            BACKFILLED.inc()
            return len(tickets)

    # ------------------------------------------------------------------ reading

    async def period(self, brand: str, start: datetime, end: datetime, cap: int,
                     now: datetime) -> list[kpis.TicketFact]:
        """The facts of the brand's tickets created in [start, end); InvalidInput (field "to") past
        `cap`. Days up to today never rebuilt are backfilled first."""
        days = kpis.days_of(start, end)
        today = kpis.day_of(now)
        past = [d for d in days if d <= today]
        marked = await self.store.backfilled(brand, past[0], past[-1]) if past else set()
        todo = [d for d in past if d not in marked]
        if todo:
            await asyncio.gather(*(self.backfill_day(brand, d, cap) for d in todo))

        async def one(day: str) -> list[kpis.TicketFact]:
            async with self._days:
                return await self.store.day(brand, day, cap)

        parts = await asyncio.gather(*(one(d) for d in days))
        total = sum(len(p) for p in parts)
        if total > cap:
            raise InvalidInput(f"more than {cap} tickets to read: choose a shorter period", field="to")
        return [f for p in parts for f in p if start <= f.created_at < end]


    async def backlog(self, brand: str, cap: int) -> list[kpis.TicketFact]:
        """The brand's active tickets from the queue index (one row each; no ticket row read), a
        ticket listed under two active statuses settled by its `tickets` row."""
        rows = await self.store.queued(brand, sorted(kpis.ACTIVE), cap)
        seen: dict[UUID, list[kpis.TicketFact]] = {}
        for f in rows:
            seen.setdefault(f.ticket_id, []).append(f)
        twice = [tid for tid, fs in seen.items() if len(fs) > 1]
        if twice:
            current = {t.ticket_id: t for t in await self.scan.tickets(twice)}
            for tid in twice:
                t = current.get(tid)
                seen[tid] = [kpis.fact_of(t, None)] if t is not None and t.status in kpis.ACTIVE else []
        return [fs[0] for fs in seen.values() if fs]


class KpiFactConsumer(QueueConsumer):
    label = "kpi-facts"

    def __init__(self, settings: Settings, facts: KpiFacts) -> None:
        super().__init__(settings, settings.helpdesk_kpi_queue, ROUTING_KEYS, FACTS, prefetch=PREFETCH)
        self.facts = facts
        # Ticket version each recent fact was written from: a new ticket announces itself twice
        # (created, routed) and a burst of changes is read once at its newest version.
        self.written: LRUCache[UUID, int] = LRUCache(maxsize=100_000)
        # The refresh running for a ticket: events of one change arrive together (prefetch), and
        # each would otherwise read the same ticket and write the same row.
        self._running: dict[UUID, asyncio.Task[tuple[str, int]]] = {}

    async def handle(self, raw: dict[str, Any]) -> str:
        inner = raw.get("payload")
        payload: dict[str, Any] = inner if isinstance(inner, dict) else raw
        try:
            ticket_id = UUID(str(payload["ticket_id"]))
        except (KeyError, ValueError) as exc:
            raise DeadLetter(f"the event names no ticket_id: {exc}") from exc
        if raw.get("type") == "ticket.message_added" and (
                payload.get("author_kind") != "agent" or payload.get("visibility") != "public"):
            return "skipped"  # only an agent's public reply changes a fact (the first response)
        named = 1 if raw.get("type") == "ticket.created" else payload.get("version")
        while True:
            if isinstance(named, int) and self.written.get(ticket_id, 0) >= named:
                return "skipped"  # this replica already wrote the fact from that version or a newer one
            running = self._running.get(ticket_id)
            if running is None:
                break
            # Its read may already hold this event's version; if not (or the event names none),
            # this event's own refresh starts after it, so it reads what the event announced.
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
        task = asyncio.ensure_future(self._refresh(ticket_id))
        self._running[ticket_id] = task
        outcome, _ = await task
        return outcome

    async def _refresh(self, ticket_id: UUID) -> tuple[str, int]:
        # `written` is updated and the entry dropped before the task is done, so an event waiting
        # on it sees the outcome as soon as it wakes.
        try:
            outcome, version = await self.facts.refresh_version(ticket_id)
            if version:
                self.written[ticket_id] = max(version, self.written.get(ticket_id, 0))
            return outcome, version
        finally:
            self._running.pop(ticket_id, None)


# ---------------------------------------------------------------------------- the backfill command


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise SystemExit(f"not a day (YYYY-MM-DD): {text}") from exc


async def backfill(settings: Settings, brand: str, first: date, last: date, force: bool) -> dict[str, int]:
    """Rebuild the facts of [first, last] (days marked already only with `force`); day -> tickets."""
    from adapters.cassandra.session import connect
    from adapters.sla_config import load_sla_policies

    cluster, session = connect(settings, settings.cassandra_keyspace)
    try:
        tickets = await asyncio.to_thread(TicketStore, session)
        sla = await asyncio.to_thread(SlaClocks, session, load_sla_policies(settings))
        facts = await asyncio.to_thread(KpiFacts, session, tickets, sla)
        days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
        marked = set() if force else await facts.store.backfilled(brand, days[0], days[-1])
        out: dict[str, int] = {}
        for day in days:
            if day not in marked:
                out[day] = await facts.backfill_day(brand, day, settings.kpi_max_tickets)
        return out
    finally:
        cluster.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve_apps.helpdesk.kpi_facts",
                                description="Rebuild help-desk KPI facts from the ticket queue tables.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backfill", help="rebuild the facts of a brand's days")
    b.add_argument("--brand", required=True)
    b.add_argument("--from", dest="first", required=True, help="first UTC day, YYYY-MM-DD")
    b.add_argument("--to", dest="last", required=True, help="last UTC day (inclusive), YYYY-MM-DD")
    b.add_argument("--force", action="store_true", help="also the days already rebuilt once")
    a = p.parse_args(argv)
    first, last = _day(a.first), _day(a.last)
    if last < first or (last - first).days > 3660:
        raise SystemExit("--to is on or after --from, at most ten years later")
    try:
        done = asyncio.run(backfill(Settings(), a.brand, first, last, a.force))
    except PitbossError as exc:
        print(f"backfill failed: {exc.detail}", file=sys.stderr)
        return 1
    for day, n in done.items():
        print(f"{a.brand} {day}: {n} tickets")
    print(f"{len(done)} days rebuilt, {sum(done.values())} tickets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
