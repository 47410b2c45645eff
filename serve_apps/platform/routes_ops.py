"""Health and metrics: what an on-call engineer and Prometheus look at."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

from serve_apps.access import Public
from serve_apps.platform.deps import Platform
from serve_apps.probes import health

router = APIRouter(tags=["operations"])


# The platform API answers without these: deposits and events go to the shards over HTTP. Their
# outage is reported (`degraded`) without taking the replica out of a load balancer.
OPTIONAL = frozenset({"redis", "rabbitmq", "consumers"})


@router.get("/healthz", summary="Each dependency's state; `degraded` (200) if only Redis or the bus is down, "
                                "503 if Cassandra or the shards are")
async def healthz(app: Platform, _: None = Public) -> JSONResponse:
    return await health(
        app.settings.region,
        OPTIONAL,
        cassandra=app.probe_cassandra(),
        redis=app.probe_redis(),
        rabbitmq=app.probe_rabbitmq(),
        shards=app.probe_shards(),
        consumers=app.probe_consumers(),
    )


class _ShardSamples:
    """Re-exports the shards' own metrics with a `shard` label."""

    def __init__(self, families: list[list[Any]]) -> None:
        self.families = families

    def collect(self) -> Any:
        merged: dict[str, Any] = {}
        for shard, fams in enumerate(self.families):
            for fam in fams:
                target = merged.get(fam.name)
                if target is None:
                    target = merged[fam.name] = type(fam)(fam.name, fam.documentation, fam.type, fam.unit)
                for s in fam.samples:
                    target.samples.append(s._replace(labels={**s.labels, "shard": str(shard)}))
        yield from merged.values()


@router.get("/metrics", summary="Prometheus metrics of this replica and of the region's shards")
async def metrics(app: Platform, _: None = Public) -> Response:
    try:
        families = await app.router.metric_families()
    except Exception:
        families = []
    shard_names = {f.name for fams in families for f in fams}
    registry = CollectorRegistry()
    registry.register(_ShardSamples(families))
    registry.register(_Local(shard_names))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Local:
    """This replica's metrics, less the families the shards report (defined in shared modules)."""

    def __init__(self, skip: set[str]) -> None:
        self.skip = skip

    def collect(self) -> Any:
        yield from (f for f in REGISTRY.collect() if f.name not in self.skip)
