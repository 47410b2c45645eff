"""Health of a back-office replica: what an on-call engineer looks at first."""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse

from serve_apps.backoffice.runtime import BackOffice
from serve_apps.probes import timed


async def health_answer(bo: BackOffice) -> JSONResponse:
    checks = dict(
        await asyncio.gather(
            timed("cassandra", bo.probe_cassandra()),
            timed("redis", bo.probe_redis()),
            timed("audit", bo.probe_audit()),
        )
    )
    ok = all(c["status"] == "up" for c in checks.values())
    return JSONResponse(
        {"status": "up" if ok else "down", "region": bo.settings.region, "checks": checks},
        status_code=200 if ok else 503,
    )
