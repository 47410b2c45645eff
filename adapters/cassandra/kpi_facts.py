"""Help-desk KPI facts in Cassandra (tables in schemas/cql/016_helpdesk_kpi_facts.cql).

`ticket_kpi_facts` holds one row per ticket in the partition (brand, UTC creation day). A row is
always the whole current fact of its ticket, written with `USING TIMESTAMP` = the microsecond
its writer began reading the ticket: two writers racing on one ticket converge on the newer read
(last write wins by that timestamp, not by arrival). Nothing is ever null in a row (sentinels
below), so upserts leave no tombstones in the partitions a report reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute, utc
from domain.errors import InvalidInput
from domain.helpdesk_kpis import TicketFact, day_of

_CONCURRENCY = 16
_PAGE = 2000
_COLS = ("ticket_id, channel, status, team, assignee, created_at, first_response_ms, resolution_ms, sla, "
         "ticket_version")
_NONE = ""  # team / assignee
_NO_DURATION = -1
_SLA = {None: "unknown", False: "ok", True: "breached"}
_SLA_BACK = {v: k for k, v in _SLA.items()}
_PUT_ORDER = ("brand", "day", "ticket_id", "channel", "status", "team", "assignee", "created_at", "first_response_ms",
              "resolution_ms", "sla", "ticket_version")


def _ms(start: datetime, end: datetime | None) -> int:
    return _NO_DURATION if end is None else max((end - start) // timedelta(milliseconds=1), 0)


def row_of(fact: TicketFact, version: int) -> dict[str, Any]:
    """The stored row of a fact (no None anywhere: sentinels)."""
    f = fact
    return {"brand": f.brand, "day": day_of(f.created_at), "ticket_id": f.ticket_id, "channel": f.channel,
            "status": f.status, "team": f.team or _NONE, "assignee": f.assignee or _NONE, "created_at": f.created_at,
            "first_response_ms": _ms(f.created_at, f.first_responded_at),
            "resolution_ms": _ms(f.created_at, f.solved_at), "sla": _SLA[f.sla_breached], "ticket_version": version}


def fact_of_row(brand: str, r: dict[str, Any]) -> TicketFact:
    """The fact a stored row says."""
    created = utc(r["created_at"])
    frt, res = r["first_response_ms"], r["resolution_ms"]
    return TicketFact(
        ticket_id=r["ticket_id"], brand=brand, channel=r["channel"], status=r["status"], created_at=created,
        team=r["team"] or None, assignee=r["assignee"] or None,
        first_responded_at=None if frt is None or frt < 0 else created + timedelta(milliseconds=frt),
        solved_at=None if res is None or res < 0 else created + timedelta(milliseconds=res),
        sla_breached=_SLA_BACK.get(r["sla"]),
    )


class KpiFactStore:
    """Read and write the fact rows. Build it in a thread (it prepares statements)."""

    def __init__(self, session: Session) -> None:
        p = session.prepare
        self.session = session
        self._put = p(f"INSERT INTO ticket_kpi_facts ({', '.join(_PUT_ORDER)}) VALUES ({', '.join('?' * 12)}) "
                      "USING TIMESTAMP ?")
        self._first = p(f"SELECT {_COLS} FROM ticket_kpi_facts WHERE brand = ? AND day = ? LIMIT ?")
        self._after = p(f"SELECT {_COLS} FROM ticket_kpi_facts WHERE brand = ? AND day = ? AND ticket_id > ? "
                        "LIMIT ?")
        self._one = p(f"SELECT {_COLS} FROM ticket_kpi_facts WHERE brand = ? AND day = ? AND ticket_id = ?")
        self._mark = p("INSERT INTO ticket_kpi_fact_days (brand, day, backfilled_at, tickets) VALUES (?, ?, ?, ?)")
        self._marked = p("SELECT day FROM ticket_kpi_fact_days WHERE brand = ? AND day >= ? AND day <= ?")
        # The active backlog straight from the queue index (schemas/cql/007): it carries what the
        # backlog needs (status, created_at, team, assignee), so no ticket row is read per ticket.
        self._queue_days = p("SELECT day FROM ticket_queue_days WHERE brand = ? AND status = ?")
        qcols = "created_at, ticket_id, team, assignee"
        self._queue_first = p(f"SELECT {qcols} FROM ticket_queue WHERE brand = ? AND status = ? AND day = ? LIMIT ?")
        self._queue_after = p(f"SELECT {qcols} FROM ticket_queue WHERE brand = ? AND status = ? AND day = ? "
                              "AND (created_at, ticket_id) < (?, ?) LIMIT ?")
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    async def _run(self, stmt: Any, params: Sequence[Any], op: str) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params, op=f"kpi_fact_{op}", limit=self._limit)

    async def put(self, fact: TicketFact, version: int, read_at_us: int) -> None:
        """Upsert the ticket's whole fact, as read at `read_at_us` (microseconds since the epoch)."""
        r = row_of(fact, version)
        await self._run(self._put, (*(r[c] for c in _PUT_ORDER), read_at_us), "put")

    async def get(self, brand: str, created_at: datetime, ticket_id: UUID) -> TicketFact | None:
        rows = await self._run(self._one, (brand, day_of(created_at), ticket_id), "get")
        return fact_of_row(brand, rows[0]) if rows else None

    async def day(self, brand: str, day: str, cap: int | None = None) -> list[TicketFact]:
        """Every fact of the brand's tickets created on `day` ("YYYY-MM-DD"), paged by ticket id;
        stops once more than `cap` are read (the caller refuses the request)."""
        out: list[TicketFact] = []
        rows = await self._run(self._first, (brand, day, _PAGE), "day")
        while True:
            out.extend(fact_of_row(brand, r) for r in rows)
            if len(rows) < _PAGE or (cap is not None and len(out) > cap):
                return out
            rows = await self._run(self._after, (brand, day, rows[-1]["ticket_id"], _PAGE), "day")

    async def backfilled(self, brand: str, first_day: str, last_day: str) -> set[str]:
        """The days of [first_day, last_day] already rebuilt from the queue once."""
        return {r["day"] for r in await self._run(self._marked, (brand, first_day, last_day), "days")}

    async def mark_backfilled(self, brand: str, day: str, at: datetime, tickets: int) -> None:
        await self._run(self._mark, (brand, day, at, tickets), "mark")

    async def _queue_day(self, brand: str, status: str, day: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        rows = await self._run(self._queue_first, (brand, status, day, _PAGE), "queue")
        while True:
            out.extend({**r, "status": status} for r in rows)
            if len(rows) < _PAGE:
                return out
            last = rows[-1]
            rows = await self._run(self._queue_after, (brand, status, day, last["created_at"], last["ticket_id"],
                                                       _PAGE), "queue")

    async def queued(self, brand: str, statuses: Sequence[str], cap: int) -> list[TicketFact]:
        """The queue rows of the brand's tickets in those statuses, as facts (status, created_at,
        team, assignee; nothing else is known), all days, read concurrently; a ticket listed under
        two statuses (a move whose old row is not deleted yet) comes once per status: the caller
        settles it. InvalidInput (field "to") past `cap` rows."""
        days = await asyncio.gather(*(self._run(self._queue_days, (brand, s), "queue_days") for s in statuses))
        parts = await asyncio.gather(*(self._queue_day(brand, s, r["day"])
                                       for s, rows in zip(statuses, days, strict=True) for r in rows))
        rows = [r for part in parts for r in part]
        if len(rows) > cap:
            raise InvalidInput(f"more than {cap} tickets to read: choose a shorter period", field="to")
        return [TicketFact(ticket_id=r["ticket_id"], brand=brand, channel="", status=r["status"],
                           created_at=utc(r["created_at"]), team=r["team"], assignee=r["assignee"]) for r in rows]
