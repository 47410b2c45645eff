"""The segmentation service (`/segments/v1`): dynamic player segments as JSON rules over the
players' features, previews and materialised membership, A/B experiments with a holdout, and
audited exports. The feature matrix lives in the region's segment engine actor.

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
from serve_apps.backoffice import deps
from serve_apps.backoffice.deps import BO, Public
from serve_apps.backoffice.health import health_answer
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.middleware import PitbossMiddleware
from serve_apps.segments import routes_experiments, routes_segments

app = FastAPI(
    title="Pitboss segmentation API",
    version="1",
    description="Player segments as JSON rule trees over the feature catalogue: validate, preview (count and a "
    "masked sample), materialise with live membership, size history, A/B experiments with a holdout, CSV "
    "export (audited). Authenticated by the back-office session cookie; state-changing requests send "
    "`X-CSRF-Token`. Errors are application/problem+json.",
)
problems.install(app)
for module in (routes_segments, routes_experiments):
    app.include_router(module.router)
app.add_middleware(PitbossMiddleware, app_name="segments", max_body_bytes=256 * 1024)


@app.get("/healthz", tags=["operations"], summary="Each dependency's state; 503 if any is down")
async def healthz(bo: BO, _: Annotated[None, Public] = None) -> JSONResponse:
    return await health_answer(bo)


@serve.deployment(name="SegmentsAPI")
@serve.ingress(app)
class SegmentsAPI:
    async def __init__(self) -> None:  # type: ignore[misc]
        self.backoffice = BackOffice(get_settings())
        await self.backoffice.start()
        deps.bind(self.backoffice)


def build_app(args: dict[str, str]) -> Application:
    return SegmentsAPI.bind()  # type: ignore[attr-defined,no-any-return]
