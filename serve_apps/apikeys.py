"""The casino platform's per-brand API keys as a request dependency: one check for every app the
platform calls (`/platform/v1`, and the help-desk and segmentation routes it calls on a player's
behalf)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cachetools import TTLCache

from adapters.cassandra.apikeys import ApiKey, key_hash
from domain.errors import Unauthorized

Lookup = Callable[[str], Awaitable[ApiKey | None]]
_MISS = "\0miss"  # no brand is named this: tells "not cached" from a cached "no such key" (None)


class KeyCache:
    """Recently checked API keys; a revoked key stops working within `ttl` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: TTLCache[str, str | None] = TTLCache(maxsize=10_000, ttl=ttl)

    def get(self, digest: str) -> tuple[bool, str | None]:
        hit = self._entries.get(digest, _MISS)
        return (False, None) if hit is _MISS else (True, hit)

    def put(self, digest: str, brand: str | None) -> None:
        self._entries[digest] = brand


async def brand_of(authorization: str | None, cache: KeyCache, lookup: Lookup) -> str:
    """The brand whose live key is in `Authorization: Bearer <key>`; 401 naming the header if none."""
    if not authorization or not authorization.startswith("Bearer ") or len(authorization) > 512:
        raise Unauthorized("send the brand's API key as `Authorization: Bearer <key>`", field="Authorization")
    key = authorization.removeprefix("Bearer ").strip()
    digest = key_hash(key)
    cached, brand = cache.get(digest)
    if not cached:
        found = await lookup(key)
        brand = found.brand if found is not None and not found.revoked else None
        cache.put(digest, brand)
    if brand is None:
        raise Unauthorized("unknown or revoked API key", field="Authorization")
    return brand
