"""ASGI middleware shared by the Serve apps: request ids, body size cap, latency metrics,
structured access logs."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from prometheus_client import Histogram
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_apps.problems import problem

log = logging.getLogger("pitboss.access")

REQUEST_SECONDS = Histogram(
    "pitboss_http_request_duration_seconds",
    "HTTP request latency by app, route and status",
    ["app", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class _TooLarge(Exception):
    pass


class PitbossMiddleware:
    def __init__(self, app: ASGIApp, *, app_name: str, max_body_bytes: int) -> None:
        self.app = app
        self.app_name = app_name
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        request = Request(scope)
        length = headers.get(b"content-length")
        declared_too_large = length is not None and (not length.isdigit() or int(length) > self.max_body)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message

        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            if declared_too_large:
                raise _TooLarge
            await self.app(scope, limited, send_with_id)
        except _TooLarge:
            await problem(
                413,
                "Payload too large",
                f"the body may be at most {self.max_body} bytes",
                "payload-too-large",
                request,
                field="body",
            )(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUEST_SECONDS.labels(self.app_name, scope["method"], path, str(status)).observe(elapsed)
            if status >= 500 or log.isEnabledFor(logging.DEBUG):
                log.info(
                    _json(
                        app=self.app_name,
                        request_id=rid,
                        method=scope["method"],
                        route=path,
                        status=status,
                        ms=round(elapsed * 1000, 2),
                    )
                )


def _json(**fields: Any) -> str:
    return json.dumps(fields, separators=(",", ":"))
