"""How a route says who may call it, for every Serve app. Each route depends on exactly one of:
`Public` (no caller identity: health, login pages), the platform's brand API key (`service`),
or an operator permission (`serve_apps.backoffice.deps.Require`). The route-walk test reads
these markers back, so a route without one fails the suite."""

from __future__ import annotations

from typing import Any

from fastapi import Depends


async def _public() -> None:
    return None


_public.__pitboss_public__ = True  # type: ignore[attr-defined]
Public: Any = Depends(_public)


def mark_permission(call: Any, permission: str) -> None:
    call.__pitboss_permission__ = permission


def mark_service(call: Any) -> None:
    call.__pitboss_service__ = True


def route_marker(call: Any) -> tuple[str, str] | None:
    """("permission", name) | ("public", "") | ("service", "") for a dependency callable."""
    permission = getattr(call, "__pitboss_permission__", None)
    if permission:
        return "permission", str(permission)
    if getattr(call, "__pitboss_public__", False):
        return "public", ""
    if getattr(call, "__pitboss_service__", False):
        return "service", ""
    return None
