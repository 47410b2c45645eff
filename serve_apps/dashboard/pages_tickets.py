"""Dashboard pages: the ticket queue (with live SLA countdowns), the ticket view, opening a ticket,
and the communication-history card of the player page. Same use cases as the help-desk API
(`serve_apps.helpdesk.service`); forms post here and come back to the page (303)."""

from __future__ import annotations

import json
from typing import Annotated, Any, get_args
from uuid import UUID, uuid4

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from actors.helpdesk_sla import alerts_key
from domain.errors import InvalidInput
from domain.tickets import TRANSITIONS
from schemas.tickets import MessageCreate, Priority, Status, TicketCreate, TicketPlayerLink, TicketUpdate
from serve_apps.backoffice.deps import BO, Operator, Require
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.dashboard.render import page, redirect
from serve_apps.helpdesk.service import ACTIVE_STATUSES, HD, Actor

router = APIRouter()


def _can(bo: BackOffice, op: Operator, permission: str) -> bool:
    return permission in bo.policy.permissions_for(op.subject.roles)


def _invalid(exc: ValidationError) -> InvalidInput:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "form"
    return InvalidInput(f"{where}: {str(err['msg']).removeprefix('Value error, ')}", field=where)


def _first_due(sla: dict[str, Any] | None) -> dict[str, Any] | None:
    """The target the queue counts down: the earliest live due time (breached ones first)."""
    if not sla:
        return None
    targets = [sla.get(k) for k in ("first_response", "next_response", "resolution")]
    live = [t for t in targets if t and t.get("due_at") and t.get("state") in ("ok", "warning", "breached")]
    if not live:
        return None
    best: dict[str, Any] = min(live, key=lambda t: (t["state"] != "breached", t["due_at"]))
    return best


async def _sla_alerts(bo: BackOffice, op: Operator, brand: str | None, per_brand: int = 10) -> list[dict[str, Any]]:
    """The scheduler's newest warnings and breaches for the brands a supervisor looks after."""
    brands = [brand] if brand else sorted(op.subject.brands)
    if "*" in brands:
        brands = await bo.keys.brands()
    alerts: list[dict[str, Any]] = []
    for b in brands[:20]:
        if brand is None and "*" not in op.subject.brands and b not in op.subject.brands:
            continue
        for raw in await bo.redis.lrange(alerts_key(b), 0, per_brand - 1):
            try:
                alerts.append({**json.loads(raw), "brand": b})
            except ValueError:  # a damaged entry must not take the queue page down
                continue
    alerts.sort(key=lambda a: str(a.get("at", "")), reverse=True)
    return alerts[:per_brand]


@router.get("/tickets", response_class=HTMLResponse)
async def tickets(
    request: Request,
    op: Annotated[Operator, Require("ticket.read")],
    bo: BO,
    hd: HD,
    status: Annotated[list[Status] | None, Query()] = None,
    brand: Annotated[str | None, Query(max_length=64)] = None,
    team: Annotated[str | None, Query(max_length=64)] = None,
    mine: Annotated[bool, Query()] = False,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
) -> Response:
    statuses = status or list(ACTIVE_STATUSES)
    result = await hd.queue(Actor.agent(op), statuses=statuses, brand=brand or None, team=team or None,
                            assignee=op.id if mine else None, cursor=cursor or None, limit=50)
    rows: list[dict[str, Any]] = [{"t": i.ticket, "due": _first_due(i.sla), "sla": i.sla} for i in result.items]
    # Most urgent first within the page: breached, then the nearest due time, then newest.
    rows.sort(key=lambda r: (r["due"] is None, r["due"]["due_at"] if r["due"] else ""))
    params = [("status", s) for s in statuses] + [(k, v) for k, v in (("brand", brand), ("team", team)) if v]
    if mine:
        params.append(("mine", "true"))
    supervisor = _can(bo, op, "ticket.assign")
    if brand and "*" not in op.subject.brands and brand not in op.subject.brands:
        supervisor = False
    alerts = await _sla_alerts(bo, op, brand or None) if supervisor else []
    return page(request, bo, "tickets.html", op, section="tickets", rows=rows, next_cursor=result.next_cursor,
                alerts=alerts, supervisor=supervisor,
                params=params, statuses=statuses, all_statuses=get_args(Status), brand=brand or "", team=team or "",
                mine=mine, teams=[t.name for t in hd.routing.teams], priorities=get_args(Priority),
                can_write=_can(bo, op, "ticket.write"), new_ticket_id=uuid4(), me_id=op.id)


@router.post("/tickets")
async def create_ticket(
    op: Annotated[Operator, Require("ticket.write")],
    hd: HD,
    ticket_id: Annotated[UUID, Form()],
    player_id: Annotated[UUID, Form()],
    brand: Annotated[str, Form(max_length=64)],
    category: Annotated[str, Form(max_length=64)],
    priority: Annotated[str, Form(max_length=2)],
    subject: Annotated[str, Form(max_length=400)],
    body: Annotated[str, Form(max_length=40_000)],
    language: Annotated[str, Form(max_length=16)] = "en",
) -> Response:
    try:
        data = TicketCreate.model_validate({
            "ticket_id": ticket_id, "player_id": player_id, "brand": brand, "channel": "web", "category": category,
            "priority": priority, "subject": subject, "body": body, "language": language,
        })
    except ValidationError as exc:
        raise _invalid(exc) from exc
    await hd.create_ticket(data, Actor.agent(op))
    return redirect(f"/tickets/{ticket_id}")


