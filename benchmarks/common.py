"""What every benchmark needs: where the stack is, an API client, player registration,
reading /healthz and /metrics, finding the shard processes, and printing a result table."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

DEFAULT_API_URL = "http://127.0.0.1:8000/platform/v1"
DEFAULT_API_KEY = "local-only-demo-key"  # the local stack's demo key
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True, slots=True)
class Target:
    """The stack under test. Cassandra, exchange and region come from `PITBOSS_*` (adapters.settings)."""

    api_url: str
    api_key: str
    rabbitmq_url: str
    ray_address: str | None

    @staticmethod
    def from_env(
        api_url: str | None = None,
        api_key: str | None = None,
        rabbitmq_url: str | None = None,
        ray_address: str | None = None,
    ) -> Target:
        env = os.environ
        return Target(
            api_url=(api_url or env.get("PITBOSS_API_URL") or DEFAULT_API_URL).rstrip("/"),
            api_key=api_key or env.get("PITBOSS_API_KEY") or DEFAULT_API_KEY,
            rabbitmq_url=rabbitmq_url or env.get("PITBOSS_RABBITMQ_URL") or DEFAULT_RABBITMQ_URL,
            # Only an explicit address ("make bench" exports RAY_ADDRESS): "auto" could attach to
            # whichever cluster last started on this machine.
            ray_address=ray_address or env.get("PITBOSS_RAY_ADDRESS") or _explicit(env.get("RAY_ADDRESS")),
        )


def _explicit(address: str | None) -> str | None:
    return address if address and address != "auto" else None


# What a failed HTTP exchange raises (refused, reset, timed out...).
TransportErrors = (aiohttp.ClientError, TimeoutError)


class Api:
    """A small aiohttp client of the platform API.

    aiohttp, not httpx: on the 2-core box httpx spent ~8 ms of CPU per request against ~0.6 ms
    for aiohttp, and a client at normal priority starves the niced Ray workers it measures.
    (aiohttp comes with ray[serve].)
    """

    def __init__(self, target: Target, connections: int = 64, timeout: float = 30.0) -> None:
        self.base = target.api_url
        self.headers = {"Authorization": f"Bearer {target.api_key}"}
        self.connections = connections
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections),
            headers=self.headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Api(...)`"
        return self._session

    async def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """(status, parsed JSON body or text); a failed exchange raises one of TransportErrors."""
        kwargs: dict[str, Any] = {"json": body, "headers": headers}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            if resp.content_type.endswith("json"):
                return resp.status, json.loads(text)
            return resp.status, text


# ---------------------------------------------------------------------------- results


@dataclass(slots=True)
class Row:
    measure: str
    value: str
    target: str = ""
    verdict: str = ""


@dataclass(slots=True)
class Report:
    name: str
    scale: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, measure: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append(Row(measure, value, target, "" if ok is None else "PASS" if ok else "MISS"))

    def render(self) -> str:
        headers = ("measure", "value", "target", "")
        table = [headers, *((r.measure, r.value, r.target, r.verdict) for r in self.rows)]
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        line = "+".join("-" * (w + 2) for w in widths)
        out = [f"== {self.name}  ({self.scale})", line]
        for i, row in enumerate(table):
            out.append("|".join(f" {cell:<{widths[j]}} " for j, cell in enumerate(row)).rstrip())
            if i == 0:
                out.append(line)
        out.append(line)
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def say(message: str) -> None:
    print(f"  .. {message}", flush=True)


# ---------------------------------------------------------------------------- API helpers


class ApiError(RuntimeError):
    pass


RETRY_STATUSES = (429, 502, 503, 504)


async def call(
    api: Api, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, attempts: int = 8
) -> Any:
    """An idempotent API call, retried while the stack is busy or restarting."""
    delay = 0.2
    for attempt in range(attempts):
        try:
            status, answer = await api.send(method, path, body, headers)
        except TransportErrors as exc:
            if attempt == attempts - 1:
                raise ApiError(f"{method} {path}: {exc!r}") from exc
        else:
            if status < 400:
                return answer
            if status not in RETRY_STATUSES or attempt == attempts - 1:
                raise ApiError(f"{method} {path} -> {status}: {str(answer)[:300]}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")


async def bounded(
    jobs: Iterable[Awaitable[Any]], concurrency: int, progress: Callable[[int], None] | None = None
) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(job: Awaitable[Any]) -> Any:
        nonlocal done
        async with gate:
            result = await job
        done += 1
        if progress is not None:
            progress(done)
        return result

    return await asyncio.gather(*(one(j) for j in jobs))


async def register_players(
    api: Api, count: int, concurrency: int = 64, currency: str = "EUR", country: str = "MT"
) -> tuple[list[str], float]:
    """Register `count` fresh players; returns their ids and the registrations per second."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    step = max(1, count // 10)
    started = time.perf_counter()

    def progress(done: int) -> None:
        if done % step == 0 or done == count:
            rate = done / max(time.perf_counter() - started, 1e-9)
            say(f"registered {done}/{count} players ({rate:.0f}/s)")

    await bounded(
        (call(api, "POST", "/players", {"player_id": pid, "currency": currency, "country": country}) for pid in ids),
        concurrency,
        progress,
    )
    return ids, count / max(time.perf_counter() - started, 1e-9)


