"""The back-office API (`/admin/v1`): operators' login and second factor, operator and API-key
administration, sessions, the audit chain, and players as operators see them. The dashboard
pages call the same use cases (`serve_apps.backoffice.actions`).

Bound at the bottom by `build_app`, deployed from the Serve config in `cluster/serve/`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application

from adapters.settings import get_settings
from serve_apps import problems
from serve_apps.admin import (
    routes_adjustments,
    routes_audit,
    routes_auth,
    routes_keys,
    routes_operators,
    routes_players,
)
from serve_apps.backoffice import deps
from serve_apps.backoffice.deps import BO, Public
from serve_apps.backoffice.health import health_answer
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.middleware import PitbossMiddleware

app = FastAPI(
    title="Pitboss back-office API",
    version="1",
    description="What the dashboard does, as JSON: log in (password, then TOTP), administer operators, roles, "
    "API keys and sessions, read and verify the audit chain, look at players. Authenticated by the session "
    "cookie; every state-changing request sends the session's CSRF token in `X-CSRF-Token`. "
    "Errors are application/problem+json.",
)
problems.install(app)
for module in (routes_auth, routes_operators, routes_keys, routes_players, routes_adjustments, routes_audit):
    app.include_router(module.router)
app.add_middleware(PitbossMiddleware, app_name="admin", max_body_bytes=256 * 1024)


@app.get("/healthz", tags=["operations"], summary="Each dependency's state; 503 if any is down")
async def healthz(bo: BO, _: Annotated[None, Public] = None) -> JSONResponse:
    return await health_answer(bo)


@serve.deployment(name="AdminAPI")
@serve.ingress(app)
class AdminAPI:
    # Serve awaits an async constructor: the first admin exists before the first request.
    async def __init__(self) -> None:  # type: ignore[misc]
        self.backoffice = BackOffice(get_settings())
        await self.backoffice.start()
        deps.bind(self.backoffice)


def build_app(args: dict[str, str]) -> Application:
    return AdminAPI.bind()  # type: ignore[attr-defined,no-any-return]
