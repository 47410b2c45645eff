"""Churn risk: features from the players' own daily history, a logistic regression trained with
numpy, an exact AUC, a deterministic train/held-out split, and a recency-only baseline.

Definitions fixed here:

- History: per signal a players x days integer matrix, oldest day first (`History`). A day is
  *active* when the player started a session, placed a bet or deposited. Amounts are integer
  minor units of one reporting currency (the service converts before building the matrix).
- Cutoff: a day index c. Features read the `window` days before it, [c - window, c) (90 by
  default); the label reads the `horizon` days from it, [c, c + horizon) (30 by default).
- Label: churned = no active day in the horizon (inactive for 30 days after the cutoff).
- Population at risk (`at_risk`): players active at least once in the 30 days before the cutoff.
  A player already inactive for 30 days has churned by definition; scoring them would only
  inflate every model's AUC with easy cases, so training, evaluation and scoring use this mask.
- Model: L2-regularised logistic regression on standardised features, fitted by Newton's method
  (IRLS) with balanced class weights, then the intercept is shifted by log(n_churned / n_stayed)
  (prior correction) so scores approximate the churn probability at the observed base rate.
  Ranking, hence AUC, is unchanged by that shift.
- AUC: the Mann-Whitney U statistic with ties counted one half, computed exactly in integers.
- Split: a player is held out when BLAKE2b-64(seed, player id) falls below `fraction` of the
  hash space, so a player never moves between training and held-out sets across retrainings
  with the same seed, whatever the other players.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from domain.ab import hash64_many, id_bytes
from domain.errors import InvalidInput

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

FORMAT = 1  # of `Model.to_dict`
WINDOW = 90
HORIZON = 30
RECENT = 30  # the at-risk population: active within this many days before the cutoff

FEATURES: tuple[str, ...] = (
    "days_since_active",  # days since the last active day in the window (the window if none)
    "days_since_first_active",  # within the window: a short-tenure proxy
    "active_days_7",
    "active_days_30",
    "active_days_window",
    "activity_trend",  # share of active days in the last 30 minus in the days before them
    "log_sessions_30",
    "log_sessions_window",
    "session_trend",  # log of sessions per 30 days, last 30 against the earlier part of the window
    "log_bets_window",
    "log_deposits_30",
    "log_deposits_window",
    "deposit_days_window",
    "net_loss_30",  # signed log: sign(x) * log1p(|x| in major units)
    "net_loss_window",
    "loss_to_deposits",  # net loss / deposits over the window, clipped to [-5, 5]
)
RECENCY = FEATURES.index("days_since_active")


@dataclass(frozen=True, slots=True)
class History:
    """Daily history of n players over d days (oldest first). Any integer dtypes; sums are int64."""

    player_ids: Any  # n ids in a form `domain.ab.id_bytes` accepts (V16/S16 array, UUIDs...)
    sessions: npt.NDArray[np.integer[Any]]  # sessions started per day
    bets: npt.NDArray[np.integer[Any]]  # bets placed per day
    deposits: npt.NDArray[np.integer[Any]]  # minor units deposited per day
    net_loss: npt.NDArray[np.integer[Any]]  # stakes minus wins per day, minor units; negative = the player won

    def __post_init__(self) -> None:
        shape = self.sessions.shape
        for name in ("sessions", "bets", "deposits", "net_loss"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.ndim != 2 or a.shape != shape:
                raise InvalidInput(f"{name}: expected a players x days matrix of shape {shape}", field=name)
            if a.dtype.kind not in "iu":
                raise InvalidInput(f"{name}: expected integers (counts or minor units), got {a.dtype}", field=name)
        if len(self.player_ids) != shape[0]:
            raise InvalidInput(f"player_ids: {len(self.player_ids)} ids for {shape[0]} rows", field="player_ids")

    @property
    def n_players(self) -> int:
        return int(self.sessions.shape[0])

    @property
    def n_days(self) -> int:
        return int(self.sessions.shape[1])

    def active(self, start: int, stop: int) -> Bools:
        """players x (stop - start) active days."""
        return (self.sessions[:, start:stop] > 0) | (self.bets[:, start:stop] > 0) | (self.deposits[:, start:stop] > 0)


def _check_cutoff(history: History, cutoff: int, before: int, after: int) -> None:
    if not before <= cutoff <= history.n_days - after:
        raise InvalidInput(f"cutoff day {cutoff} needs {before} days before and {after} after it in a history of "
                           f"{history.n_days} days", field="cutoff")


def _sum(a: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    out: npt.NDArray[np.int64] = a.sum(axis=1, dtype=np.int64)
    return out


def _slog(minor: npt.NDArray[np.int64]) -> Floats:
    major = minor.astype(np.float64) / 100.0
    return np.sign(major) * np.log1p(np.abs(major))


def features(history: History, cutoff: int, window: int = WINDOW) -> Floats:
    """players x len(FEATURES), from the days [cutoff - window, cutoff)."""
    if window < RECENT + 1:
        raise InvalidInput(f"window must be more than {RECENT} days", field="window")
    _check_cutoff(history, cutoff, window, 0)
    lo = cutoff - window
    act = history.active(lo, cutoff)
    n = history.n_players
    any_active = act.any(axis=1)
    # argmax finds the first True; on the reversed matrix that is the latest active day.
    last = np.where(any_active, np.argmax(act[:, ::-1], axis=1), window).astype(np.float64)
    first = np.where(any_active, window - np.argmax(act, axis=1), 0).astype(np.float64)
    a7 = act[:, -7:].sum(axis=1)
    a30 = act[:, -RECENT:].sum(axis=1)
    aw = act.sum(axis=1)
    earlier = window - RECENT
    trend = a30 / RECENT - (aw - a30) / earlier
    s = history.sessions[:, lo:cutoff]
    s30, sw = _sum(s[:, -RECENT:]), _sum(s)
    session_trend = np.log1p(s30) - np.log1p((sw - s30) * (RECENT / earlier))
    d = history.deposits[:, lo:cutoff]
    d30, dw = _sum(d[:, -RECENT:]), _sum(d)
    nl = history.net_loss[:, lo:cutoff]
    nl30, nlw = _sum(nl[:, -RECENT:]), _sum(nl)
    ratio = np.clip(nlw / np.maximum(dw, 100), -5.0, 5.0)  # deposits floored at one major unit
    out = np.empty((n, len(FEATURES)), dtype=np.float64)
    cols = (last, first, a7, a30, aw, trend, np.log1p(s30), np.log1p(sw), session_trend,
            np.log1p(_sum(history.bets[:, lo:cutoff])), _slog(d30), _slog(dw), (d > 0).sum(axis=1),
            _slog(nl30), _slog(nlw), ratio)
    for j, col in enumerate(cols):
        out[:, j] = col
    return out


def labels(history: History, cutoff: int, horizon: int = HORIZON) -> Bools:
    """True for a player with no active day in [cutoff, cutoff + horizon): churned."""
    _check_cutoff(history, cutoff, 0, horizon)
    return np.asarray(~history.active(cutoff, cutoff + horizon).any(axis=1), dtype=np.bool_)


def at_risk(history: History, cutoff: int, recent: int = RECENT) -> Bools:
    """True for a player active at least once in the `recent` days before the cutoff."""
    _check_cutoff(history, cutoff, recent, 0)
    return np.asarray(history.active(cutoff - recent, cutoff).any(axis=1), dtype=np.bool_)


def split(ids: Any, fraction: float, seed: int) -> Bools:
    """Held-out mask: True for a player whose keyed hash falls in the first `fraction` of the space."""
    if not 0.0 < fraction < 1.0:
        raise InvalidInput("fraction must be strictly between 0 and 1", field="fraction")
    if not 0 <= seed < 2**64:
        raise InvalidInput("seed must be an unsigned 64-bit integer", field="seed")
    hashes = hash64_many(b"pitboss.split.v1", struct.pack(">Q", seed), id_bytes(ids))
    # The top 53 bits as a float in [0, 1): exact, so the cut is the same on every platform.
    return (hashes >> np.uint64(11)).astype(np.float64) / 2.0**53 < fraction


# ---------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class Model:
    feature_names: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    coefficients: tuple[float, ...]  # per standardised feature
    intercept: float  # prior-corrected: scores approximate probabilities at the training base rate
    version: int
    trained_at: datetime
    window: int = WINDOW
    horizon: int = HORIZON
    l2: float = 0.0
    n_train: int = 0
    base_rate: float = 0.0  # share of churned players in the training set
    auc: float | None = None  # on held-out players, set by whoever evaluated it
    extra: dict[str, float] = field(default_factory=dict)  # other figures of the evaluation (baseline AUC...)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (floats, ints, strings, lists): a few hundred bytes to store next to its version."""
        return {
            "format": FORMAT,
            "version": self.version,
            "trained_at": self.trained_at.isoformat(),
            "feature_names": list(self.feature_names),
            "means": list(self.means),
            "scales": list(self.scales),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
            "window": self.window,
            "horizon": self.horizon,
            "l2": self.l2,
            "n_train": self.n_train,
            "base_rate": self.base_rate,
            "auc": self.auc,
            "extra": dict(self.extra),
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Model:
        try:
            if data["format"] != FORMAT:
                raise InvalidInput(f"model format {data['format']} is not {FORMAT}", field="format")
            names = tuple(str(x) for x in data["feature_names"])
            vectors = [tuple(float(x) for x in data[k]) for k in ("means", "scales", "coefficients")]
            trained_at = datetime.fromisoformat(data["trained_at"])
            model = Model(
                feature_names=names, means=vectors[0], scales=vectors[1], coefficients=vectors[2],
                intercept=float(data["intercept"]), version=int(data["version"]), trained_at=trained_at,
                window=int(data["window"]), horizon=int(data["horizon"]), l2=float(data["l2"]),
                n_train=int(data["n_train"]), base_rate=float(data["base_rate"]),
                auc=None if data["auc"] is None else float(data["auc"]),
                extra={str(k): float(v) for k, v in data["extra"].items()},
            )
        except KeyError as e:
            raise InvalidInput(f"model: missing {e.args[0]}", field=str(e.args[0])) from None
        except (TypeError, ValueError, AttributeError) as e:
            raise InvalidInput(f"model: malformed ({e})", field="model") from None
        if trained_at.utcoffset() is None:
            raise InvalidInput("trained_at must carry a UTC offset", field="trained_at")
        if any(len(v) != len(names) for v in vectors):
            raise InvalidInput("means, scales and coefficients must have one value per feature", field="coefficients")
        if not all(math.isfinite(x) for v in vectors for x in v) or not math.isfinite(model.intercept):
            raise InvalidInput("model parameters must be finite", field="coefficients")
        return model


def _sigmoid(z: Floats) -> Floats:
    # tanh form: no overflow warning for large |z|, and exactly within [0, 1].
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _matrix(X: Any, n_features: int | None = None) -> Floats:
    a = np.asarray(X, dtype=np.float64)
    if a.ndim != 2:
        raise InvalidInput("X must be a players x features matrix", field="X")
    if n_features is not None and a.shape[1] != n_features:
        raise InvalidInput(f"X has {a.shape[1]} features, the model {n_features}", field="X")
    if not np.isfinite(a).all():
        raise InvalidInput("X must be finite", field="X")
    return a


def _labels(y: Any, n: int) -> Floats:
    b = np.asarray(y)
    if b.shape != (n,) or not np.isin(b, (0, 1)).all():
        raise InvalidInput(f"y must be {n} labels of 0/1 (True = churned)", field="y")
    return b.astype(np.float64)


def train(X: Any, y: Any, l2: float = 1e-4, epochs: int = 25, *, trained_at: datetime, version: int = 1,
          feature_names: tuple[str, ...] = FEATURES, window: int = WINDOW, horizon: int = HORIZON,
          tolerance: float = 1e-9) -> Model:
    """Fit the model. `l2` penalises (l2 / 2) * |w|^2 against the mean weighted log loss (not the
    intercept); `epochs` bounds the Newton steps (it stops earlier once a step changes no weight by
    more than `tolerance`). Newton rather than gradient descent: with a few dozen features the
    Hessian is tiny and it converges in under ten steps with no learning rate to tune."""
    if trained_at.utcoffset() is None:
        raise InvalidInput("trained_at must carry a UTC offset", field="trained_at")
    if l2 < 0 or not math.isfinite(l2):
        raise InvalidInput("l2 must be a finite non-negative number", field="l2")
    if epochs < 1:
        raise InvalidInput("epochs must be at least 1", field="epochs")
    a = _matrix(X, len(feature_names))
    n, k = a.shape
    t = _labels(y, n)
    n_pos = int(t.sum())
    if n_pos == 0 or n_pos == n:
        raise InvalidInput("training needs both churned and retained players", field="y")
    means = a.mean(axis=0)
    scales = a.std(axis=0)
    scales[scales < 1e-12] = 1.0  # a constant feature stays at 0 after centring
    Z = np.empty((n, k + 1), dtype=np.float64)
    Z[:, :k] = (a - means) / scales
    Z[:, k] = 1.0
    # Balanced class weights: both classes weigh n/2 in total, so a 5 % churn rate does not let the
    # fit ignore the churners. Normalised by n below: the loss is a mean.
    w = np.where(t == 1.0, n / (2.0 * n_pos), n / (2.0 * (n - n_pos))) / n
    penalty = np.full(k + 1, l2)
    penalty[k] = 0.0
    beta = np.zeros(k + 1)
    for _ in range(epochs):
        p = _sigmoid(Z @ beta)
        grad = Z.T @ (w * (p - t)) + penalty * beta
        hess = (Z * (w * p * (1.0 - p))[:, None]).T @ Z + np.diag(penalty)
        hess[np.diag_indices_from(hess)] += 1e-12  # separable data: keep the system solvable
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < tolerance:
            break
    intercept = float(beta[k]) + math.log(n_pos / (n - n_pos))
    return Model(feature_names=tuple(feature_names), means=tuple(float(x) for x in means),
                 scales=tuple(float(x) for x in scales), coefficients=tuple(float(x) for x in beta[:k]),
                 intercept=intercept, version=version, trained_at=trained_at, window=window, horizon=horizon,
                 l2=float(l2), n_train=n, base_rate=n_pos / n)


def predict(model: Model, X: Any) -> Floats:
    """Churn scores in [0, 1], one per row of X (built by `features` with the model's window)."""
    a = _matrix(X, len(model.coefficients))
    # Standardisation folded into the weights: one matrix-vector product, no players x features temporaries.
    w = np.asarray(model.coefficients) / np.asarray(model.scales)
    return _sigmoid(a @ w + (model.intercept - float(np.asarray(model.means) @ w)))


def recency_baseline(X: Any, window: int = WINDOW) -> Floats:
    """The baseline a model must beat: days since last active, scaled to [0, 1]."""
    a = _matrix(X)
    return np.clip(a[:, RECENCY] / window, 0.0, 1.0)


def auc(scores: Any, y: Any) -> float:
    """Area under the ROC curve: P(score of a churned player > score of a retained one), ties
    counting one half. Mann-Whitney U from mid-ranks, in integers (doubled ranks), so it equals
    the pairwise count exactly."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise InvalidInput("scores must be a finite vector", field="scores")
    t = _labels(y, s.shape[0]).astype(bool)
    n_pos = int(t.sum())
    n_neg = int(s.shape[0]) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InvalidInput("AUC needs at least one churned and one retained player", field="y")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    below = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    # Doubled mid-rank of a tie group: 2 * (below + (count + 1) / 2), always an integer.
    doubled_rank = 2 * below + counts.astype(np.int64) + 1
    rank_sum2 = int(doubled_rank[inverse.reshape(-1)[t]].sum())
    u2 = rank_sum2 - n_pos * (n_pos + 1)  # 2 * U
    return u2 / (2 * n_pos * n_neg)


# ---------------------------------------------------------------------------- the whole pipeline


@dataclass(frozen=True, slots=True)
class Evaluation:
    auc_model: float
    auc_baseline: float
    n_train: int
    n_held_out: int
    churn_rate: float  # in the at-risk population


def fit(history: History, cutoff: int, *, trained_at: datetime, version: int = 1, seed: int = 0,
        held_out: float = 0.2, l2: float = 1e-4, epochs: int = 25, window: int = WINDOW,
        horizon: int = HORIZON) -> tuple[Model, Evaluation]:
    """Train on the at-risk players of the training split at `cutoff`, evaluate on the held-out
    split; the returned model carries its held-out AUC (and the baseline's in `extra`)."""
    X = features(history, cutoff, window)
    y = labels(history, cutoff, horizon)
    pop = at_risk(history, cutoff)
    test = split(history.player_ids, held_out, seed)
    tr, te = pop & ~test, pop & test
    model = train(X[tr], y[tr], l2, epochs, trained_at=trained_at, version=version, window=window, horizon=horizon)
    m_auc = auc(predict(model, X[te]), y[te])
    b_auc = auc(recency_baseline(X[te], window), y[te])
    ev = Evaluation(auc_model=m_auc, auc_baseline=b_auc, n_train=int(tr.sum()), n_held_out=int(te.sum()),
                    churn_rate=float(y[pop].mean()))
    return replace(model, auc=m_auc, extra={"auc_recency_baseline": b_auc, "n_held_out": float(ev.n_held_out)}), ev