async def healthz(api: Api) -> dict[str, Any]:
    """/healthz's body, also when it answers 503 (a down dependency still reports the others)."""
    _, body = await api.send("GET", "/healthz", timeout=10.0)
    if not isinstance(body, dict):
        raise ApiError(f"/healthz answered {str(body)[:200]}")
    return body


async def metric_samples(api: Api) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = await api.send("GET", "/metrics", timeout=10.0)
    if status != 200:
        raise ApiError(f"/metrics answered {status}")
    return [
        (s.name, dict(s.labels), float(s.value))
        for fam in text_string_to_metric_families(str(text))
        for s in fam.samples
    ]


def metric_sum(samples: Iterable[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


# ---------------------------------------------------------------------------- shard processes


@dataclass(frozen=True, slots=True)
class ShardInfo:
    index: int
    active: int
    pid: int | None


async def shards(api: Api, target: Target) -> list[ShardInfo]:
    """The region's shards with their active players and, where it can be learnt, their pid.

    /healthz lists the shards; a pid comes from there if the platform reports it, otherwise
    from the shards' `stats()` through Ray (needs --ray-address / PITBOSS_RAY_ADDRESS and,
    on a cluster with token auth, RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH).
    """
    body = await healthz(api)
    detail: dict[str, Any] = body.get("checks", {}).get("shards", {}).get("detail") or {}
    found = [
        ShardInfo(int(k), int(v.get("active", 0)), v.get("pid"))
        for k, v in sorted(detail.items(), key=lambda kv: int(kv[0]))
    ]
    if found and all(s.pid is not None for s in found):
        return found
    if target.ray_address is None:
        return found
    stats = await asyncio.get_running_loop().run_in_executor(
        None, ray_shard_stats, target.ray_address, len(found) or None
    )
    return [ShardInfo(int(s["index"]), int(s["active"]), int(s["pid"])) for s in stats]


def ray_shard_stats(address: str, count: int | None) -> list[dict[str, Any]]:
    """`stats()` of every shard of this region, read through Ray (blocking)."""
    import ray

    from actors.router import shard_name
    from adapters.settings import Settings

    settings = Settings()
    if not ray.is_initialized():
        ray.init(address=address, namespace=settings.ray_namespace, logging_level=logging.ERROR, log_to_driver=False)
    handles = []
    index = 0
    while count is None or index < count:
        try:
            handles.append(ray.get_actor(shard_name(settings.region, index), namespace=settings.ray_namespace))
        except ValueError:
            break
        index += 1
    return list(ray.get([h.stats.remote() for h in handles], timeout=60))


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (VmRSS is in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used so far, or None if it is not visible here."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ShardCpu:
    """CPU the shard processes spend over a span: a figure that holds on a busy machine,
    where wall-clock rates mostly show the neighbours."""

    def __init__(self, infos: Sequence[ShardInfo]) -> None:
        self.pids = [s.pid for s in infos if s.pid is not None]
        self.start = self._total()

    def _total(self) -> float | None:
        values = [cpu_seconds(pid) for pid in self.pids]
        return sum(v for v in values if v is not None) if values and None not in values else None

    def spent(self) -> float | None:
        end = self._total()
        return None if end is None or self.start is None else end - self.start


def is_shard_process(pid: int) -> bool:
    """Guard before signalling: the pid must still be a Ray PlayerShard worker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"PlayerShard" in cmdline


def no_shard_pids_note() -> str:
    return (
        "shard pids unknown: /healthz does not report them and no Ray address was given "
        "(pass --ray-address or set PITBOSS_RAY_ADDRESS, plus RAY_AUTH_MODE/RAY_AUTH_TOKEN_PATH "
        "if the cluster uses token auth)"
    )


def host_note() -> str:
    """What else shaped a wall-clock figure: the load on the machine and the interpreter."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"load average {load:.1f} on {os.cpu_count()} CPUs (wall-clock figures include waiting for a CPU); "
        f"Python {sys.version.split()[0]}"
    )


T = TypeVar("T")


async def offline(measure: Callable[[T], Report], opts: T) -> Report:
    """A benchmark of the engines alone (no stack), run by `python -m benchmarks` like the others."""
    return measure(opts)
