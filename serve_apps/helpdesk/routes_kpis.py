"""Help desk: KPIs (`GET /helpdesk/v1/kpis`). Definitions in `domain.helpdesk_kpis`.

Access (one rule): the route needs ticket.read on the brand. Holders of report.read (supervisors,
compliance, analysts with ticket.read, admins) see every team and agent; anyone else (a support
agent) sees only the tickets assigned to them. The answer says which (`scope`).

Data: the tickets created in the period are read through the queue tables by UTC day
(`adapters.cassandra.kb.TicketScan`; no ALLOW FILTERING), the backlog through the active
statuses' queue rows, each checked against its `tickets` row; the SLA verdicts come from the SLA
clocks (`HelpDesk.sla.statuses`) when they are installed. A request reads at most
`kpi_max_tickets` tickets (422 beyond: choose a shorter period).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query

from domain import helpdesk_kpis as kpis
from domain.errors import InvalidInput, PitbossError
from domain.policy import Resource
from domain.tickets import Ticket
from schemas.common import Brand
from schemas.tickets import STATUSES
from serve_apps.backoffice.deps import BO, Operator, Require, authorize
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk.kb import KB, KbService

router = APIRouter(tags=["KPIs"])
DEFAULT_DAYS = 7
Team = Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


def _fact(t: Ticket, breached: bool | None) -> kpis.TicketFact:
    return kpis.TicketFact(
        ticket_id=t.ticket_id, brand=t.brand, channel=t.channel, status=t.status, created_at=t.created_at, team=t.team,
        assignee=t.assignee, first_responded_at=t.first_responded_at, solved_at=t.solved_at, sla_breached=breached,
    )


async def _breaches(tickets: list[Ticket], now: datetime) -> dict[UUID, bool]:
    """Ticket id -> whether any SLA target was breached, for the tickets the SLA clocks know."""
    from serve_apps.helpdesk.service import helpdesk

    try:
        hd = await helpdesk()
        if hd.sla is None or not tickets:
            return {}
        statuses = await hd.sla.statuses(tickets, now)
    except PitbossError:
        return {}
    out: dict[UUID, bool] = {}
    for tid, status in statuses.items():
        if status is None:
            continue
        targets = status.targets() if hasattr(status, "targets") else ()
        out[tid] = any(getattr(x, "breached_at", None) is not None or getattr(x, "state", "") == "breached"
                       for x in targets)
    return out


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
    last = end - timedelta(milliseconds=1)
    # The queue rows carry team and assignee: only the tickets they name are read.
    who = None if full else op.id
    period_ids, active_ids = await asyncio.gather(
        kb.scan.ids(brand, STATUSES, start.strftime("%Y-%m-%d"), last.strftime("%Y-%m-%d"), cap, team=team,
                    assignee=who),
        kb.scan.ids(brand, sorted(kpis.ACTIVE), "0000-01-01", "9999-12-31", cap, team=team, assignee=who),
    )
    if len(set(period_ids) | set(active_ids)) > cap:
        raise InvalidInput(f"more than {cap} tickets to read: choose a shorter period", field="to")
    tickets = {t.ticket_id: t for t in await kb.scan.tickets(list(dict.fromkeys([*period_ids, *active_ids])))}
    keep = [t for t in tickets.values() if (team is None or t.team == team) and (full or t.assignee == op.id)]
    in_period = set(period_ids)
    # SLA verdicts count for the period's tickets only (the backlog is counted by age).
    breached = await _breaches([t for t in keep if t.ticket_id in in_period], now)
    facts = {t.ticket_id: _fact(t, breached.get(t.ticket_id)) for t in keep}
    period = [facts[i] for i in dict.fromkeys(period_ids) if i in facts]
    active = [f for f in facts.values() if f.status in kpis.ACTIVE]
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
