"""Synthetic player histories with a known churn signal, deterministic by seed (tests, benchmarks, demos).

Each player has three hidden traits:

- `rate`: the chance of being active on a given day (log-normal, 2 %-90 %);
- `trend`: how that chance changes over the window (exp(1.5 * trend * x), x from -0.5 to +0.5
  across the history): negative = declining engagement;
- `loss`: how much the player loses per bet (house edge 4 % * exp(0.6 * loss)).

The churn probability is sigmoid(-1.2 - 1.2 * trend + 0.9 * loss + 0.3 * (-ln rate - 1.2)). A
churned player has no activity in the horizon after the cutoff; a retained one has at least one
active day there. Recency carries part of the signal (declining and rare players were seen less
recently), the loss and the finer shape of the trend only show in the other signals, so a model
using them should beat a recency-only baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from domain.churn import HORIZON, WINDOW, History

STAKE_MINOR = 100  # one bet, in minor units


@dataclass(frozen=True, slots=True)
class Synthetic:
    history: History
    cutoff: int
    churn_probability: npt.NDArray[np.float64]  # the true one, from the hidden traits
    churned: npt.NDArray[np.bool_]  # drawn from it; equals `churn.labels(history, cutoff)`


def synthetic_history(n_players: int, seed: int, window: int = WINDOW, horizon: int = HORIZON) -> Synthetic:
    rng = np.random.default_rng(seed)
    n, days, cutoff = n_players, window + horizon, window
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # UUID version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    ids = raw.reshape(-1).view("V16")

    rate = np.clip(np.exp(rng.normal(np.log(0.3), 0.7, n)), 0.02, 0.9)
    trend = rng.normal(0.0, 1.0, n)
    loss = rng.normal(0.0, 1.0, n)
    logit = -1.2 - 1.2 * trend + 0.9 * loss + 0.3 * (-np.log(rate) - 1.2)
    p_churn = 1.0 / (1.0 + np.exp(-logit))
    churned = rng.random(n) < p_churn

    x = (np.arange(days) - (days - 1) / 2.0) / days
    p_day = np.clip(rate[:, None] * np.exp(1.5 * trend[:, None] * x[None, :]), 0.0, 0.95)
    active = rng.random((n, days)) < p_day
    active[churned, cutoff:] = False
    # A retained player comes back at least once in the horizon.
    missing = ~churned & ~active[:, cutoff:].any(axis=1)
    active[np.flatnonzero(missing), cutoff + rng.integers(0, horizon, int(missing.sum()))] = True

    sessions = (active * (1 + rng.poisson(0.8, (n, days)))).astype(np.int16)
    bets = (sessions * rng.poisson(12.0, (n, days))).astype(np.int32)
    deposit_day = active & (rng.random((n, days)) < 0.3)
    deposits = (deposit_day * np.exp(rng.normal(np.log(3000.0), 0.8, (n, days)))).astype(np.int32)
    edge = 0.04 * np.exp(0.6 * loss)
    mean_loss = bets * (STAKE_MINOR * edge[:, None])
    noise = rng.normal(0.0, 1.0, (n, days)) * np.sqrt(bets) * STAKE_MINOR * 1.5
    net_loss = np.rint(mean_loss + noise).astype(np.int32)
    history = History(player_ids=ids, sessions=sessions, bets=bets, deposits=deposits, net_loss=net_loss)
    return Synthetic(history=history, cutoff=cutoff, churn_probability=p_churn, churned=churned)
