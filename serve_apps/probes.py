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


async def health(region: str, **probes: Awaitable[Any]) -> JSONResponse:
    """200 when every probe answers within 3 s, else 503; each dependency's state either way."""
    checks = dict(await asyncio.gather(*(timed(name, probe) for name, probe in probes.items())))
    ok = all(c["status"] == "up" for c in checks.values())
    return JSONResponse(
        {"status": "up" if ok else "down", "region": region, "checks": checks}, status_code=200 if ok else 503
    )
