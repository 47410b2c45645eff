"""The one place where errors become `application/problem+json` (RFC 9457) for every app."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters import outages
from domain.errors import PitbossError

log = logging.getLogger("pitboss.http")
PROBLEM = "application/problem+json"


def problem(
    status: int, title: str, detail: str, slug: str, request: Request | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://pitboss.dev/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
        rid = getattr(request.state, "request_id", None)
        if rid:
            body["request_id"] = rid
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"Retry-After": "1"} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="pitboss"'}
    if status == 429:
        headers = {"Retry-After": str(int(extra.get("retry_after") or 1))}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, rest = parts[0], parts[1:]
        return ".".join(rest) if where == "body" and rest else ".".join(parts)
    return ".".join(parts)


def validation_problem(request: Request | None, errors: list[dict[str, Any]]) -> JSONResponse:
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        return problem(400, "Malformed JSON", str(first.get("msg")), "malformed-json", request, field="body")
    fields = [{"field": _loc(e["loc"]) or "body", "message": e["msg"]} for e in errors]
    first = fields[0]
    return problem(
        422,
        "Invalid input",
        f"{first['field']}: {first['message']}",
        "invalid-input",
        request,
        field=first["field"],
        errors=fields,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(PitbossError)
    async def _pitboss(request: Request, exc: PitbossError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.slug, request, field=exc.field, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(request, list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}
        return problem(
            exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail), f"http-{exc.status_code}", request
        )

    async def _outage(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s unavailable on %s: %r", outages.which(exc), request.url.path, exc)
        return problem(503, "Service unavailable", f"{outages.which(exc)} is unavailable; retry in a moment",
                       "unavailable", request)

    # Registered per class, not caught in the catch-all below: Starlette re-raises what reaches
    # the catch-all, which Serve then logs as a failed request with its traceback.
    for kind in outages.OUTAGES:
        app.add_exception_handler(kind, _outage)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged", "internal", request)
