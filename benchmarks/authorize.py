"""Deposit authorization latency and throughput, against a plain uvicorn baseline.

- Closed loop: C connections (default 32) each sending the next request as soon as the last
  one answered. `wrk` with benchmarks/authorize.lua when it is installed (`apt-get install
  wrk`): a C client that leaves the 2-core box's CPU to the server; else an aiohttp loop.
- Open loop: a fixed R requests/s (default 100) for D seconds, each request timed from when
  it was due, so a slow answer cannot hide the requests queued behind it.
- The same two measurements against benchmarks/trivial_app.py under a plain uvicorn on
  another loopback port give the ratio.

Every request authorizes a new tx_id for one of K registered players (an allowed amount is
held for 24 h, so each request writes to the player's journal).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from benchmarks.common import (
    Api,
    Report,
    ShardCpu,
    Target,
    TransportErrors,
    ms,
    percentile,
    register_players,
    say,
    shards,
)

LUA = Path(__file__).with_name("authorize.lua")
TARGET_RPS = 700.0
TARGET_P99_CLOSED = 0.100
TARGET_P99_OPEN = 0.025


@dataclass(frozen=True, slots=True)
class AuthorizeOptions:
    players: int = 1000
    connections: int = 32
    closed_seconds: float = 30.0
    rate: float = 100.0
    open_seconds: float = 30.0
    use_wrk: bool = True
    baseline: bool = True


@dataclass(frozen=True, slots=True)
class LoopResult:
    tool: str
    requests: int
    errors: int
    seconds: float
    p50: float
    p99: float
    error_kinds: str = ""  # e.g. "503: 12, ReadTimeout: 3"

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to send authorizations: origin (scheme://host:port), base path and key."""

    origin: str
    base_path: str
    api_key: str

    @staticmethod
    def of(api_url: str, api_key: str) -> Endpoint:
        parts = urlsplit(api_url)
        return Endpoint(f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/"), api_key)

    def path(self, player_id: str) -> str:
        return f"{self.base_path}/players/{player_id}/deposits/authorize"


def _body(run_id: str, n: int) -> dict[str, object]:
    return {"tx_id": f"py-{run_id}-{n}", "amount_minor": (500, 1000, 2000, 2500, 5000)[n % 5], "currency": "EUR"}


# ---------------------------------------------------------------------------- closed loop


def closed_loop_wrk(ep: Endpoint, players: Sequence[str], connections: int, seconds: float) -> LoopResult:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(players))
        players_file = f.name
    try:
        threads = max(1, min(2, os.cpu_count() or 1, connections))
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(LUA),
            ep.origin,
            "--",
            players_file,
            ep.api_key,
            ep.base_path,
            uuid.uuid4().hex[:12],
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    finally:
        os.unlink(players_file)
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    r = json.loads(line.removeprefix("WRKJSON "))
    kinds = {k: r[k] for k in ("non2xx", "connect", "read", "write", "timeout") if r[k]}
    return LoopResult(
        "wrk",
        r["requests"],
        sum(kinds.values()),
        r["duration_us"] / 1e6,
        r["p50_us"] / 1e6,
        r["p99_us"] / 1e6,
        _kinds(Counter(kinds)),
    )


def _session(ep: Endpoint, connections: int, timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        ep.origin,
        connector=aiohttp.TCPConnector(limit=connections),
        headers={"Authorization": f"Bearer {ep.api_key}"},
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


async def _post(session: aiohttp.ClientSession, path: str, body: dict[str, object]) -> str:
    """ "" for a 200, else what went wrong (the status or the exception's name)."""
    try:
        async with session.post(path, json=body) as resp:
            await resp.read()
            return "" if resp.status == 200 else str(resp.status)
    except TransportErrors as exc:
        return type(exc).__name__


def _kinds(errors: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in errors.most_common())


async def closed_loop_python(ep: Endpoint, players: Sequence[str], connections: int, seconds: float) -> LoopResult:
    run_id = uuid.uuid4().hex[:12]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counter = 0
    async with _session(ep, connections, 5.0) as session:
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def worker() -> None:
            nonlocal counter
            while time.perf_counter() < deadline:
                counter += 1
                n = counter
                sent = time.perf_counter()
                outcome = await _post(session, ep.path(players[n % len(players)]), _body(run_id, n))
                latencies.append(time.perf_counter() - sent)
                if outcome:
                    errors[outcome] += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return LoopResult(
        "python",
        len(latencies),
        sum(errors.values()),
        elapsed,
        percentile(latencies, 50),
        percentile(latencies, 99),
        _kinds(errors),
    )


async def closed_loop(ep: Endpoint, players: Sequence[str], opts: AuthorizeOptions) -> LoopResult:
    if opts.use_wrk and shutil.which("wrk"):
        return await asyncio.get_running_loop().run_in_executor(
            None, closed_loop_wrk, ep, players, opts.connections, opts.closed_seconds
        )
    return await closed_loop_python(ep, players, opts.connections, opts.closed_seconds)


# ---------------------------------------------------------------------------- open loop


async def open_loop(ep: Endpoint, players: Sequence[str], rate: float, seconds: float) -> LoopResult:
    """Fire at a fixed rate whatever the answers; latency counts from each request's due time."""
    run_id = uuid.uuid4().hex[:12]
    total = int(rate * seconds)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    async with _session(ep, 256, 10.0) as session:
        # Open a few connections first so the first second does not measure TCP handshakes.
        await asyncio.gather(
            *(_post(session, ep.path(players[i % len(players)]), _body(run_id + "w", i)) for i in range(8))
        )

        async def one(n: int, due: float) -> None:
            outcome = await _post(session, ep.path(players[n % len(players)]), _body(run_id, n))
            latencies.append(time.perf_counter() - due)
            if outcome:
                errors[outcome] += 1

        tasks = []
        t0 = time.perf_counter()
        for n in range(total):
            due = t0 + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return LoopResult(
        "python",
        len(latencies),
        sum(errors.values()),
        elapsed,
        percentile(latencies, 50),
        percentile(latencies, 99),
        _kinds(errors),
    )


# ---------------------------------------------------------------------------- baseline server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_baseline() -> tuple[subprocess.Popen[bytes], Endpoint]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.trivial_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        stdout=subprocess.DEVNULL,
    )
    return proc, Endpoint(f"http://127.0.0.1:{port}", "/platform/v1", "baseline")


