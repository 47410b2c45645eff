"""The client libraries' exceptions that mean "a dependency is down or did not answer in time".

`serve_apps.problems` answers them as 503 problem+json with Retry-After, like `Unavailable`: the
caller should retry, and nothing in the request was wrong. Errors that mean a bug (a bad CQL
statement, a Redis command refused) are not here and stay 500.
"""

from __future__ import annotations

import cassandra
from cassandra.cluster import NoHostAvailable
from redis import exceptions as redis_errors

# Builtin ConnectionError covers the broker client's (aiormq's AMQPConnectionError derives from it),
# TimeoutError covers asyncio.wait_for giving up on any of them.
OUTAGES: tuple[type[Exception], ...] = (
    NoHostAvailable,
    cassandra.OperationTimedOut,
    cassandra.Unavailable,
    cassandra.Timeout,
    cassandra.CoordinationFailure,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def which(exc: BaseException) -> str:
    """The dependency an outage error came from, for the problem's detail."""
    module = type(exc).__module__
    if module.startswith("cassandra"):
        return "Cassandra"
    if module.startswith("redis"):
        return "Redis"
    if module.startswith(("aiormq", "aio_pika", "pamqp")):
        return "RabbitMQ"
    return "a dependency"
