"""Time for a killed shard to serve again, under light load, and what it lost.

A steady trickle of deposit authorizations runs over a set of players (a quarter of them on
one player of the victim shard). The victim shard's process gets SIGKILL; the benchmark then
polls GET of that player until it answers 200 again. Afterwards the player's held amount
must cover every authorization that was acknowledged before the kill: a shard acknowledges
only what is durable, so nothing acknowledged may be lost.

This kills a process: point it only at a stack you may disturb. The pid is checked to still
be a Ray PlayerShard worker just before the signal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from uuid import UUID

from benchmarks.common import (
    Api,
    Report,
    Target,
    TransportErrors,
    call,
    is_shard_process,
    no_shard_pids_note,
    register_players,
    say,
    shards,
)
from domain.sharding import shard_of

TARGET_SECONDS = 10.0
HOLD = 100  # minor units per authorization: no limit is set, so each one is allowed and held


@dataclass(frozen=True, slots=True)
class RecoveryOptions:
    players: int = 200
    shard: int = 0
    load_rate: float = 20.0
    timeout: float = 120.0


@dataclass(slots=True)
class Load:
    """Open-loop authorizations; what the victim player had acknowledged, and what is unknown."""

    statuses: Counter[str] = field(default_factory=Counter)
    acked: int = 0  # minor units the victim's shard acknowledged as held
    unknown: int = 0  # minor units whose answer never came (may or may not be held)
    stop: bool = False


async def light_load(api: Api, players: list[str], victim: str, rate: float, load: Load) -> None:
    run_id = uuid.uuid4().hex[:10]
    pending: set[asyncio.Task[None]] = set()

    async def one(n: int, player: str) -> None:
        body = {"tx_id": f"rec-{run_id}-{n}", "amount_minor": HOLD, "currency": "EUR"}
        try:
            status, answer = await api.send("POST", f"/players/{player}/deposits/authorize", body, timeout=10.0)
        except TransportErrors as exc:
            load.statuses[type(exc).__name__] += 1
            if player == victim:
                load.unknown += HOLD
            return
        load.statuses[str(status)] += 1
        if player != victim:
            return
        if status == 200 and answer.get("decision") == "allow":
            load.acked += HOLD
        elif status >= 500:
            load.unknown += HOLD

    n = 0
    while not load.stop:
        n += 1
        player = victim if n % 4 == 0 else players[n % len(players)]
        task = asyncio.create_task(one(n, player))
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*pending)


async def wait_until_served(api: Api, player: str, limit: float) -> float | None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        try:
            status, _ = await api.send("GET", f"/players/{player}", timeout=2.0)
            if status == 200:
                return time.perf_counter() - t0
        except TransportErrors:
            pass
        await asyncio.sleep(0.05)
    return None


async def run(target: Target, opts: RecoveryOptions) -> Report:
    report = Report("recovery", f"SIGKILL of shard {opts.shard} under {opts.load_rate:.0f} req/s")
    async with Api(target, 64, timeout=10.0) as api:
        infos = await shards(api, target)
        if not infos or opts.shard >= len(infos) or infos[opts.shard].pid is None:
            report.notes.append(no_shard_pids_note() + "; skipped")
            return report
        pid = infos[opts.shard].pid
        assert pid is not None
        say(f"registering {opts.players} players")
        players, _ = await register_players(api, opts.players)
        victims = [p for p in players if shard_of(UUID(p), len(infos)) == opts.shard]
        if not victims:
            report.notes.append(f"no registered player landed on shard {opts.shard}; skipped")
            return report
        victim = victims[0]
        load = Load()
        loader = asyncio.create_task(light_load(api, players, victim, opts.load_rate, load))
        await asyncio.sleep(3.0)
        if not is_shard_process(pid):
            load.stop = True
            await loader
            report.notes.append(f"pid {pid} is not a PlayerShard process (here); refusing to signal it")
            return report
        acked_before_kill = load.acked
        say(f"killing shard {opts.shard} (pid {pid}) with SIGKILL")
        os.kill(pid, signal.SIGKILL)
        back = await wait_until_served(api, victim, opts.timeout)
        await asyncio.sleep(3.0)
        load.stop = True
        await loader
        view = await call(api, "GET", f"/players/{victim}")
        after = await shards(api, target)
    held = int(view.get("holds_minor", 0))
    lost = max(0, load.acked - held)
    new_pid = after[opts.shard].pid if opts.shard < len(after) else None
    report.add(
        "time until GET answers 200 again",
        "never" if back is None else f"{back:.2f} s",
        f"<= {TARGET_SECONDS:.0f} s",
        back is not None and back <= TARGET_SECONDS,
    )
    report.add("shard pid", f"{pid} -> {new_pid}")
    report.add("light-load answers", ", ".join(f"{k}: {v}" for k, v in sorted(load.statuses.items())))
    report.add("victim: acknowledged holds", f"{load.acked} minor ({acked_before_kill} before the kill)")
    report.add("victim: held after recovery", f"{held} minor (unknown outcome: {load.unknown})")
    report.add("acknowledged writes lost", f"{lost} minor", "0", lost == 0)
    if held > load.acked + load.unknown:
        report.notes.append("more is held than was sent: another client is using the victim player?")
    return report
