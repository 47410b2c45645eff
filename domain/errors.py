"""The one exception tree of Pitboss. `serve_apps.problems` maps it to problem+json.

PitbossError
├── InvalidInput   422  a field or rule of the request is wrong (`field` names it)
├── Unauthorized   401  no or unknown credentials
├── Forbidden      403  known caller, not allowed (other brand, wrong role)
├── NotFound       404  unknown resource
├── Conflict       409  the request contradicts the current state or an earlier request
│   └── NotHomeRegion   the player is owned by another live region
├── RateLimited    429  too many attempts (logins, codes); `extra["retry_after"]` in seconds
└── Unavailable    503  a dependency or the owner of the player cannot serve now; retry
    └── StaleOwner      this shard lost the player's ownership lease (fenced)
"""

from __future__ import annotations

from typing import Any


class PitbossError(Exception):
    status = 500
    title = "Internal error"
    slug = "internal"

    def __init__(self, detail: str, *, field: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray pickles exceptions across processes; keyword-only arguments need explicit support.
        return (_rebuild, (type(self), self.detail, self.field, self.extra))


def _rebuild(cls: type[PitbossError], detail: str, field: str | None, extra: dict[str, Any]) -> PitbossError:
    return cls(detail, field=field, extra=extra)


class InvalidInput(PitbossError):
    status = 422
    title = "Invalid input"
    slug = "invalid-input"


class Unauthorized(PitbossError):
    status = 401
    title = "Unauthorized"
    slug = "unauthorized"


class Forbidden(PitbossError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class NotFound(PitbossError):
    status = 404
    title = "Not found"
    slug = "not-found"


class Conflict(PitbossError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class NotHomeRegion(Conflict):
    title = "Player is owned by another region"
    slug = "not-home-region"


class RateLimited(PitbossError):
    status = 429
    title = "Too many requests"
    slug = "rate-limited"


class Unavailable(PitbossError):
    status = 503
    title = "Service unavailable"
    slug = "unavailable"


class StaleOwner(Unavailable):
    title = "Ownership lost"
    slug = "stale-owner"