@router.get("/tickets/{ticket_id}", response_class=HTMLResponse)
async def ticket(ticket_id: UUID, request: Request, op: Annotated[Operator, Require("ticket.read")], bo: BO,
                 hd: HD) -> Response:
    view = await hd.get_ticket(ticket_id, Actor.agent(op))
    names = {a.agent_id: a.name for a in await hd.agents()}
    current = view.ticket.status
    moves = [current, *sorted(s for s in TRANSITIONS[current] if s != "closed")]
    by_id = {a.attachment_id: a for a in view.attachments}
    may_write = _can(bo, op, "ticket.write")
    linkable = may_write and view.ticket.player_id is None
    candidates = await hd.player_candidates(ticket_id, Actor.agent(op)) if linkable else []
    return page(request, bo, "ticket.html", op, section="tickets", v=view, t=view.ticket, due=_first_due(view.sla),
                moves=moves, priorities=get_args(Priority), teams=[t.name for t in hd.routing.teams], agents=names,
                attachments_by_id=by_id, can_write=may_write and current != "closed",
                can_assign=_can(bo, op, "ticket.assign"), me_id=op.id, new_message_id=uuid4(),
                can_link=may_write, candidates=candidates)


@router.post("/tickets/{ticket_id}/messages")
async def reply(
    ticket_id: UUID,
    op: Annotated[Operator, Require("ticket.write")],
    hd: HD,
    message_id: Annotated[UUID, Form()],
    body: Annotated[str, Form(max_length=40_000)],
    visibility: Annotated[str, Form(max_length=16)] = "public",
    attachments: Annotated[list[UUID] | None, Form()] = None,
) -> Response:
    try:
        data = MessageCreate.model_validate({"message_id": message_id, "body": body, "visibility": visibility,
                                             "author_kind": "agent", "attachments": attachments or []})
    except ValidationError as exc:
        raise _invalid(exc) from exc
    await hd.add_message(ticket_id, data, Actor.agent(op))
    return redirect(f"/tickets/{ticket_id}")


@router.post("/tickets/{ticket_id}/player")
async def link_player(
    ticket_id: UUID,
    op: Annotated[Operator, Require("ticket.write")],
    hd: HD,
    version: Annotated[int, Form()],
    player_id: Annotated[str, Form(max_length=64)],
) -> Response:
    """The ticket page's "Link to player" form (shown on a ticket without a player)."""
    try:
        data = TicketPlayerLink.model_validate({"player_id": player_id.strip(), "version": version})
    except ValidationError as exc:
        raise _invalid(exc) from exc
    await hd.link_player(ticket_id, data, Actor.agent(op))
    return redirect(f"/tickets/{ticket_id}")


@router.post("/tickets/{ticket_id}/update")
async def update(
    ticket_id: UUID,
    op: Annotated[Operator, Require("ticket.write")],
    hd: HD,
    version: Annotated[int, Form()],
    status: Annotated[str | None, Form(max_length=16)] = None,
    priority: Annotated[str | None, Form(max_length=2)] = None,
    team: Annotated[str | None, Form(max_length=64)] = None,
    assignee: Annotated[str | None, Form(max_length=128)] = None,
    tag: Annotated[str | None, Form(max_length=64)] = None,
) -> Response:
    fields: dict[str, Any] = {"version": version}
    for key, value in (("status", status), ("priority", priority), ("team", team)):
        if value:
            fields[key] = value
    if assignee is not None:
        fields["assignee"] = None if assignee in ("", "-") else assignee
    if tag:
        fields["tags_add"] = [tag]
    try:
        data = TicketUpdate.model_validate(fields)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    view = await hd.get_ticket(ticket_id, Actor.agent(op))
    # A select showing the current assignee sends it back unchanged: not an assignment.
    if "assignee" in fields and fields["assignee"] == view.ticket.assignee:
        data = TicketUpdate.model_validate({k: v for k, v in fields.items() if k != "assignee"})
    if "team" in fields and fields["team"] == view.ticket.team:
        data = TicketUpdate.model_validate({k: v for k, v in data.model_dump(exclude_unset=True).items()
                                            if k != "team"})
    await hd.update_ticket(ticket_id, data, Actor.agent(op))
    return redirect(f"/tickets/{ticket_id}")


@router.get("/players/{player_id}/history", response_class=HTMLResponse)
async def player_history(player_id: UUID, request: Request, op: Annotated[Operator, Require("ticket.read")], bo: BO,
                         hd: HD, cursor: Annotated[str | None, Query(max_length=4096)] = None) -> Response:
    """The communication-history card's content (loaded by htmx into the player page)."""
    result = await hd.player_history(player_id, Actor.agent(op), cursor or None, 50)
    return page(request, bo, "_history.html", op, items=result.items, next_cursor=result.next_cursor,
                player_id=player_id)
