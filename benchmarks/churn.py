"""Churn model and A/B bucketing alone (no stack): training time, held-out AUC against the
recency-only baseline, scoring time, and `assign_many` time.

Generates --players synthetic players (domain.synthetic: 90 days of history, a 30-day horizon,
a known signal in activity trend and net loss) in chunks, builds their features, trains on the
at-risk players outside a 20 % held-out split and reports both AUCs on the held-out ones. Then
scores --score-players feature rows (the training rows tiled) and assigns --assign-players random
ids to a 3-variant experiment with a 10 % holdout.

    python -m benchmarks churn
    python -m benchmarks.churn --players 200000 --score-players 1000000 --assign-players 1000000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from benchmarks.common import Report
from domain import churn
from domain.ab import HOLDOUT_INDEX, assign_many
from domain.synthetic import synthetic_history
from schemas.experiments import Experiment, Variant


@dataclass(frozen=True, slots=True)
class ChurnOptions:
    players: int = 200_000
    score_players: int = 1_000_000
    assign_players: int = 1_000_000
    chunk: int = 25_000  # players generated at once: 25,000 x 120 days x 4 signals stays near 100 MB
    seed: int = 2026


def measure(opts: ChurnOptions) -> Report:
    report = Report(
        "churn",
        f"{opts.players:,} synthetic players (90 + 30 days); scoring {opts.score_players:,}; "
        f"assign_many {opts.assign_players:,}",
    )
    gen_s = feat_s = 0.0
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for i, start in enumerate(range(0, opts.players, opts.chunk)):
        t = time.perf_counter()
        syn = synthetic_history(min(opts.chunk, opts.players - start), seed=opts.seed * 1000 + i)
        gen_s += time.perf_counter() - t
        t = time.perf_counter()
        h, c = syn.history, syn.cutoff
        parts.append(
            (churn.features(h, c), churn.labels(h, c), churn.at_risk(h, c), churn.split(h.player_ids, 0.2, opts.seed))
        )
        feat_s += time.perf_counter() - t
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    pop = np.concatenate([p[2] for p in parts])
    test = np.concatenate([p[3] for p in parts])
    tr, te = pop & ~test, pop & test
    report.add("synthetic history generation", f"{gen_s:.1f} s")
    report.add("features + labels + split", f"{feat_s:.2f} s ({feat_s / opts.players * 1e6:.1f} µs/player)")

    t = time.perf_counter()
    model = churn.train(X[tr], y[tr], trained_at=datetime.now(UTC))
    train_s = time.perf_counter() - t
    report.add(f"training ({int(tr.sum()):,} at-risk players, {len(churn.FEATURES)} features)", f"{train_s:.2f} s")
    m_auc = churn.auc(churn.predict(model, X[te]), y[te])
    b_auc = churn.auc(churn.recency_baseline(X[te]), y[te])
    report.add(f"held-out AUC, model ({int(te.sum()):,} players)", f"{m_auc:.4f}", "> baseline", m_auc > b_auc)
    report.add("held-out AUC, recency-only baseline", f"{b_auc:.4f}")

    reps = -(-opts.score_players // len(X))
    big = np.tile(X, (reps, 1))[: opts.score_players]
    t = time.perf_counter()
    scores = churn.predict(model, big)
    score_s = time.perf_counter() - t
    report.add(
        f"scoring {len(scores):,} feature rows", f"{score_s:.3f} s ({score_s / len(scores) * 1e9:.0f} ns/player)"
    )

    ex = Experiment(
        experiment_key="bench-welcome",
        holdout_bp=1000,
        starts_at=datetime(2026, 1, 1, tzinfo=UTC),
        variants=[
            Variant(name="control", weight=2),
            Variant(name="bonus", weight=1),
            Variant(name="free-spins", weight=1),
        ],
    )
    ids = np.frombuffer(np.random.default_rng(opts.seed).bytes(16 * opts.assign_players), dtype="V16")
    t = time.perf_counter()
    got = assign_many(ex, ids)
    assign_s = time.perf_counter() - t
    per_player = assign_s / opts.assign_players * 1e9
    report.add(f"assign_many {opts.assign_players:,} players", f"{assign_s:.2f} s ({per_player:.0f} ns/player)")
    shares = [float((got == i).mean()) for i in (HOLDOUT_INDEX, 0, 1, 2)]
    report.notes.append(
        "assignment shares holdout/control/bonus/free-spins: "
        + " / ".join(f"{s:.4f}" for s in shares)
        + " (expected 0.1000 / 0.4500 / 0.2250 / 0.2250)"
    )
    report.notes.append(
        f"churn rate of the at-risk population {float(y[pop].mean()):.3f}; model JSON {len(str(model.to_dict()))} chars"
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.churn", description=(__doc__ or "").split("\n")[0])
    d = ChurnOptions()
    p.add_argument("--players", type=int, default=d.players)
    p.add_argument("--score-players", type=int, default=d.score_players)
    p.add_argument("--assign-players", type=int, default=d.assign_players)
    p.add_argument("--seed", type=int, default=d.seed)
    args = p.parse_args(argv)
    opts = ChurnOptions(args.players, args.score_players, args.assign_players, d.chunk, args.seed)
    print(measure(opts).render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
