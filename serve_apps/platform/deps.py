"""Dependencies of the platform API: the caller's brand from its API key, the router,
idempotency keys. Routes declare them with `Annotated`."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header

from domain.errors import Unavailable
from serve_apps.access import mark_service
from serve_apps.apikeys import brand_of

if TYPE_CHECKING:
    from serve_apps.platform.app import PlatformAPI


_current: list[PlatformAPI] = []


def bind(deployment: PlatformAPI) -> None:
    """Serve hands requests to a copy of the FastAPI app, so the replica registers itself here."""
    _current[:] = [deployment]


async def platform() -> PlatformAPI:
    if not _current:
        raise Unavailable("the platform API is starting")
    return _current[0]


Platform = Annotated["PlatformAPI", Depends(platform)]


async def caller_brand(
    app: Platform,
    authorization: Annotated[str | None, Header(description="`Bearer <per-brand API key>`")] = None,
) -> str:
    return await brand_of(authorization, app.key_cache, app.keys.lookup)


mark_service(caller_brand)
Brand = Annotated[str, Depends(caller_brand)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Makes a retried mutation return the first answer instead of applying twice.",
    ),
]


def fingerprint(route: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()[:32]
