"""Dependencies of the back-office apps: the operator behind a session cookie, CSRF, and the
permission every route declares. Routes say `op: Annotated[Operator, Require("x.y")]`; the
route-walk test reads the permission back from the dependency, so a route without one fails.

Every route depends on exactly one access rule (see `serve_apps.access`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Header, Request, Response

from domain.errors import Forbidden, Unauthorized, Unavailable
from domain.identity import client_address
from domain.policy import Decision, Resource, Subject
from serve_apps.access import Public, mark_permission, mark_service
from serve_apps.apikeys import brand_of
from serve_apps.backoffice import auditing
from serve_apps.backoffice.auditing import Anonymous
from serve_apps.backoffice.identity import SessionInfo
from serve_apps.backoffice.runtime import BackOffice

_current: list[BackOffice] = []
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TEMPORARY_PASSWORD_ALLOWS = frozenset({"dashboard.view", "mfa.manage_own"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def bind(bo: BackOffice) -> None:
    """Serve hands requests to a copy of the FastAPI app, so the replica registers itself here."""
    _current[:] = [bo]


async def backoffice() -> BackOffice:
    if not _current:
        raise Unavailable("the back office is starting")
    return _current[0]


BO = Annotated[BackOffice, Depends(backoffice)]


async def brand_key(
    bo: BO, authorization: Annotated[str | None, Header(description="`Bearer <per-brand API key>`")] = None
) -> str:
    """The casino platform calling on a player's behalf, as the brand of its API key."""
    return await brand_of(authorization, bo.key_cache, bo.keys.lookup)


mark_service(brand_key)
BrandKey = Annotated[str, Depends(brand_key)]


def cookie_name(secure: bool) -> str:
    # `__Host-` makes the browser refuse the cookie unless Secure, host-only and Path=/.
    return "__Host-pitboss_session" if secure else "pitboss_session"


def session_id(request: Request, bo: BackOffice) -> str | None:
    sid = request.cookies.get(cookie_name(bo.settings.cookie_secure))
    return sid if sid and len(sid) <= 128 else None


def client_ip(request: Request) -> str | None:
    # X-Forwarded-For counts only as far as it was written by proxies we trust.
    peer = request.client.host if request.client else None
    bo = _current[0] if _current else None
    networks = bo.identity.proxies if bo else []
    return client_address(peer, request.headers.get("x-forwarded-for"), networks)


@dataclass(frozen=True, slots=True)
class Operator:
    """The authenticated operator of one request."""

    session: SessionInfo
    subject: Subject
    ip: str | None
    user_agent: str | None
    request_id: str | None

    @property
    def id(self) -> str:
        return self.subject.operator_id

    @property
    def name(self) -> str:
        return self.session.operator.username


def subject_of(info: SessionInfo) -> Subject:
    op = info.operator
    return Subject(
        operator_id=str(op.operator_id),
        roles=frozenset(op.roles),
        brands=frozenset(op.brands),
        jurisdictions=frozenset(op.jurisdictions),
    )


