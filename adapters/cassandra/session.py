"""Cassandra connection and an asyncio bridge for the driver's futures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, overload

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType, dict_factory
from prometheus_client import Histogram

from adapters.settings import Settings

CASSANDRA_LATENCY = Histogram(
    "pitboss_cassandra_request_seconds",
    "Latency of Cassandra requests made by Pitboss",
    ["op"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    """A timestamp as read back: the driver hands out naive datetimes that are UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def batch_of(statements: Sequence[Any], kind: BatchType = BatchType.UNLOGGED) -> BatchStatement:
    batch = BatchStatement(batch_type=kind)
    for stmt in statements:
        batch.add(stmt)
    return batch


async def abatch(session: Session, writes: Sequence[tuple[Any, Sequence[Any]]], op: str,
                 limit: asyncio.Semaphore | None = None) -> None:
    """Independent idempotent upserts (prepared statement, params) sent as one unlogged batch.

    Not for atomicity: for the cost. Each request costs the driver and the coordinator far more
    than each mutation in it, so the index rows that follow a commit go as one request."""
    if len(writes) == 1:
        await aexecute(session, writes[0][0], writes[0][1], op=op, limit=limit)
    elif writes:
        await aexecute(session, batch_of([stmt.bind(params) for stmt, params in writes]), None, op=op, limit=limit)


def applied(rows: list[dict[str, Any]]) -> bool:
    """Whether a lightweight transaction (`IF ...`) took effect."""
    return bool(rows) and bool(rows[0].get("[applied]"))


def connect(settings: Settings, keyspace: str | None = None) -> tuple[Cluster, Session]:
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.cassandra_local_dc)),
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
        request_timeout=10.0,
        row_factory=dict_factory,
    )
    auth = None
    if settings.cassandra_username:
        auth = PlainTextAuthProvider(settings.cassandra_username, settings.cassandra_password or "")
    cluster = Cluster(
        settings.contact_points(),
        port=settings.cassandra_port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        protocol_version=settings.cassandra_protocol_version,
        connect_timeout=10,
        idle_heartbeat_interval=10,
        reconnection_policy=ExponentialReconnectionPolicy(0.5, settings.cassandra_reconnect_max_seconds),
    )
    session = cluster.connect(keyspace)
    return cluster, session


async def aexecute(
    session: Session,
    query: Any,
    params: Sequence[Any] | None = None,
    op: str = "query",
    limit: asyncio.Semaphore | None = None,
) -> list[Any]:
    """Run a statement without blocking the event loop; returns all rows (first page).

    `limit` bounds the requests in flight, so a burst queues here rather than in Cassandra,
    where it would delay everything else on the connection (lease renewals included).
    """
    if limit is not None:
        async with limit:
            return await aexecute(session, query, params, op)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[list[Any]] = loop.create_future()
    started = time.perf_counter()
    rf: ResponseFuture = session.execute_async(query, params)

    def _ok(rows: Any) -> None:
        CASSANDRA_LATENCY.labels(op).observe(time.perf_counter() - started)
        loop.call_soon_threadsafe(_set, fut, list(rows) if rows is not None else [])

    def _err(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_fail, fut, exc)

    rf.add_callbacks(_ok, _err)
    return await fut


def _set(fut: asyncio.Future[list[Any]], value: list[Any]) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[list[Any]], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
