"""Help desk: KPIs (`GET /helpdesk/v1/kpis`). Definitions in `domain.helpdesk_kpis`.

Access (one rule): the route needs ticket.read on the brand. Holders of report.read (supervisors,
compliance, analysts with ticket.read, admins) see every team and agent; anyone else (a support
agent) sees only the tickets assigned to them. The answer says which (`scope`).

Data: the period's tickets are the rows of the per-day fact table `ticket_kpi_facts` (one partition
per UTC creation day, kept current from the ticket events by `kpi_facts.KpiFactConsumer`, a day
never seen before backfilled from the queue tables on its first read), their SLA verdict as the
fact writer last saw it; the backlog is the active statuses' queue rows (the index: a ticket whose
index write failed after a change counts under its previous status until its next change; one
listed under two active statuses is settled by its `tickets` row). A request reads at most
`kpi_max_tickets` tickets (422 beyond: choose a shorter period).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from domain import helpdesk_kpis as kpis
from domain.errors import InvalidInput
from domain.policy import Resource
from schemas.common import Brand
from serve_apps.backoffice.deps import BO, Operator, Require, authorize
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk.kb import KB, KbService
from serve_apps.helpdesk.kpi_facts import KpiFacts

router = APIRouter(tags=["KPIs"])
DEFAULT_DAYS = 7
Team = Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


_facts: list[KpiFacts] = []
_facts_lock = asyncio.Lock()


async def kpi_facts(bo: BackOffice) -> KpiFacts:
    """The replica's fact reader/writer over the bound BackOffice (built once, in a thread)."""
    if _facts and _facts[0].store.session is bo.session:
        return _facts[0]
    from serve_apps.helpdesk.service import helpdesk

    hd = await helpdesk()
    async with _facts_lock:
        if not (_facts and _facts[0].store.session is bo.session):
            _facts[:] = [await asyncio.to_thread(KpiFacts, bo.session, hd.tickets, hd.sla,
                                                 bo.settings.kpi_day_concurrency)]
    return _facts[0]


def period_of(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    end = (end or now).astimezone(UTC) if (end is None or end.tzinfo) else end
    start = start or end - timedelta(days=DEFAULT_DAYS)
    if start.tzinfo is not None:
        start = start.astimezone(UTC)
    kpis.check_period(start, end)
    return start, end


async def kpi_report(bo: BackOffice, kb: KbService, op: Operator, brand: str, start: datetime | None,
                     end: datetime | None, team: str | None = None) -> tuple[kpis.KpiReport, str]:
    """The report and its scope ("all" or "own"), for the API and the dashboard page."""
    await authorize(bo, op, "ticket.read", Resource(kind="ticket", brand=brand))
    now = datetime.now(UTC)
    start, end = period_of(start, end, now)
    full = "report.read" in bo.policy.permissions_for(op.subject.roles)
    cap = bo.settings.kpi_max_tickets
    facts = await kpi_facts(bo)
    # The period from the per-day fact table; the backlog from the active statuses' queue rows
    # (they carry created_at, team and assignee: no ticket row is read per ticket).
    period_all, backlog = await asyncio.gather(facts.period(brand, start, end, cap, now), facts.backlog(brand, cap))

    def mine(f: kpis.TicketFact) -> bool:
        return (team is None or f.team == team) and (full or f.assignee == op.id)

    period = [f for f in period_all if mine(f)]
    active = [f for f in backlog if mine(f)]
    if len(period) + len(active) > cap:
        raise InvalidInput(f"more than {cap} tickets to read: choose a shorter period", field="to")
    return kpis.report(period, active, start, end, now), "all" if full else "own"


def report_json(report: kpis.KpiReport, scope: str, brand: str, team: str | None) -> dict[str, Any]:
    raw = asdict(report)
    for key in ("start", "end", "now"):
        raw[key] = raw[key].isoformat()
    return {"brand": brand, "team": team, "scope": scope, "time_basis": "calendar", **raw}


@router.get("/kpis", summary="Help-desk KPIs for a brand and period: first response and resolution time (median, "
            "p90, calendar seconds), tickets per channel, SLA breach rate, backlog by age; per team and agent")
async def get_kpis(
    op: Annotated[Operator, Require("ticket.read")], bo: BO, kb: KB, brand: Brand,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    team: Team | None = None,
) -> dict[str, Any]:
    report, scope = await kpi_report(bo, kb, op, brand, start, end, team)
    return report_json(report, scope, brand, team)
