"""The dashboard (`/dashboard`): server-rendered pages for operators, on the same use cases
as the back-office API. Navigation and every page follow the policy of the operator's roles.

Bound at the bottom by `build_app`, deployed from the Serve config in `cluster/serve/`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from ray import serve
from ray.serve import Application
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.settings import get_settings
from domain.errors import NotFound, PitbossError, Unauthorized
from serve_apps.backoffice import deps
from serve_apps.backoffice.deps import Public
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.dashboard import pages, pages_auth, pages_chat, pages_kb, pages_segments, pages_tickets
from serve_apps.dashboard.render import STATIC, VENDORED, page, redirect
from serve_apps.middleware import PitbossMiddleware

app = FastAPI(title="Pitboss dashboard", version="1", docs_url=None, redoc_url=None, openapi_url=None)
app.include_router(pages_auth.router)
app.include_router(pages.router)
for module in (pages_tickets, pages_chat, pages_kb, pages_segments):
    app.include_router(module.router)
app.add_middleware(PitbossMiddleware, app_name="dashboard", max_body_bytes=256 * 1024)


def _error_page(request: Request, status: int, title: str, detail: str) -> Response:
    bo = deps._current[0] if deps._current else None
    if bo is None:
        return Response(detail, status_code=status, media_type="text/plain")
    return page(request, bo, "error.html", status=status, title=title, detail=detail)


@app.exception_handler(PitbossError)
async def _pitboss(request: Request, exc: PitbossError) -> Response:
    if isinstance(exc, Unauthorized) and request.method == "GET":
        return redirect("/login")
    return _error_page(request, exc.status, exc.title, exc.detail)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"][1:]) or "body"
    return _error_page(request, 422, "Invalid input", f"{field}: {first['msg']}")


@app.exception_handler(StarletteHTTPException)
async def _http(request: Request, exc: StarletteHTTPException) -> Response:
    return _error_page(request, exc.status_code, "Error", str(exc.detail))


@app.get("/static/{name}")
async def static(name: str, _: None = Public) -> Response:
    path = VENDORED.get(name) or STATIC / name
    if "/" in name or not path.is_file():
        raise NotFound("no such file")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


@serve.deployment(name="Dashboard")
@serve.ingress(app)
class Dashboard:
    # Serve awaits an async constructor: the first admin exists before the first request.
    async def __init__(self) -> None:  # type: ignore[misc]
        self.backoffice = BackOffice(get_settings())
        await self.backoffice.start()
        deps.bind(self.backoffice)


def build_app(args: dict[str, str]) -> Application:
    return Dashboard.bind()  # type: ignore[attr-defined,no-any-return]
