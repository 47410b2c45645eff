"""The dashboard's pages after login: players, operators, roles, API keys, sessions, audit."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args
from uuid import UUID, uuid4

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from domain.errors import InvalidInput, PitbossError
from schemas.adjustments import AdjustmentCreate, AdjustmentDecision
from schemas.operators import OperatorCreate, OperatorUpdate
from schemas.players import BlockCreate
from schemas.state import BlockKind
from serve_apps.backoffice import actions
from serve_apps.backoffice.deps import BO, Operator, Require, authorize
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.dashboard.render import page, redirect

router = APIRouter()
Csv = Annotated[str, Form(max_length=2000)]
RECENT_VERIFIED = 1000


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _can(bo: BackOffice, op: Operator, permission: str) -> bool:
    return permission in bo.policy.permissions_for(op.subject.roles)


def _invalid(exc: ValidationError) -> InvalidInput:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    return InvalidInput(f"{field}: {first['msg']}", field=field)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, op: Annotated[Operator, Require("dashboard.view")], bo: BO) -> Response:
    if op.session.operator.must_change_password:
        return redirect("/password")
    return page(
        request, bo, "home.html", op, section="home", permissions=sorted(bo.policy.permissions_for(op.subject.roles))
    )


@router.get("/password", response_class=HTMLResponse)
async def password_form(
    request: Request, op: Annotated[Operator, Require("mfa.manage_own", own=True)], bo: BO
) -> Response:
    return page(request, bo, "password.html", op)


@router.post("/password", response_class=HTMLResponse)
async def change_password(
    request: Request,
    op: Annotated[Operator, Require("mfa.manage_own", own=True)],
    bo: BO,
    old_password: Annotated[str, Form(max_length=256)],
    new_password: Annotated[str, Form(max_length=256)],
) -> Response:
    try:
        await actions.change_password(bo, op, old_password, new_password)
    except PitbossError as exc:
        return page(request, bo, "password.html", op, status=exc.status, error=exc.detail)
    return redirect("/")


# --- operators ---------------------------------------------------------------------------


async def _operators_page(
    request: Request, bo: BackOffice, op: Operator, cursor: str | None = None, **ctx: Any
) -> HTMLResponse:
    items, nxt = await bo.identity.list_operators(cursor, 100)
    return page(
        request,
        bo,
        "operators.html",
        op,
        section="operators",
        operators=items,
        next_cursor=nxt,
        roles=sorted(bo.policy.roles),
        can_create=_can(bo, op, "operator.create"),
        **ctx,
    )


@router.get("/operators", response_class=HTMLResponse)
async def operators(
    request: Request,
    op: Annotated[Operator, Require("operator.read")],
    bo: BO,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    return await _operators_page(request, bo, op, cursor)


@router.post("/operators", response_class=HTMLResponse)
async def create_operator(
    request: Request,
    op: Annotated[Operator, Require("operator.create")],
    bo: BO,
    username: Annotated[str, Form(max_length=64)],
    brands: Csv,
    jurisdictions: Csv,
    display_name: Annotated[str, Form(max_length=200)] = "",
    email: Annotated[str, Form(max_length=254)] = "",
    roles: Annotated[list[str] | None, Form()] = None,
) -> Response:
    try:
        data = OperatorCreate(
            username=username,
            display_name=display_name or username,
            email=email or None,
            roles=roles or [],
            brands=_csv(brands),
            jurisdictions=_csv(jurisdictions),
        )
    except ValidationError as exc:
        raise _invalid(exc) from exc
    created, password = await actions.create_operator(bo, op, data)
    return await _operators_page(request, bo, op, created=created, temporary_password=password)


async def _operator_page(request: Request, bo: BackOffice, op: Operator, operator_id: UUID, **ctx: Any) -> HTMLResponse:
    target = await bo.identity.get_operator(operator_id)
    sessions = await bo.identity.sessions_of(operator_id, None) if _can(bo, op, "session.read_any") else None
    return page(
        request,
        bo,
        "operator.html",
        op,
        section="operators",
        operator=target,
        roles=sorted(bo.policy.roles),
        sessions=sessions,
        end_action=f"/dashboard/operators/{operator_id}/sessions" if _can(bo, op, "session.end_any") else None,
        can_update=_can(bo, op, "operator.update") and str(operator_id) != op.id,
        can_disable=_can(bo, op, "operator.disable") and str(operator_id) != op.id,
        can_reset=_can(bo, op, "operator.reset") and str(operator_id) != op.id,
        **ctx,
    )


@router.get("/operators/{operator_id}", response_class=HTMLResponse)
async def operator(
    operator_id: UUID, request: Request, op: Annotated[Operator, Require("operator.read")], bo: BO
) -> Response:
    return await _operator_page(request, bo, op, operator_id)


@router.post("/operators/{operator_id}", response_class=HTMLResponse)
async def update_operator(
    operator_id: UUID,
    request: Request,
    op: Annotated[Operator, Require("operator.update")],
    bo: BO,
    brands: Csv,
    jurisdictions: Csv,
    roles: Annotated[list[str] | None, Form()] = None,
) -> Response:
    try:
        data = OperatorUpdate(roles=roles or [], brands=_csv(brands), jurisdictions=_csv(jurisdictions))
    except ValidationError as exc:
        raise _invalid(exc) from exc
    await actions.update_operator(bo, op, operator_id, data)
    return redirect(f"/operators/{operator_id}")


@router.post("/operators/{operator_id}/disable")
async def disable_operator(operator_id: UUID, op: Annotated[Operator, Require("operator.disable")], bo: BO) -> Response:
    await actions.set_disabled(bo, op, operator_id, True)
    return redirect(f"/operators/{operator_id}")


@router.post("/operators/{operator_id}/enable")
async def enable_operator(operator_id: UUID, op: Annotated[Operator, Require("operator.disable")], bo: BO) -> Response:
    await actions.set_disabled(bo, op, operator_id, False)
    return redirect(f"/operators/{operator_id}")


@router.post("/operators/{operator_id}/reset", response_class=HTMLResponse)
async def reset_operator(
    operator_id: UUID, request: Request, op: Annotated[Operator, Require("operator.reset")], bo: BO
) -> Response:
    _, password = await actions.reset_operator(bo, op, operator_id)
    return await _operator_page(request, bo, op, operator_id, temporary_password=password)


@router.post("/operators/{operator_id}/sessions/{handle}/end")
async def end_operator_session(
    operator_id: UUID, handle: str, op: Annotated[Operator, Require("session.end_any")], bo: BO
) -> Response:
    await actions.end_session_of(bo, op, operator_id, handle)
    return redirect(f"/operators/{operator_id}")


@router.get("/roles", response_class=HTMLResponse)
async def roles(request: Request, op: Annotated[Operator, Require("role.read")], bo: BO) -> Response:
    names = sorted(bo.policy.roles)
    matrix = {r: bo.policy.permissions_for([r]) for r in names}
    permissions = sorted(set().union(*matrix.values())) if matrix else []
    return page(
        request,
        bo,
        "roles.html",
        op,
        section="roles",
        roles=names,
        matrix=matrix,
        permissions=permissions,
        pii=sorted(bo.policy.pii_fields),
    )


# --- sessions ----------------------------------------------------------------------------


@router.get("/sessions", response_class=HTMLResponse)
async def my_sessions(
    request: Request, op: Annotated[Operator, Require("session.read_own", own=True)], bo: BO
) -> Response:
    sessions = await bo.identity.sessions_of(op.session.operator.operator_id, op.session.sid)
    return page(
        request, bo, "sessions.html", op, section="sessions", sessions=sessions, end_action="/dashboard/sessions"
    )


@router.post("/sessions/{handle}/end")
async def end_my_session(
    handle: str, op: Annotated[Operator, Require("session.end_own", own=True)], bo: BO
) -> Response:
    await actions.end_own_session(bo, op, handle)
    return redirect("/sessions")


# --- API keys ----------------------------------------------------------------------------


async def _keys_page(request: Request, bo: BackOffice, op: Operator, **ctx: Any) -> HTMLResponse:
    return page(
        request,
        bo,
        "apikeys.html",
        op,
        section="api-keys",
        keys=await actions.list_keys(bo, op, None),
        can_create=_can(bo, op, "apikey.create"),
        can_rotate=_can(bo, op, "apikey.rotate"),
        can_revoke=_can(bo, op, "apikey.revoke"),
        **ctx,
    )


@router.get("/api-keys", response_class=HTMLResponse)
async def api_keys(request: Request, op: Annotated[Operator, Require("apikey.read")], bo: BO) -> Response:
    return await _keys_page(request, bo, op)


@router.post("/api-keys", response_class=HTMLResponse)
async def create_key(
    request: Request,
    op: Annotated[Operator, Require("apikey.create")],
    bo: BO,
    brand: Annotated[str, Form(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")],
    label: Annotated[str, Form(min_length=1, max_length=200)],
) -> Response:
    _, key = await actions.create_key(bo, op, brand, label)
    return await _keys_page(request, bo, op, new_key=key, new_key_brand=brand)


@router.post("/api-keys/{brand}/{key_id}/rotate", response_class=HTMLResponse)
async def rotate_key(
    brand: str,
    key_id: UUID,
    request: Request,
    op: Annotated[Operator, Require("apikey.rotate")],
    bo: BO,
    grace_seconds: Annotated[int, Form(ge=0, le=7 * 24 * 3600)] = 0,
) -> Response:
    _, _, key = await actions.rotate_key(bo, op, brand, key_id, grace_seconds)
    return await _keys_page(request, bo, op, new_key=key, new_key_brand=brand)


@router.post("/api-keys/{brand}/{key_id}/revoke")
async def revoke_key(brand: str, key_id: UUID, op: Annotated[Operator, Require("apikey.revoke")], bo: BO) -> Response:
    await actions.revoke_key(bo, op, brand, key_id)
    return redirect("/api-keys")


# --- audit -------------------------------------------------------------------------------


@router.get("/audit", response_class=HTMLResponse)
async def audit(
    request: Request,
    op: Annotated[Operator, Require("audit.read")],
    bo: BO,
    cursor: Annotated[int | None, Query(ge=0)] = None,
    verify: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    entries = await bo.audit.recent(50, cursor)
    report, scope = None, ""
    if _can(bo, op, "audit.verify"):
        # The page always checks the newest entries; the whole chain on request.
        head = await bo.audit.head()
        newest = head.seq if head else 0
        start = None if verify else max(1, newest - RECENT_VERIFIED + 1)
        report = await bo.audit.verify(None, start, None)
        scope = "the whole chain" if verify else f"the newest {min(newest, RECENT_VERIFIED):,} entries"
    elif verify:
        await authorize(bo, op, "audit.verify")
    return page(
        request,
        bo,
        "audit.html",
        op,
        section="audit",
        entries=[e.model_dump(mode="json") for e in entries],
        next_cursor=entries[-1].seq if len(entries) == 50 else None,
        report=report,
        scope=scope,
        can_verify=_can(bo, op, "audit.verify"),
        can_export=_can(bo, op, "audit.export"),
    )


# --- players -----------------------------------------------------------------------------


@router.get("/players", response_class=HTMLResponse)
async def players(request: Request, op: Annotated[Operator, Require("player.read")], bo: BO) -> Response:
    return page(request, bo, "players.html", op, section="players")


@router.get("/players/lookup")
async def lookup(op: Annotated[Operator, Require("player.read")], player_id: Annotated[UUID, Query()]) -> Response:
    return redirect(f"/players/{player_id}")


@router.get("/players/{player_id}", response_class=HTMLResponse)
async def player(
    player_id: UUID, request: Request, op: Annotated[Operator, Require("player.read")], bo: BO
) -> Response:
    shown = await actions.read_player(bo, op, player_id)
    can_read_payments = _can(bo, op, "payment.read")
    return page(
        request,
        bo,
        "player.html",
        op,
        section="players",
        p=shown,
        block_kinds=get_args(BlockKind),
        can_block=_can(bo, op, "player.block"),
        can_unblock=_can(bo, op, "player.unblock"),
        adjustments=await actions.player_adjustments(bo, op, player_id) if can_read_payments else None,
        can_adjust=_can(bo, op, "payment.adjust"),
        can_approve=_can(bo, op, "payment.adjust.approve"),
        me_id=op.id,
        # A fresh id per page view: a double submit of the form is one adjustment.
        new_adjustment_id=uuid4(),
    )


@router.post("/players/{player_id}/blocks")
async def place_block(
    player_id: UUID,
    op: Annotated[Operator, Require("player.block")],
    bo: BO,
    kind: Annotated[str, Form(max_length=16)],
    reason: Annotated[str, Form(max_length=500)],
) -> Response:
    try:
        body = BlockCreate.model_validate({"kind": kind, "reason": reason})
    except ValidationError as exc:
        raise _invalid(exc) from exc
    await actions.place_block(bo, op, player_id, body, None)
    return redirect(f"/players/{player_id}")


@router.post("/players/{player_id}/blocks/{kind}/lift")
async def lift_block(
    player_id: UUID, kind: BlockKind, op: Annotated[Operator, Require("player.unblock")], bo: BO
) -> Response:
    await actions.lift_block(bo, op, player_id, kind, None)
    return redirect(f"/players/{player_id}")


# --- manual adjustments ------------------------------------------------------------------


@router.post("/players/{player_id}/adjustments")
async def request_adjustment(
    player_id: UUID,
    op: Annotated[Operator, Require("payment.adjust")],
    bo: BO,
    adjustment_id: Annotated[str, Form(max_length=36)],
    amount_minor: Annotated[str, Form(max_length=20)],
    currency: Annotated[str, Form(max_length=3)],
    reason: Annotated[str, Form(max_length=500)],
    case_ref: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    try:
        amount = int(amount_minor.strip())
    except ValueError:
        raise InvalidInput("amount_minor: a whole number of minor units (cents)", field="amount_minor") from None
    try:
        body = AdjustmentCreate.model_validate(
            {
                "adjustment_id": adjustment_id,
                "amount_minor": amount,
                "currency": currency,
                "reason": reason,
                "case_ref": case_ref.strip() or None,
            }
        )
    except ValidationError as exc:
        raise _invalid(exc) from exc
    await actions.request_adjustment(bo, op, player_id, body)
    return redirect(f"/players/{player_id}")


async def _decide(bo: BackOffice, op: Operator, adjustment_id: UUID, approve: bool, note: str, back: str) -> Response:
    data = AdjustmentDecision(note=note.strip() or None)
    if approve:
        adj = await actions.approve_adjustment(bo, op, adjustment_id, data)
    else:
        adj = await actions.reject_adjustment(bo, op, adjustment_id, data)
    return redirect("/adjustments" if back == "queue" else f"/players/{adj.player_id}")


Back = Annotated[Literal["player", "queue"], Form()]
NoteField = Annotated[str, Form(max_length=500)]


@router.post("/adjustments/{adjustment_id}/approve")
async def approve_adjustment(
    adjustment_id: UUID,
    op: Annotated[Operator, Require("payment.adjust.approve")],
    bo: BO,
    note: NoteField = "",
    back: Back = "player",
) -> Response:
    return await _decide(bo, op, adjustment_id, True, note, back)


@router.post("/adjustments/{adjustment_id}/reject")
async def reject_adjustment(
    adjustment_id: UUID,
    op: Annotated[Operator, Require("payment.adjust.approve")],
    bo: BO,
    note: NoteField = "",
    back: Back = "player",
) -> Response:
    return await _decide(bo, op, adjustment_id, False, note, back)


@router.get("/adjustments", response_class=HTMLResponse)
async def adjustments_queue(request: Request, op: Annotated[Operator, Require("payment.read")], bo: BO) -> Response:
    return page(
        request,
        bo,
        "adjustments.html",
        op,
        section="adjustments",
        pending=await actions.pending_adjustments(bo, op),
        can_approve=_can(bo, op, "payment.adjust.approve"),
        me_id=op.id,
    )
