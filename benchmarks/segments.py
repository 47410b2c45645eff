"""CRM segment evaluation alone (no stack): feature matrix build and memory, evaluation of a
10-condition segment over --players players, preview, and incremental membership updates.

Synthetic players: lifecycle stages 30% churned, 25% active, 15% lapsing, 12% new, 8% first
deposit, 10% reactivated, with last activity drawn per stage; 40 countries (Zipf), ~200 regions,
15 languages, 400 traffic sources; deposits heavy-tailed (log-normal sums, geometric counts, a
third of players never deposited); churn risk from a Beta by stage. The segment (10 conditions):

    all: country in [10], deposits_sum_30d between, last_active_at within 14 days,
         not lifecycle_stage eq churned, any[churn_risk ge 0.6, sessions_7d lt 2],
         age_band in [3], marketing_consent eq true, self_excluded eq false, bonus_use_ratio le 0.5

    python -m benchmarks segments
    python -m benchmarks.segments --players 1000000 --changes 10000
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from benchmarks.common import Report, host_note, percentile, rss_bytes
from domain.segments import FeatureMatrix, Membership, count, evaluate, parse_rule, preview
from schemas.features import AGE_BANDS, DEVICES, LIFECYCLE_STAGES, MAX_BYTES_PER_PLAYER

TARGET_EVAL_MS = 100.0
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
COUNTRIES = [
    "DE",
    "GB",
    "SE",
    "FI",
    "NO",
    "DK",
    "MT",
    "IE",
    "NL",
    "AT",
    "ES",
    "IT",
    "PT",
    "FR",
    "BE",
    "CH",
    "PL",
    "CZ",
    "SK",
    "HU",
    "RO",
    "BG",
    "GR",
    "CY",
    "EE",
    "LV",
    "LT",
    "SI",
    "HR",
    "LU",
    "IS",
    "CA",
    "NZ",
    "JP",
    "BR",
    "MX",
    "CL",
    "PE",
    "AR",
    "ZA",
]
LANGUAGES = ["en", "de", "sv", "fi", "no", "da", "es", "it", "pt", "fr", "nl", "pl", "cs", "hu", "ja"]
GAME_CATEGORIES = [
    "slots",
    "live-casino",
    "blackjack",
    "roulette",
    "poker",
    "bingo",
    "sports",
    "crash",
    "jackpots",
    "table",
]
STAGE_SHARES = {
    "new": 0.12,
    "first_deposit": 0.08,
    "active": 0.25,
    "lapsing": 0.15,
    "churned": 0.30,
    "reactivated": 0.10,
}
SEGMENT: dict[str, Any] = {
    "all": [
        {"feature": "country", "op": "in", "values": ["DE", "SE", "FI", "NO", "MT", "IE", "NL", "AT", "DK", "GB"]},
        {"feature": "deposits_sum_30d", "op": "between", "min": 2_000, "max": 500_000},
        {"feature": "last_active_at", "op": "within", "last": {"days": 14}},
        {"not": {"feature": "lifecycle_stage", "op": "eq", "value": "churned"}},
        {
            "any": [
                {"feature": "churn_risk", "op": "ge", "value": 0.6},
                {"feature": "sessions_7d", "op": "lt", "value": 2},
            ]
        },
        {"feature": "age_band", "op": "in", "values": ["25-34", "35-44", "45-54"]},
        {"feature": "marketing_consent", "op": "eq", "value": True},
        {"feature": "self_excluded", "op": "eq", "value": False},
        {"feature": "bonus_use_ratio", "op": "le", "value": 0.5},
    ]
}


@dataclass(frozen=True, slots=True)
class SegmentsOptions:
    players: int = 1_000_000
    runs: int = 20
    changes: int = 10_000
    seed: int = 5


def _zipf_choice(rng: np.random.Generator, items: list[str], n: int, s: float = 1.1) -> np.ndarray[Any, Any]:
    w = 1.0 / np.arange(1, len(items) + 1) ** s
    return np.asarray(items, dtype=object)[rng.choice(len(items), size=n, p=w / w.sum())]


def synthetic_columns(n: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    stages = np.asarray(LIFECYCLE_STAGES, dtype=object)
    stage_idx = rng.choice(len(LIFECYCLE_STAGES), size=n, p=[STAGE_SHARES[s] for s in LIFECYCLE_STAGES])
    stage = stages[stage_idx]
    now_m = np.datetime64(NOW.replace(tzinfo=None), "m")
    # Days since last activity by stage: active/new/reactivated recent, lapsing 7-30, churned 30-720.
    idle_days = np.where(
        np.isin(stage_idx, [0, 1, 2, 5]),
        rng.exponential(3, n),
        np.where(stage_idx == 3, rng.uniform(7, 30, n), rng.uniform(30, 720, n)),
    )
    last_active = now_m - (idle_days * 1440).astype("timedelta64[m]")
    age_days = idle_days + rng.exponential(300, n)
    registered = now_m - (age_days * 1440).astype("timedelta64[m]")
    depositor = stage_idx != 0  # stage "new" has no deposit yet
    depositor &= rng.random(n) > 0.15
    first_dep = np.where(
        depositor, registered + (rng.exponential(2, n) * 1440).astype("timedelta64[m]"), np.datetime64("NaT", "m")
    )
    last_dep = np.where(
        depositor, last_active - (rng.exponential(5, n) * 1440).astype("timedelta64[m]"), np.datetime64("NaT", "m")
    )
    recent = idle_days < 30
    dep_count_30 = np.where(depositor & recent, rng.geometric(0.35, n), 0).astype(np.uint16)
    dep_sum_30 = np.where(dep_count_30 > 0, (rng.lognormal(8.5, 1.4, n) * dep_count_30).astype(np.int64), 0)
    dep_life_count = (dep_count_30 + np.where(depositor, rng.geometric(0.05, n), 0)).astype(np.uint32)
    dep_life_sum = dep_sum_30 + np.where(depositor, rng.lognormal(10, 1.8, n).astype(np.int64), 0)
    wd_sum_30 = (dep_sum_30 * rng.beta(0.7, 2.5, n)).astype(np.int64)
    wd_life = (dep_life_sum * rng.beta(0.8, 2.0, n)).astype(np.int64)
    bets_30 = np.where(recent, rng.negative_binomial(2, 0.004, n), 0).astype(np.uint32)
    stakes_30 = (dep_sum_30 * rng.uniform(2, 12, n)).astype(np.int64)
    ggr_30 = (stakes_30 * rng.normal(0.04, 0.15, n)).astype(np.int64)
    sessions_30 = np.where(recent, rng.poisson(12, n), 0).astype(np.uint16)
    sessions_7 = np.minimum(sessions_30, rng.poisson(3, n)).astype(np.uint16)
    churn = np.where(
        stage_idx == 4, rng.beta(6, 2, n), np.where(stage_idx == 3, rng.beta(4, 3, n), rng.beta(2, 6, n))
    ).astype(np.float32)
    countries = _zipf_choice(rng, COUNTRIES, n)
    regions = np.asarray([f"{c}-{r}" for c, r in zip(countries, rng.integers(1, 6, n), strict=True)], dtype=object)
    return {
        "registered_at": registered,
        "first_deposit_at": first_dep,
        "last_deposit_at": last_dep,
        "last_active_at": last_active,
        "active_1d": (idle_days < 1).astype(np.uint8),
        "active_7d": (idle_days < 7).astype(np.uint8),
        "active_30d": recent.astype(np.uint8),
        "active_days_30d": np.minimum(sessions_30, 30).astype(np.uint8),
        "sessions_1d": np.where(idle_days < 1, rng.poisson(1.5, n), 0).astype(np.uint16),
        "sessions_7d": sessions_7,
        "sessions_30d": sessions_30,
        "avg_session_minutes_7d": np.where(sessions_7 > 0, rng.gamma(2, 12, n), np.nan).astype(np.float32),
        "avg_session_minutes_30d": np.where(sessions_30 > 0, rng.gamma(2, 12, n), np.nan).astype(np.float32),
        "deposits_count_30d": dep_count_30,
        "deposits_count_lifetime": dep_life_count,
        "deposits_sum_30d": dep_sum_30,
        "deposits_sum_lifetime": dep_life_sum,
        "withdrawals_sum_30d": wd_sum_30,
        "withdrawals_sum_lifetime": wd_life,
        "bets_count_30d": bets_30,
        "bets_sum_30d": stakes_30,
        "ggr_30d": ggr_30,
        "ngr_30d": (ggr_30 * 0.8).astype(np.int64),
        "net_loss_30d": dep_sum_30 - wd_sum_30,
        "net_loss_lifetime": dep_life_sum - wd_life,
        "bonus_use_ratio": np.where(depositor, rng.beta(1, 4, n), np.nan).astype(np.float32),
        "churn_risk": churn,
        "favourite_game_category": _zipf_choice(rng, GAME_CATEGORIES, n),
        "device": np.asarray(DEVICES, dtype=object)[rng.choice(5, n, p=[0.3, 0.25, 0.2, 0.2, 0.05])],
        "country": countries,
        "region": regions,
        "language": _zipf_choice(rng, LANGUAGES, n),
        "currency": np.where(np.isin(countries, ["GB"]), "GBP", np.where(np.isin(countries, ["SE"]), "SEK", "EUR")),
        "age_band": np.asarray(AGE_BANDS, dtype=object)[rng.choice(6, n, p=[0.18, 0.3, 0.22, 0.15, 0.1, 0.05])],
        "lifecycle_stage": stage,
        "traffic_source": np.asarray([f"aff-{i}" for i in range(400)], dtype=object)[
            np.minimum(rng.zipf(1.3, n), 400) - 1
        ],
        "marketing_consent": (rng.random(n) < 0.65).astype(np.uint8),
        "self_excluded": (rng.random(n) < 0.02).astype(np.uint8),
    }


def measure(opts: SegmentsOptions) -> Report:
    n = opts.players
    report = Report(
        "segments", f"{n:,} players, 10-condition segment, {opts.runs} runs, {opts.changes:,} changed players"
    )
    t0 = time.perf_counter()
    columns = synthetic_columns(n, opts.seed)
    ids = [uuid.UUID(int=int(x)) for x in np.random.default_rng(opts.seed).integers(1, 2**62, n)]
    generated = time.perf_counter() - t0

    gc.collect()
    rss0 = rss_bytes(os.getpid()) // 1024
    matrix = FeatureMatrix(capacity=1024)
    t0 = time.perf_counter()
    matrix.bulk_load(ids, columns)
    build = time.perf_counter() - t0
    del columns
    gc.collect()
    rss1 = rss_bytes(os.getpid()) // 1024

    rule = parse_rule(SEGMENT)
    evaluate(rule, matrix, NOW)  # warm
    samples = []
    cpu = []
    for _ in range(opts.runs):
        c, t = time.process_time_ns(), time.perf_counter_ns()
        mask = evaluate(rule, matrix, NOW)
        samples.append(time.perf_counter_ns() - t)
        cpu.append(time.process_time_ns() - c)
    samples.sort()
    cpu.sort()
    members = count(mask)
    t0 = time.perf_counter()
    pv = preview(rule, matrix, NOW, n=20, seed=1)
    preview_s = time.perf_counter() - t0

    seg = Membership(rule, matrix, NOW)
    rng = np.random.default_rng(opts.seed + 1)
    changed = [ids[int(i)] for i in rng.choice(n, size=min(opts.changes, n), replace=False)]
    stages = list(LIFECYCLE_STAGES)
    t0 = time.perf_counter()
    for pid in changed:
        matrix.update(
            pid,
            {
                "deposits_sum_30d": int(rng.lognormal(8.5, 1.4)),
                "last_active_at": NOW - timedelta(minutes=int(rng.integers(0, 40 * 1440))),
                "churn_risk": float(rng.random()),
                "lifecycle_stage": stages[int(rng.integers(0, 6))],
            },
        )
    update_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    entered, exited = seg.apply(changed, NOW)
    apply_s = time.perf_counter() - t0

    per_player = matrix.nbytes() / n
    p50, p99 = percentile(samples, 50) / 1e6, percentile(samples, 99) / 1e6
    report.add("evaluate p50", f"{p50:.1f} ms")
    report.add("evaluate p99", f"{p99:.1f} ms", f"<= {TARGET_EVAL_MS:.0f} ms", p99 <= TARGET_EVAL_MS)
    report.add("evaluate CPU time p50 / p99", f"{percentile(cpu, 50) / 1e6:.1f} / {percentile(cpu, 99) / 1e6:.1f} ms")
    report.add("matching players", f"{members:,} ({members / n:.1%})")
    report.add("preview (count + 20-player sample)", f"{preview_s * 1000:.1f} ms (count {pv.count:,})")
    report.add(
        "feature matrix bytes per player",
        f"{per_player:.0f} B (columns + id + liveness)",
        f"<= {MAX_BYTES_PER_PLAYER} B",
        per_player <= MAX_BYTES_PER_PLAYER,
    )
    report.add("  id -> row index (Python dict, est.)", f"{matrix.index_nbytes() / n:.0f} B per player")
    report.add("  RSS delta of the load", f"{(rss1 - rss0) / 1024:,.0f} MiB ({(rss1 - rss0) * 1024 / n:.0f} B/player)")
    report.add("matrix build (bulk load)", f"{build:.2f} s ({n / build:,.0f} players/s)")
    report.add(
        f"update() of {len(changed):,} players",
        f"{update_s * 1000:.0f} ms ({update_s / len(changed) * 1e6:.0f} us each)",
    )
    report.add(
        f"Membership.apply of {len(changed):,} players", f"{apply_s * 1000:.1f} ms (+{len(entered)} / -{len(exited)})"
    )
    report.notes.append(f"synthetic data generated in {generated:.1f}s; capacity {matrix.capacity:,} rows")
    report.notes.append(f"{host_note()}, numpy {np.__version__}, one core")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.segments", description=__doc__.split("\n")[0])
    d = SegmentsOptions()
    p.add_argument("--players", type=int, default=d.players)
    p.add_argument("--runs", type=int, default=d.runs)
    p.add_argument("--changes", type=int, default=d.changes)
    p.add_argument("--seed", type=int, default=d.seed)
    args = p.parse_args(argv)
    print(measure(SegmentsOptions(args.players, args.runs, args.changes, args.seed)).render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
