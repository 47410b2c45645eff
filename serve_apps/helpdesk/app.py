"""The help desk (`/helpdesk/v1`): tickets from every channel with SLA clocks, live chat over
WebSocket, the phone webhook, the knowledge base and public FAQ, reply templates and the KPIs.
Agents authenticate with their back-office session; the platform with its brand's API key.

Bound at the bottom by `build_app`, deployed from the Serve config in `cluster/serve/`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application

from adapters.bus_consumer import QueueConsumer
from adapters.cassandra.chat import ChatStore
from adapters.settings import get_settings
from serve_apps import problems
from serve_apps.backoffice import deps
from serve_apps.backoffice.deps import BO, Public
from serve_apps.backoffice.health import health_answer
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk import routes_chat, routes_kb, routes_kpis, routes_phone, routes_templates, routes_tickets
from serve_apps.helpdesk.chat_moves import ChatMoveConsumer
from serve_apps.helpdesk.kpi_facts import KpiFactConsumer
from serve_apps.helpdesk.service import helpdesk
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
    return await health_answer(bo)


@serve.deployment(name="HelpdeskAPI")
@serve.ingress(app)
class HelpdeskAPI:
    async def __init__(self) -> None:  # type: ignore[misc]
        self.backoffice = BackOffice(get_settings())
        await self.backoffice.start()
        deps.bind(self.backoffice)
        # Background consumers of the ticket events, on shared queues (every replica competes):
        # the KPI fact writer and the chat consoles' reassignment notices.
        bo = self.backoffice
        hd = await helpdesk()
        self.consumers: list[QueueConsumer] = [
            ChatMoveConsumer(bo.settings, hd.tickets, await asyncio.to_thread(ChatStore, bo.session), bo.redis)]
        if bo.settings.helpdesk_kpi_consumer:
            self.consumers.append(KpiFactConsumer(bo.settings, await routes_kpis.kpi_facts(bo)))
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(c.run(), name=f"consumer-{c.label}") for c in self.consumers]

    async def check_health(self) -> None:
        for task, consumer in zip(self.tasks, self.consumers, strict=True):
            if task.done():
                raise RuntimeError(f"the {consumer.label} consumer stopped")

    async def __del__(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for consumer in self.consumers:
            await consumer.stop()


def build_app(args: dict[str, str]) -> Application:
    return HelpdeskAPI.bind()  # type: ignore[attr-defined,no-any-return]
