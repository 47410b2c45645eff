"""Timed dependency probes for the apps' /healthz answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any


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
