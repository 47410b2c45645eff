"""Server-rendered pages: one Jinja2 environment, navigation by permission, errors as pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from serve_apps.backoffice.deps import Operator
from serve_apps.backoffice.runtime import BackOffice

BASE = "/dashboard"
ADMIN = "/admin/v1"
TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")
# htmx comes from the npm registry at install time (cluster/local/install.sh), never committed.
VENDOR = Path(__file__).resolve().parents[2] / ".data" / "vendor" / "npm" / "node_modules"
VENDORED = {"htmx.min.js": VENDOR / "htmx.org" / "dist" / "htmx.min.js"}

env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), auto_reload=False)

# (section, label, path, permission): a link shows only to roles whose policy grants it.
NAV = (
    ("home", "Home", "/", "dashboard.view"),
    ("players", "Players", "/players", "player.read"),
    ("adjustments", "Adjustments", "/adjustments", "payment.read"),
    ("tickets", "Tickets", "/tickets", "ticket.read"),
    ("chat", "Live chat", "/chat", "ticket.write"),
    ("kb", "Knowledge base", "/kb", "kb.read"),
    ("helpdesk-kpis", "Help desk KPIs", "/helpdesk/kpis", "ticket.read"),
    ("segments", "Segments", "/segments", "segment.read"),
    ("experiments", "A/B tests", "/experiments", "segment.read"),
    ("operators", "Operators", "/operators", "operator.read"),
    ("roles", "Roles", "/roles", "role.read"),
    ("api-keys", "API keys", "/api-keys", "apikey.read"),
    ("audit", "Audit log", "/audit", "audit.read"),
    ("sessions", "My sessions", "/sessions", "session.read_own"),
)


def nav_for(bo: BackOffice, op: Operator) -> list[dict[str, str]]:
    held = bo.policy.permissions_for(op.subject.roles)
    return [{"key": k, "label": label, "href": href} for k, label, href, perm in NAV if perm in held]


def page(
    request: Request,
    bo: BackOffice,
    template: str,
    op: Operator | None = None,
    *,
    status: int = 200,
    section: str = "",
    csrf: str | None = None,
    **context: Any,
) -> HTMLResponse:
    html = env.get_template(template).render(
        base=BASE,
        admin=ADMIN,
        me=op.session.operator if op else None,
        nav=nav_for(bo, op) if op else [],
        csrf=op.session.csrf if op else csrf,
        section=section,
        htmx=VENDORED["htmx.min.js"].exists(),
        flashes=context.pop("flashes", []),
        **context,
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            # Pages embed no third-party content; inline SVG (the QR code) is allowed by default.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
        },
    )


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(f"{BASE}{path}", status_code=303)
