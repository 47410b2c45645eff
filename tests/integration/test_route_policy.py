"""Every route of every Serve app, against every role, answers as the policy says.

A route must declare exactly one of: a permission (`Require`), `Public`, or the platform's
API-key dependency; a new route without one fails here. Then each role's operator calls every
operator route: a 403 exactly where the policy denies the permission.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from adapters.policy_file import get_engine
from adapters.settings import Settings
from domain.policy import Resource, Subject
from serve_apps.access import route_marker
from serve_apps.admin.app import app as admin_app
from serve_apps.dashboard.app import app as dashboard_app
from serve_apps.helpdesk.app import app as helpdesk_app
from serve_apps.platform.app import app as platform_app
from serve_apps.segments.app import app as segments_app
from tests.integration.operators import BASE_URL, ROLES, LoggedIn, Operators

APPS: dict[str, tuple[FastAPI, str]] = {
    "platform": (platform_app, "/platform/v1"),
    "admin": (admin_app, "/admin/v1"),
    "dashboard": (dashboard_app, "/dashboard"),
    "helpdesk": (helpdesk_app, "/helpdesk/v1"),
    "segments": (segments_app, "/segments/v1"),
}
PARAMS = {"brand": "demo", "kind": "fraud", "handle": "no-such-session", "provider": "no-such-provider", "name": "x"}


def _markers(dep: Dependant) -> Iterator[tuple[str, str]]:
    marker = route_marker(dep.call) if dep.call is not None else None
    if marker is not None:
        yield marker
    for sub in dep.dependencies:
        yield from _markers(sub)


def _api_routes(items: list[Any]) -> Iterator[APIRoute]:
    for route in items:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI >= 0.165 keeps included routers as they are
            assert not getattr(route.include_context, "prefix", ""), "include routers without a prefix"
            yield from _api_routes(route.original_router.routes)


def routes() -> list[tuple[str, APIRoute, tuple[str, str]]]:
    out = []
    for name, (app, _) in APPS.items():
        for route in _api_routes(list(app.routes)):
            found = set(_markers(route.dependant))
            assert len(found) == 1, f"{name} {route.methods} {route.path}: declares {found or 'no access rule'}"
            out.append((name, route, found.pop()))
    return out


def test_every_route_declares_one_access_rule_the_policy_knows() -> None:
    engine = get_engine()
    seen = routes()
    assert len(seen) > 40
    for name, route, (kind, permission) in seen:
        if kind == "permission":
            assert engine.known_permission(permission), f"{name} {route.path}: unknown permission {permission}"
        if name == "platform":
            assert kind in ("service", "public"), f"platform route {route.path} must use the brand API key"
        elif name == "admin" or name == "dashboard":
            assert kind in ("permission", "public"), f"{name} route {route.path} must name a permission"
        else:
            # Apps an operator and the platform both call (tickets opened on a player's behalf).
            assert kind in ("permission", "public", "service"), f"{name} route {route.path}: {kind}"


def _url(prefix: str, path: str) -> str:
    return (
        BASE_URL
        + prefix
        + re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PARAMS.get(str(m.group(1)), str(uuid.uuid4())), path)
    )


@pytest.fixture(scope="module")
async def by_role(stack: Settings) -> AsyncIterator[dict[str, LoggedIn]]:
    ops = Operators(stack)
    try:
        yield {role: await ops.login([role]) for role in ROLES}
    finally:
        await ops.aclose()


async def _call(client: httpx.AsyncClient, method: str, url: str, csrf: str) -> httpx.Response:
    if method in ("GET", "DELETE"):
        return await client.request(method, url)
    if "/dashboard" in url:
        return await client.request(method, url, data={"csrf_token": csrf})
    return await client.request(method, url, json={})


async def test_each_role_is_answered_as_the_policy_says(by_role: dict[str, LoggedIn]) -> None:
    engine = get_engine()
    mismatches: list[str] = []
    checked = 0
    for name, route, (kind, permission) in routes():
        if kind != "permission":
            continue
        prefix = APPS[name][1]
        own = route.path.startswith("/sessions") or permission in ("mfa.manage_own",)
        for role, who in by_role.items():
            subject = Subject(who.operator_id, frozenset([role]), frozenset(["*"]), frozenset(["*"]))
            if own:
                resource = Resource(kind=permission.split(".")[0], owner=who.operator_id)
                expected = engine.decide(subject, permission, resource).allowed
            else:
                expected = engine.decide_role(subject, permission).allowed
            for method in sorted(set(route.methods or ()) - {"HEAD"}):
                r = await _call(who.client, method, _url(prefix, route.path), who.csrf)
                checked += 1
                if (r.status_code == 403) == expected or r.status_code in (401, 500):
                    mismatches.append(f"{role} {method} {prefix}{route.path}: {r.status_code} (allowed={expected})")
    assert checked > 200
    assert not mismatches, "\n".join(mismatches)


async def test_platform_routes_refuse_an_operator_session(by_role: dict[str, LoggedIn]) -> None:
    admin = by_role["admin"]
    r = await admin.client.get(f"{BASE_URL}/platform/v1/players/{uuid.uuid4()}")
    assert r.status_code == 401


async def test_operator_routes_refuse_a_missing_session(stack: Settings) -> None:
    async with httpx.AsyncClient(timeout=10) as anon:
        for name, route, (kind, _) in routes():
            if kind != "permission" or name == "platform":
                continue
            method = sorted(set(route.methods or ()) - {"HEAD"})[0]
            r = await anon.request(method, _url(APPS[name][1], route.path))
            want: Any = (303, 401, 403) if name == "dashboard" else (401,)
            assert r.status_code in want, f"{method} {route.path}: {r.status_code}"
