"""The help desk (`/helpdesk/v1`): tickets from every channel with SLA clocks, live chat over
WebSocket, the phone webhook, the knowledge base and public FAQ, reply templates and the KPIs.
Agents authenticate with their back-office session; the platform with its brand's API key.

Bound at the bottom by `build_app`, deployed from the Serve config in `cluster/serve/`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from adapters.settings import get_settings
from serve_apps import problems
from serve_apps.backoffice import deps
from serve_apps.backoffice.deps import BO, Public
from serve_apps.backoffice.health import health_answer
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk import routes_chat, routes_kb, routes_kpis, routes_phone, routes_templates, routes_tickets
from serve_apps.helpdesk.worker import HelpdeskWorker, bind_worker, worker_state
from serve_apps.middleware import PitbossMiddleware

app = FastAPI(
    title="Pitboss help desk API",
    version="1",
    description="Tickets from the dashboard, the platform API, email, chat and phone, with SLA clocks; live chat "
    "over WebSocket; the knowledge base and public FAQ; reply templates; help-desk KPIs. Agents authenticate "
    "with the back-office session cookie (state-changing requests send `X-CSRF-Token`); the platform with "
    "`Authorization: Bearer <brand API key>`. Errors are application/problem+json.",
)
problems.install(app)
for module in (routes_tickets, routes_phone, routes_chat, routes_kb, routes_templates, routes_kpis):
    app.include_router(module.router)
# Attachments arrive in request bodies: the cap is the attachment limit plus multipart overhead.
app.add_middleware(PitbossMiddleware, app_name="helpdesk", max_body_bytes=11 * 1024 * 1024)


@app.get("/healthz", tags=["operations"], summary="Each dependency's state; 503 if any is down")
async def healthz(bo: BO, _: Annotated[None, Public] = None) -> JSONResponse:
    # The worker's background work (transcript copies, KPI facts, chat moves) can lag without
    # stopping a request here: degraded, not down.
    return await health_answer(bo, frozenset({"worker"}), worker=worker_state())


@serve.deployment(name="HelpdeskAPI")
@serve.ingress(app)
class HelpdeskAPI:
    async def __init__(self, worker: DeploymentHandle[Any]) -> None:  # type: ignore[misc]
        self.backoffice = BackOffice(get_settings())
        await self.backoffice.start()
        deps.bind(self.backoffice)
        bind_worker(worker)


def build_app(args: dict[str, str]) -> Application:
    return HelpdeskAPI.bind(HelpdeskWorker.bind())  # type: ignore[attr-defined,no-any-return]
