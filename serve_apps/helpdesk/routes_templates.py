"""Help desk: reply templates (macros) (`/helpdesk/v1/templates`) and applying one to a ticket.

Access: templates are managed by kb.write holders (supervisors, admins: the people who own the
help desk's wording); agents who answer tickets (ticket.write) list and apply them. Applying
renders the template with the player's live data read through the player actors (`bo.players`,
never a copy), personal data only when the agent may read it (player.pii.read on that player),
then applies the template's actions (status, tags) through the ticket service, which audits the
ticket change; the application itself is on the audit record too (which template, whether
personal data was used).
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from adapters.cassandra.kb import TemplateRow
from domain import macros
from domain.errors import Conflict, InvalidInput, NotFound
from domain.policy import Resource
from schemas.macros import Language, TemplateApplied, TemplateApply, TemplateCreate, TemplatePublic, TemplateUpdate
from schemas.tickets import TicketUpdate
from serve_apps.backoffice import auditing
from serve_apps.backoffice.deps import BO, Operator, Require, authorize
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk.kb import KB, KbService, primary_language

router = APIRouter(tags=["reply templates"])


class TemplatePage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[TemplatePublic]


class PlaceholderInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    personal_data: bool


def template_public(t: TemplateRow) -> TemplatePublic:
    return TemplatePublic(
        template_id=t.template_id, language=t.language, name=t.name, body=t.body,
        set_status=t.set_status,
        add_tags=list(t.add_tags), placeholders=macros.check(t.body), version=t.version, created_at=t.created_at,
        updated_at=t.updated_at, updated_by=t.updated_by,
    )


def _trace(t: TemplateRow) -> dict[str, Any]:
    return {"version": t.version, "language": t.language, "name": t.name, "body": t.body, "set_status": t.set_status,
            "add_tags": list(t.add_tags), "deleted": t.deleted}


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


async def _live(kb: KbService, template_id: UUID) -> TemplateRow:
    t = await kb.templates.get(template_id)
    if t.deleted:
        raise NotFound(f"no template {template_id}", field="template_id")
    return t


# ----------------------------------------------------------------------------- CRUD


async def create_template(bo: BackOffice, kb: KbService, op: Operator,
                          body: TemplateCreate) -> tuple[TemplateRow, bool]:
    macros.check(body.body)  # an unknown placeholder is refused now, naming it
    now = _now()
    row = TemplateRow(template_id=body.template_id or uuid4(), language=body.language, name=body.name, body=body.body,
                      set_status=body.set_status, add_tags=tuple(body.add_tags), version=1, deleted=False,
                      created_at=now, updated_at=now, updated_by=op.id)
    stored, created = await kb.templates.create(row)
    if created:
        await auditing.record(bo, op, "template.create", target_kind="template", target_id=str(stored.template_id),
                              after=_trace(stored))
    return stored, created


async def update_template(bo: BackOffice, kb: KbService, op: Operator, template_id: UUID,
                          body: TemplateUpdate) -> TemplateRow:
    before = await _live(kb, template_id)
    changes = body.model_dump(exclude_unset=True, exclude={"version"})
    if body.version != before.version:
        raise Conflict(f"template {template_id} is at version {before.version}, not {body.version}: reload it",
                       field="version")
    if changes.get("body") is not None:
        macros.check(changes["body"])
    fields: dict[str, Any] = {k: v for k, v in changes.items() if v is not None or k == "set_status"}
    if "add_tags" in fields:
        fields["add_tags"] = tuple(fields["add_tags"])
    if all(getattr(before, k) == v for k, v in fields.items()):
        return before
    after = TemplateRow(**{**_row_dict(before), **fields, "version": before.version + 1, "updated_at": _now(),
                           "updated_by": op.id})
    await kb.templates.update(before, after)
    await auditing.record(bo, op, "template.update", target_kind="template", target_id=str(template_id),
                          before=_trace(before), after=_trace(after))
    return after


def _row_dict(t: TemplateRow) -> dict[str, Any]:
    return {k: getattr(t, k) for k in TemplateRow.__dataclass_fields__}


@router.get("/templates/placeholders", response_model=list[PlaceholderInfo],
            summary="The placeholders a template may use")
async def placeholders(_: Annotated[Operator, Require("ticket.write")]) -> list[PlaceholderInfo]:
    return [PlaceholderInfo(name=k, description=v, personal_data=k in macros.PII)
            for k, v in macros.PLACEHOLDERS.items()]


@router.post("/templates", status_code=201, response_model=TemplatePublic,
             summary="Create a template (an unknown placeholder is refused, 422 naming it)")
async def post_template(body: TemplateCreate, op: Annotated[Operator, Require("kb.write")], bo: BO,
                        kb: KB) -> Response:
    row, created = await create_template(bo, kb, op, body)
    return JSONResponse(template_public(row).model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/templates", response_model=TemplatePage, summary="The templates of a language, by name")
async def list_templates(language: Language, _: Annotated[Operator, Require("ticket.write")], kb: KB) -> TemplatePage:
    return TemplatePage(items=[template_public(t) for t in await kb.templates.by_language(language)])


@router.get("/templates/{template_id}", response_model=TemplatePublic, summary="One template")
async def get_template(template_id: UUID, _: Annotated[Operator, Require("ticket.write")], kb: KB) -> TemplatePublic:
    return template_public(await _live(kb, template_id))


@router.patch("/templates/{template_id}", response_model=TemplatePublic,
              summary="Change a template (send the version you edited: 409 if it changed since)")
async def patch_template(template_id: UUID, body: TemplateUpdate, op: Annotated[Operator, Require("kb.write")],
                         bo: BO, kb: KB) -> TemplatePublic:
    return template_public(await update_template(bo, kb, op, template_id, body))


@router.delete("/templates/{template_id}", status_code=204, summary="Delete a template (409 if it changed since)")
async def delete_template(template_id: UUID, version: Annotated[int, Query(ge=1)],
                          op: Annotated[Operator, Require("kb.write")], bo: BO, kb: KB) -> Response:
    await remove_template(bo, kb, op, template_id, version)
    return Response(status_code=204)


async def remove_template(bo: BackOffice, kb: KbService, op: Operator, template_id: UUID, version: int) -> None:
    before = await _live(kb, template_id)
    if version != before.version:
        raise Conflict(f"template {template_id} is at version {before.version}, not {version}: reload it",
                       field="version")
    after = TemplateRow(**{**_row_dict(before), "deleted": True, "version": before.version + 1, "updated_at": _now(),
                           "updated_by": op.id})
    await kb.templates.update(before, after)
    await auditing.record(bo, op, "template.delete", target_kind="template", target_id=str(template_id),
                          before=_trace(before), after=_trace(after))


# ----------------------------------------------------------------------------- applying


async def apply_template(bo: BackOffice, kb: KbService, op: Operator, ticket_id: UUID,
                         body: TemplateApply) -> TemplateApplied:
    t = await kb.tickets.get(ticket_id)
    await authorize(bo, op, "ticket.write", Resource(kind="ticket", id=str(ticket_id), brand=t.brand))
    tpl = await _live(kb, body.template_id)
    player: dict[str, Any] | None = None
    vip: str | None = None
    pii = False
    if t.player_id is not None and bo.players is not None:
        try:
            state = await bo.players.read(t.player_id, None)
        except NotFound:
            state = None
        if state is not None:
            vip = await bo.vip.manager_of(t.player_id)
            resource = Resource(kind="player", id=str(t.player_id), brand=state.get("brand"),
                                jurisdiction=(state.get("profile") or {}).get("country"), vip_manager=vip)
            if bo.policy.decide(op.subject, "player.read", resource).allowed:
                player = state
                pii = bo.policy.decide(op.subject, "player.pii.read", resource).allowed
    values = macros.values_for(player, t.public().model_dump(mode="json"), op.name, vip)
    rendered = macros.render(tpl.body, values, pii_allowed=pii)
    status = tpl.set_status if tpl.set_status != t.status else None
    tags = [tag for tag in tpl.add_tags if tag not in t.tags]
    version: int | None = None
    if body.apply_actions and (status or tags):
        from serve_apps.helpdesk.service import Actor, helpdesk

        hd = await helpdesk()
        update = TicketUpdate(version=body.ticket_version or t.version, status=status,
                              tags_add=tags)
        version = (await hd.update_ticket(ticket_id, update, Actor.agent(op))).version
    used = [p for p in macros.check(tpl.body) if p in macros.PII and pii]
    await auditing.record(
        bo, op, "template.apply", target_kind="ticket", target_id=str(ticket_id), brand=t.brand,
        after={"template_id": str(tpl.template_id), "template_version": tpl.version, "personal_data_used": used,
               "masked": list(rendered.masked), "actions_applied": bool(body.apply_actions and (status or tags)),
               "set_status": status if body.apply_actions else None, "added_tags": tags if body.apply_actions else []},
    )
    return TemplateApplied(
        template_id=tpl.template_id, ticket_id=ticket_id, body=rendered.text, missing=list(rendered.missing),
        masked=list(rendered.masked), set_status=status if body.apply_actions else None,
        added_tags=tags if body.apply_actions else [], ticket_version=version,
    )


async def _apply_body(request: Request) -> TemplateApply:
    """JSON from API callers; a form from the ticket page's htmx picker."""
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            raw: Any = await request.json()
        else:
            form = await request.form()
            raw = {k: v for k, v in form.items() if k in ("template_id", "ticket_version")}
            raw["apply_actions"] = form.get("apply_actions") in ("true", "on", "1")
            if not raw.get("ticket_version"):
                raw.pop("ticket_version", None)
        return TemplateApply.model_validate(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput("body: not JSON", field="body") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{field}: {first['msg']}", field=field) from exc


def applied_html(a: TemplateApplied) -> str:
    actions = []
    if a.set_status:
        actions.append(f"status set to {html.escape(a.set_status)}")
    if a.added_tags:
        actions.append("tags added: " + html.escape(", ".join(a.added_tags)))
    note = "; ".join(actions) or "no action applied"
    missing = (f'<p class="muted">No value for: {html.escape(", ".join(a.missing + a.masked))}</p>'
               if a.missing or a.masked else "")
    return (f'<div class="template-applied" data-testid="template-applied"><p>{note}</p>{missing}'
            f'<textarea name="body" rows="8" data-testid="template-text">{html.escape(a.body)}</textarea></div>')


@router.post("/tickets/{ticket_id}/apply-template", response_model=TemplateApplied,
             summary="Render a template for the ticket (player data per the agent's rights) and apply its actions "
                     "(an HTML fragment when HX-Request is sent)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": TemplateApply.model_json_schema()}}}})