async def start_baseline() -> tuple[subprocess.Popen[bytes], Endpoint]:
    proc, ep = spawn_baseline()
    async with _session(ep, 1, 1.0) as session:
        for _ in range(100):
            if await _post(session, ep.path("x"), _body("ready", 0)) == "":
                return proc, ep
            await asyncio.sleep(0.1)
    proc.terminate()
    raise RuntimeError("the baseline uvicorn did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---------------------------------------------------------------------------- run


def _rows(
    report: Report, label: str, closed: LoopResult, opened: LoopResult, targets: bool, connections: int, rate: float
) -> None:
    report.add(
        f"{label} closed {connections} conn ({closed.tool})",
        f"{closed.rps:.0f} req/s",
        f">= {TARGET_RPS:.0f} req/s" if targets else "",
        closed.rps >= TARGET_RPS if targets else None,
    )
    report.add(
        f"{label} closed p50 / p99",
        f"{ms(closed.p50)} / {ms(closed.p99)}",
        f"p99 <= {ms(TARGET_P99_CLOSED)}" if targets else "",
        closed.p99 <= TARGET_P99_CLOSED if targets else None,
    )
    report.add(f"{label} open {rate:.0f}/s achieved", f"{opened.rps:.0f} req/s")
    report.add(
        f"{label} open p50 / p99",
        f"{ms(opened.p50)} / {ms(opened.p99)}",
        f"p99 <= {ms(TARGET_P99_OPEN)}" if targets else "",
        opened.p99 <= TARGET_P99_OPEN if targets else None,
    )
    errors = closed.errors + opened.errors
    kinds = "; ".join(f"{name} {r.error_kinds}" for name, r in (("closed", closed), ("open", opened)) if r.errors)
    report.add(
        f"{label} errors",
        f"{errors} of {closed.requests + opened.requests}" + (f" ({kinds})" if kinds else ""),
        "0" if targets else "",
        errors == 0 if targets else None,
    )


async def run(target: Target, opts: AuthorizeOptions) -> Report:
    report = Report(
        "authorize",
        f"{opts.players} players, {opts.connections} connections for "
        f"{opts.closed_seconds:.0f}s, {opts.rate:.0f} req/s for {opts.open_seconds:.0f}s",
    )
    async with Api(target) as api:
        say(f"registering {opts.players} players")
        players, _ = await register_players(api, opts.players)
        infos = await shards(api, target)
    ep = Endpoint.of(target.api_url, target.api_key)
    say(f"pitboss: closed loop, {opts.connections} connections, {opts.closed_seconds:.0f}s")
    cpu = ShardCpu(infos)
    closed = await closed_loop(ep, players, opts)
    shard_cpu = cpu.spent()
    say(f"pitboss: open loop, {opts.rate:.0f} req/s, {opts.open_seconds:.0f}s")
    opened = await open_loop(ep, players, opts.rate, opts.open_seconds)
    _rows(report, "pitboss", closed, opened, True, opts.connections, opts.rate)
    if shard_cpu is not None and closed.requests:
        report.add("shard CPU per authorization", f"{shard_cpu / closed.requests * 1000:.2f} ms (closed loop)")
    if opts.baseline:
        proc, base = await start_baseline()
        try:
            say("plain uvicorn: closed loop")
            b_closed = await closed_loop(base, players, opts)
            say("plain uvicorn: open loop")
            b_open = await open_loop(base, players, opts.rate, opts.open_seconds)
        finally:
            stop(proc)
        _rows(report, "uvicorn", b_closed, b_open, False, opts.connections, opts.rate)
        ratio = closed.rps / b_closed.rps if b_closed.rps else math.nan
        report.add("throughput pitboss / plain uvicorn", f"{ratio:.2f}")
    if closed.tool == "python":
        report.notes.append(
            "closed loop driven from Python: on 2 cores the client competes with the server "
            "(install wrk for a fairer figure)"
        )
    return report
