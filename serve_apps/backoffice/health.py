"""Health of a back-office replica: what an on-call engineer looks at first."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from serve_apps.backoffice.runtime import BackOffice
from serve_apps.probes import health


async def health_answer(bo: BackOffice) -> JSONResponse:
    return await health(
        bo.settings.region, cassandra=bo.probe_cassandra(), redis=bo.probe_redis(), audit=bo.probe_audit()
    )