async def post_apply_template(request: Request, ticket_id: UUID, op: Annotated[Operator, Require("ticket.write")],
                              bo: BO, kb: KB) -> Response:
    applied = await apply_template(bo, kb, op, ticket_id, await _apply_body(request))
    if request.headers.get("HX-Request"):
        return HTMLResponse(applied_html(applied))
    return JSONResponse(applied.model_dump(mode="json"))


@router.get("/tickets/{ticket_id}/templates", response_class=HTMLResponse,
            summary="The template picker fragment for the ticket page's <div id=\"reply-templates\">")
async def templates_fragment(ticket_id: UUID, op: Annotated[Operator, Require("ticket.write")], bo: BO,
                             kb: KB) -> HTMLResponse:
    t = await kb.tickets.get(ticket_id)
    await authorize(bo, op, "ticket.write", Resource(kind="ticket", id=str(ticket_id), brand=t.brand))
    items = await kb.templates.by_language(primary_language(t.language) or "en")
    if not items:
        return HTMLResponse('<p class="muted" data-testid="templates-empty">No reply template in this language.</p>')
    options = "".join(f'<option value="{x.template_id}">{html.escape(x.name)}</option>' for x in items)
    return HTMLResponse(
        f'<form hx-post="/helpdesk/v1/tickets/{ticket_id}/apply-template" hx-target="#reply-template-result" '
        f'hx-swap="innerHTML" data-testid="template-picker"><input type="hidden" name="ticket_version" '
        f'value="{t.version}"><select name="template_id" aria-label="Reply template">{options}</select> '
        f'<label><input type="checkbox" name="apply_actions" value="true"> apply its actions</label> '
        f'<button type="submit">Use template</button></form><div id="reply-template-result"></div>'
    )
