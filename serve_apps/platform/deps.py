"""Dependencies of the platform API: the caller's brand from its API key, the router,
idempotency keys. Routes declare them with `Annotated`."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header

from adapters.cassandra.apikeys import key_hash
from domain.errors import Unauthorized, Unavailable
from serve_apps.access import mark_service

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


class KeyCache:
    """Recently checked API keys; a revoked key stops working within `ttl` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[str | None, float]] = {}

    def get(self, digest: str) -> tuple[bool, str | None]:
        hit = self._entries.get(digest)
        if hit is None or hit[1] < time.monotonic():
            return False, None
        return True, hit[0]

    def put(self, digest: str, brand: str | None) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (brand, time.monotonic() + self.ttl)


async def caller_brand(
    app: Platform,
    authorization: Annotated[str | None, Header(description="`Bearer <per-brand API key>`")] = None,
) -> str:
    if not authorization or not authorization.startswith("Bearer ") or len(authorization) > 512:
        raise Unauthorized("send the brand's API key as `Authorization: Bearer <key>`", field="Authorization")
    key = authorization.removeprefix("Bearer ").strip()
    digest = key_hash(key)
    cached, brand = app.key_cache.get(digest)
    if not cached:
        found = await app.keys.lookup(key)
        brand = found.brand if found is not None and not found.revoked else None
        app.key_cache.put(digest, brand)
    if brand is None:
        raise Unauthorized("unknown or revoked API key", field="Authorization")
    return brand


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
