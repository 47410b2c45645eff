"""Login, second factor, enrolment, SSO and logout pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from domain.errors import PitbossError, Unauthorized
from schemas.operators import LoginRequest
from serve_apps.admin.routes_auth import confirm_enrolment, end_session, login_password, second_factor
from serve_apps.backoffice import auditing
from serve_apps.backoffice.deps import (
    BO,
    Public,
    anonymous,
    clear_session_cookie,
    operator_of,
    session_id,
    session_info,
    set_session_cookie,
)
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.dashboard.render import page, redirect

router = APIRouter()
Code = Annotated[str, Form(max_length=32)]


def _login_page(
    request: Request, bo: BackOffice, error: str | None = None, status: int = 200, **ctx: Any
) -> HTMLResponse:
    return page(request, bo, "login.html", status=status, error=error, providers=bo.oidc.providers(), **ctx)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, bo: BO, _: None = Public) -> Response:
    sid = session_id(request, bo)
    info = await bo.identity.session(sid) if sid else None
    if info is not None and info.stage == "full":
        return redirect("/")
    return _login_page(request, bo)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    bo: BO,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    _: None = Public,
) -> Response:
    try:
        body = LoginRequest(username=username, password=password)
        info = await login_password(bo, request, body)
    except PitbossError as exc:
        return _login_page(request, bo, exc.detail, status=exc.status, username=username)
    except ValueError:
        return _login_page(request, bo, "wrong username or password", status=401, username=username)
    response = redirect("/enrol" if info.stage == "enrol" else "/2fa")
    set_session_cookie(response, bo, info.sid)
    return response


@router.get("/2fa", response_class=HTMLResponse)
async def code_form(request: Request, bo: BO, _: None = Public) -> Response:
    info = await session_info(request, bo, stages=("mfa",))
    return page(request, bo, "code.html", csrf=info.csrf)


@router.post("/2fa", response_class=HTMLResponse)
async def code(request: Request, bo: BO, code: Code, _: None = Public) -> Response:
    pending = await session_info(request, bo, stages=("mfa",))
    try:
        info = await second_factor(bo, request, pending, code.strip())
    except PitbossError as exc:
        if isinstance(exc, Unauthorized) and await bo.identity.session(session_id(request, bo) or "") is None:
            raise
        return page(request, bo, "code.html", status=exc.status, csrf=pending.csrf, error=exc.detail)
    response = redirect("/")
    set_session_cookie(response, bo, info.sid)
    return response


@router.get("/enrol", response_class=HTMLResponse)
async def enrol_form(request: Request, bo: BO, _: None = Public) -> Response:
    info = await session_info(request, bo, stages=("enrol",))
    e = await bo.identity.begin_enrolment(session_id(request, bo) or "")
    return page(request, bo, "enrol.html", csrf=info.csrf, secret=e.secret, qr_svg=e.qr_svg)


@router.post("/enrol", response_class=HTMLResponse)
async def enrol(request: Request, bo: BO, code: Code, _: None = Public) -> Response:
    pending = await session_info(request, bo, stages=("enrol",))
    try:
        info, codes = await confirm_enrolment(bo, request, pending, code.strip())
    except PitbossError as exc:
        e = await bo.identity.begin_enrolment(session_id(request, bo) or "")
        return page(
            request,
            bo,
            "enrol.html",
            status=exc.status,
            csrf=pending.csrf,
            error=exc.detail,
            secret=e.secret,
            qr_svg=e.qr_svg,
        )
    response = page(request, bo, "recovery.html", operator_of(request, info), codes=codes)
    set_session_cookie(response, bo, info.sid)
    return response


@router.post("/logout")
async def logout(request: Request, bo: BO, _: None = Public) -> Response:
    await end_session(bo, request)
    response = redirect("/login")
    clear_session_cookie(response, bo)
    return response


@router.get("/sso/{provider}/start")
async def sso_start(provider: str, request: Request, bo: BO, _: None = Public) -> Response:
    started = await bo.oidc.start(provider, bo.redirect_uri(provider))
    return RedirectResponse(started.url, status_code=303)


@router.get("/sso/{provider}/callback", response_class=HTMLResponse)
async def sso_callback(
    provider: str,
    request: Request,
    bo: BO,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    _: None = Public,
) -> Response:
    who = anonymous(request, f"sso:{provider}")
    try:
        if error and state:
            await bo.oidc.cancel(provider, state)
        if error or not code or not state:
            raise Unauthorized(f"the identity provider did not sign you in ({error or 'no code'})", field="code")
        identity, _return_to = await bo.oidc.finish(provider, code, state, bo.redirect_uri(provider))
        info = await bo.identity.sso_login(
            provider,
            identity.subject,
            identity.email,
            identity.name,
            identity.roles,
            identity.brands,
            identity.jurisdictions,
            who.ip,
            who.user_agent,
        )
    except PitbossError as exc:
        await auditing.record(bo, who, "auth.sso_login", target_kind="operator", outcome="denied", reason=exc.detail)
        return _login_page(request, bo, exc.detail, status=exc.status)
    await auditing.record(
        bo,
        operator_of(request, info),
        "auth.sso_login",
        target_kind="operator",
        target_id=str(info.operator.operator_id),
        after={"provider": provider, "roles": info.operator.roles},
    )
    response = redirect("/")
    set_session_cookie(response, bo, info.sid)
    return response
