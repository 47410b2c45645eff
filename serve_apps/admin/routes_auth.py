"""Login with password and second factor, enrolment, logout, the operator's own account."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response

from domain.errors import PitbossError
from schemas.operators import CodeRequest, LoginRequest, PasswordChange
from serve_apps.backoffice import actions, auditing
from serve_apps.backoffice.deps import (
    BO,
    Operator,
    Public,
    Require,
    anonymous,
    check_csrf,
    clear_session_cookie,
    operator_of,
    session_id,
    session_info,
    set_session_cookie,
)
from serve_apps.backoffice.identity import SessionInfo
from serve_apps.backoffice.runtime import BackOffice

router = APIRouter(prefix="/auth", tags=["authentication"])


def _answer(info: SessionInfo, **extra: Any) -> dict[str, Any]:
    return {"stage": info.stage, "csrf_token": info.csrf, "operator": info.operator.model_dump(mode="json"), **extra}


async def login_password(bo: BackOffice, request: Request, body: LoginRequest) -> SessionInfo:
    """Shared with the dashboard's login form."""
    who = anonymous(request, body.username)
    try:
        info = await bo.identity.login_password(body.username, body.password, who.ip, who.user_agent)
    except PitbossError as exc:
        await auditing.record(bo, who, "auth.login", target_kind="operator", outcome="denied", reason=exc.detail)
        raise
    return info


async def second_factor(bo: BackOffice, request: Request, pending: SessionInfo, code: str) -> SessionInfo:
    """Shared with the dashboard; `pending` is the session at its "mfa" stage."""
    who = operator_of(request, pending)
    try:
        info = await bo.identity.verify_code(pending.sid, code, who.ip)
    except PitbossError as exc:
        await auditing.record(
            bo, who, "auth.second_factor", target_kind="operator", target_id=who.id, outcome="denied", reason=exc.detail
        )
        raise
    await auditing.record(bo, operator_of(request, info), "auth.login", target_kind="operator", target_id=who.id)
    return info


@router.post("/login", summary="Password step; the answer says which second-factor step comes next")
async def login(body: LoginRequest, request: Request, response: Response, bo: BO, _: None = Public) -> dict[str, Any]:
    info = await login_password(bo, request, body)
    set_session_cookie(response, bo, info.sid)
    return _answer(info)


@router.post("/2fa/verify", summary="TOTP or recovery code; completes the login")
async def verify(body: CodeRequest, request: Request, response: Response, bo: BO, _: None = Public) -> dict[str, Any]:
    pending = await session_info(request, bo, stages=("mfa",))
    info = await second_factor(bo, request, pending, body.code)
    set_session_cookie(response, bo, info.sid)
    return _answer(info)


@router.post("/2fa/enrol", summary="Start TOTP enrolment: secret, otpauth URI and QR code")
async def enrol(request: Request, bo: BO, _: None = Public) -> dict[str, Any]:
    # Only a login that has no second factor yet enrols; replacing one goes through an admin
    # reset, so a stolen session cannot swap the authenticator.
    sid = session_id(request, bo) or ""
    await session_info(request, bo, stages=("enrol",))
    e = await bo.identity.begin_enrolment(sid)
    return {"secret": e.secret, "otpauth_uri": e.otpauth_uri, "qr_svg": e.qr_svg}


async def confirm_enrolment(
    bo: BackOffice, request: Request, pending: SessionInfo, code: str
) -> tuple[SessionInfo, list[str]]:
    """Shared with the dashboard; `pending` is the session at its "enrol" stage."""
    who = operator_of(request, pending)
    try:
        info, codes = await bo.identity.confirm_enrolment(pending.sid, code)
    except PitbossError as exc:
        await auditing.record(
            bo, who, "mfa.enrol", target_kind="operator", target_id=who.id, outcome="denied", reason=exc.detail
        )
        raise
    await auditing.record(bo, operator_of(request, info), "mfa.enrol", target_kind="operator", target_id=who.id)
    return info, codes


@router.post("/2fa/enrol/confirm", summary="Confirm enrolment with a first code; returns one-time recovery codes")
async def enrol_confirm(
    body: CodeRequest, request: Request, response: Response, bo: BO, _: None = Public
) -> dict[str, Any]:
    pending = await session_info(request, bo, stages=("enrol",))
    info, codes = await confirm_enrolment(bo, request, pending, body.code)
    set_session_cookie(response, bo, info.sid)
    return _answer(info, recovery_codes=codes)


async def end_session(bo: BackOffice, request: Request) -> None:
    """Log out the session of the cookie, if any (at any stage); shared with the dashboard."""
    sid = session_id(request, bo)
    info = await bo.identity.session(sid) if sid else None
    if info is None:
        return
    await check_csrf(request, bo, info)
    await bo.identity.logout(info.sid)
    await auditing.record(bo, operator_of(request, info), "auth.logout", target_kind="session", target_id=info.handle)


@router.post("/logout", status_code=204, summary="End this session")
async def logout(request: Request, bo: BO, _: None = Public) -> Response:
    await end_session(bo, request)
    out = Response(status_code=204)
    clear_session_cookie(out, bo)
    return out


@router.get("/me", summary="The operator of this session, their permissions and the CSRF token")
async def me(op: Annotated[Operator, Require("dashboard.view")], bo: BO) -> dict[str, Any]:
    return _answer(op.session, permissions=sorted(bo.policy.permissions_for(op.subject.roles)))


@router.post("/password", status_code=204, summary="Change one's own password")
async def change_password(
    body: PasswordChange, request: Request, op: Annotated[Operator, Require("mfa.manage_own", own=True)], bo: BO
) -> Response:
    await actions.change_password(bo, op, body.old_password, body.new_password)
    return Response(status_code=204)
