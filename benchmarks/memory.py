"""Resident memory of the shard processes with many active players.

Registers N fresh players through the API (a registered player stays active in its shard
until it idles out or the shard's cap passivates it) and reads VmRSS of every shard process
before and after. The pids come from /healthz if it reports them, else from the shards'
`stats()` through Ray; so this benchmark must run on the machine that hosts the shards.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.common import (
    Api,
    Report,
    ShardInfo,
    Target,
    no_shard_pids_note,
    register_players,
    rss_bytes,
    say,
    shards,
)

TARGET_PLAYERS = 100_000
TARGET_RSS = 400 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    players: int = TARGET_PLAYERS
    concurrency: int = 64


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def total_rss(infos: list[ShardInfo]) -> int:
    return sum(rss_bytes(s.pid) for s in infos if s.pid is not None)


async def run(target: Target, opts: MemoryOptions) -> Report:
    report = Report("memory", f"{opts.players} players registered")
    async with Api(target, opts.concurrency) as api:
        before = await shards(api, target)
        if not before or any(s.pid is None for s in before):
            report.notes.append(no_shard_pids_note() + "; skipped")
            return report
        rss_before = total_rss(before)
        say(f"{len(before)} shards, {sum(s.active for s in before)} active players, RSS {mib(rss_before)}")
        say(f"registering {opts.players} players")
        _, rate = await register_players(api, opts.players, opts.concurrency)
        after = await shards(api, target)
    rss_after = total_rss(after)
    active_before, active_after = sum(s.active for s in before), sum(s.active for s in after)
    added = active_after - active_before
    per_player = (rss_after - rss_before) / added if added > 0 else 0.0
    report.add("registration rate", f"{rate:.0f} players/s")
    report.add("active players (all shards)", f"{active_before} -> {active_after}")
    for s in after:
        report.add(f"shard {s.index} (pid {s.pid}) RSS", f"{mib(rss_bytes(s.pid or 0))}, {s.active} active")
    report.add(
        "shard RSS total",
        f"{mib(rss_before)} -> {mib(rss_after)}",
        f"<= {mib(TARGET_RSS)} at {TARGET_PLAYERS:,} active",
        rss_after <= TARGET_RSS if active_after >= TARGET_PLAYERS else None,
    )
    report.add("RSS per activated player", f"{per_player:,.0f} bytes" if added > 0 else "n/a")
    if 0 < active_after < TARGET_PLAYERS and added > 0:
        projected = rss_after + per_player * (TARGET_PLAYERS - active_after)
        report.add(
            f"projected at {TARGET_PLAYERS:,} active", mib(projected), f"<= {mib(TARGET_RSS)}", projected <= TARGET_RSS
        )
        report.notes.append("projection: the measured RSS plus the per-player growth times the players missing")
    if {s.pid for s in before} != {s.pid for s in after}:
        report.notes.append("a shard process changed during the run (restarted): its RSS started from scratch")
    if added < opts.players:
        report.notes.append(
            f"active players grew by {added}, not {opts.players}: the shard cap or the idle timeout "
            "passivated others meanwhile (the per-player figure divides by the net growth, so it "
            "errs high)"
        )
    return report
