"""Health of a back-office replica: what an on-call engineer looks at first."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from fastapi.responses import JSONResponse

from serve_apps.backoffice.runtime import BackOffice
from serve_apps.probes import health


async def health_answer(bo: BackOffice, optional: frozenset[str] = frozenset(), **more: Awaitable[Any]
                        ) -> JSONResponse:
    """Cassandra, Redis and the audit log, plus the app's own `more` probes (`optional`: see `health`)."""
    return await health(bo.settings.region, optional, cassandra=bo.probe_cassandra(), redis=bo.probe_redis(),
                        audit=bo.probe_audit(), **more)
