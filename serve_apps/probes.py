"""Timed dependency probes and the /healthz answer every app gives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from fastapi.responses import JSONResponse


async def timed(name: str, probe: Awaitable[Any]) -> tuple[str, dict[str, Any]]:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe, 3.0)
        state: dict[str, Any] = {"status": "up", "ms": round((time.perf_counter() - started) * 1000, 1)}
        if detail:
            state["detail"] = detail
    except Exception as exc:
        state = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return name, state


async def health(region: str, optional: frozenset[str] = frozenset(), **probes: Awaitable[Any]) -> JSONResponse:
    """Each dependency's state. 200 `up` when every probe answers within 3 s; 200 `degraded` when
    only `optional` ones (the app serves without them) are down; else 503 `down`, so a load balancer
    takes the replica out only when it cannot serve."""
    checks = dict(await asyncio.gather(*(timed(name, probe) for name, probe in probes.items())))
    failed = {name for name, c in checks.items() if c["status"] != "up"}
    status = "up" if not failed else "degraded" if failed <= optional else "down"
    return JSONResponse({"status": status, "region": region, "checks": checks},
                        status_code=503 if status == "down" else 200)
