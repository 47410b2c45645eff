"""The one mapping of errors to problem+json: a dependency's outage is a 503 to retry, never a 500."""

from __future__ import annotations

import cassandra
import pytest
from cassandra.cluster import NoHostAvailable
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis import exceptions as redis_errors

from serve_apps import problems


def _client(exc: Exception) -> TestClient:
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("exc", "who"),
    [
        (NoHostAvailable("Unable to complete the operation against any hosts", {}), "Cassandra"),
        (cassandra.OperationTimedOut("timed out"), "Cassandra"),
        (cassandra.ReadTimeout("read timed out", consistency=cassandra.ConsistencyLevel.LOCAL_QUORUM), "Cassandra"),
        (redis_errors.ConnectionError("refused"), "Redis"),
        (ConnectionRefusedError(111, "refused"), "a dependency"),
        (TimeoutError(), "a dependency"),
    ],
)
def test_a_dependency_outage_is_a_503_problem_to_retry(exc: Exception, who: str) -> None:
    r = _client(exc).get("/boom")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "1"
    body = r.json()
    assert body["type"].endswith("/unavailable") and body["instance"] == "/boom"
    assert body["detail"].startswith(who)


@pytest.mark.parametrize("exc", [cassandra.InvalidRequest("unconfigured table"), KeyError("bug")])
def test_a_bug_stays_a_500_problem(exc: Exception) -> None:
    r = _client(exc).get("/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/internal")