async def _form_token(request: Request) -> str | None:
    if request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def check_origin(request: Request, bo: BackOffice) -> None:
    """A cross-site form post carries the attacker's Origin; refuse it before anything else."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return
    allowed = {urlsplit(bo.settings.public_base_url).netloc, request.headers.get("host", "")}
    if urlsplit(origin).netloc not in allowed:
        raise Forbidden("cross-site request refused", field="Origin")


async def check_csrf(request: Request, bo: BackOffice, info: SessionInfo) -> None:
    """A forged cross-site request is an attack on this operator: refused and on the record."""
    if request.method not in UNSAFE:
        return
    try:
        check_origin(request, bo)
        token = request.headers.get(CSRF_HEADER) or await _form_token(request)
        if not token or not hmac.compare_digest(token.encode(), info.csrf.encode()):
            raise Forbidden(f"missing or wrong CSRF token (send the {CSRF_HEADER} header)", field=CSRF_HEADER)
    except Forbidden as exc:
        await auditing.record(
            bo,
            operator_of(request, info),
            "auth.csrf",
            target_kind="request",
            target_id=f"{request.method} {request.url.path}"[:200],
            outcome="denied",
            reason=exc.detail,
        )
        raise


async def session_info(request: Request, bo: BackOffice, *, stages: tuple[str, ...] = ("full",)) -> SessionInfo:
    sid = session_id(request, bo)
    info = await bo.identity.session(sid) if sid else None
    if info is None:
        raise Unauthorized("log in first (no session, or it expired or was revoked)", field="session")
    if info.stage not in stages:
        raise Unauthorized("finish the second factor first", field="session", extra={"stage": info.stage})
    await check_csrf(request, bo, info)
    return info


def _origin(request: Request) -> tuple[str | None, str | None, str | None]:
    """(address, user agent, request id) of a request, as the audit record keeps them."""
    return (
        client_ip(request),
        (request.headers.get("user-agent") or "")[:300] or None,
        getattr(request.state, "request_id", None),
    )


def operator_of(request: Request, info: SessionInfo) -> Operator:
    ip, user_agent, request_id = _origin(request)
    return Operator(session=info, subject=subject_of(info), ip=ip, user_agent=user_agent, request_id=request_id)


def anonymous(request: Request, name: str) -> Anonymous:
    """Someone not signed in (a login attempt, an SSO callback), for the audit record."""
    return Anonymous(name, *_origin(request))


async def _refused(
    bo: BackOffice, op: Operator, permission: str, decision: Decision, resource: Resource | None, target_id: str | None
) -> None:
    if decision.allowed:
        return
    await auditing.record(
        bo,
        op,
        permission,
        target_kind=resource.kind if resource else permission.split(".")[0],
        target_id=target_id or (resource.id if resource else None),
        brand=resource.brand if resource else None,
        outcome="denied",
        reason=decision.reason,
    )
    raise Forbidden(decision.reason, extra={"permission": permission})


async def authorize(
    bo: BackOffice, op: Operator, permission: str, resource: Resource | None = None, *, target_id: str | None = None
) -> Decision:
    """The policy's answer on a resource; a denial is audited and raised as 403."""
    decision = bo.policy.decide(op.subject, permission, resource)
    await _refused(bo, op, permission, decision, resource, target_id)
    return decision


def Require(permission: str, *, own: bool = False) -> Any:
    """A dependency giving the operator if their roles hold `permission` at all. Attribute
    conditions on a particular player, key or operator are checked again by the route with
    that resource. `own`: the resource is the operator's own (sessions, second factor)."""

    async def require(request: Request, bo: BO) -> Operator:
        info = await session_info(request, bo)
        op = operator_of(request, info)
        if info.operator.must_change_password and permission not in TEMPORARY_PASSWORD_ALLOWS:
            # An admin knows a temporary password; nothing happens under it but replacing it.
            raise Forbidden("change your temporary password first", field="password")
        if own:
            await authorize(bo, op, permission, Resource(kind=permission.split(".")[0], owner=op.id))
        else:
            # The role gate: conditions on a particular player, key or operator need that resource,
            # so the route checks them again with `authorize` once it has loaded it.
            await _refused(bo, op, permission, bo.policy.decide_role(op.subject, permission), None, None)
        return op

    mark_permission(require, permission)
    return Depends(require)


def set_session_cookie(response: Response, bo: BackOffice, sid: str) -> None:
    response.set_cookie(
        cookie_name(bo.settings.cookie_secure),
        sid,
        max_age=bo.settings.session_absolute_seconds,
        path="/",
        secure=bo.settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, bo: BackOffice) -> None:
    response.delete_cookie(
        cookie_name(bo.settings.cookie_secure),
        path="/",
        secure=bo.settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )


__all__ = ["BO", "Operator", "Public", "Require", "authorize"]
