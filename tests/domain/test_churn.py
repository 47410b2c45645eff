"""Churn risk: the exact AUC against a brute-force pairwise count, its fixed points, features and
labels on hand-made histories, the deterministic split, model round-trip, and the trained model
beating the recency-only baseline on synthetic data with a known signal (fixed seeds)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.churn import FEATURES, History, Model, at_risk, auc, features, fit, labels, predict, split, train
from domain.errors import InvalidInput
from domain.synthetic import synthetic_history

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def brute_auc(scores: list[float], y: list[bool]) -> float:
    pos = [s for s, t in zip(scores, y, strict=True) if t]
    neg = [s for s, t in zip(scores, y, strict=True) if not t]
    doubled = sum(2 if p > n else 1 if p == n else 0 for p in pos for n in neg)
    return doubled / (2 * len(pos) * len(neg))


# ---------------------------------------------------------------------------- AUC


@given(
    st.lists(
        st.tuples(st.integers(0, 6).map(lambda i: i / 4) | st.floats(-1e6, 1e6), st.booleans()), min_size=2, max_size=60
    ).filter(lambda r: 0 < sum(t for _, t in r) < len(r))
)
def test_auc_equals_the_pairwise_count(rows: list[tuple[float, bool]]) -> None:
    scores, y = [s for s, _ in rows], [t for _, t in rows]
    assert auc(np.array(scores), np.array(y)) == brute_auc(scores, y)  # exactly, ties included


def test_auc_fixed_points() -> None:
    y = np.array([0, 0, 0, 1, 1])
    assert auc(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), y) == 1.0
    assert auc(np.array([0.9, 0.8, 0.7, 0.2, 0.1]), y) == 0.0
    assert auc(np.full(5, 0.4), y) == 0.5


@given(st.lists(st.floats(-10, 10), min_size=4, max_size=40), st.data())
def test_auc_is_symmetric_under_reversal(scores: list[float], data: st.DataObject) -> None:
    y = data.draw(
        st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)).filter(lambda v: 0 < sum(v) < len(v))
    )
    s, t = np.array(scores), np.array(y)
    assert auc(s, t) + auc(-s, t) == pytest.approx(1.0, abs=1e-12)


def test_auc_needs_both_classes_and_finite_scores() -> None:
    with pytest.raises(InvalidInput) as e:
        auc(np.array([0.1, 0.2]), np.array([1, 1]))
    assert e.value.field == "y"
    with pytest.raises(InvalidInput) as e:
        auc(np.array([0.1, np.nan]), np.array([0, 1]))
    assert e.value.field == "scores"


# ---------------------------------------------------------------------------- features and labels


def hand_history(rows: list[str], money: int = 0) -> History:
    """One row per player, one character per day: '.' idle, 's' a session with bets, '$' also a deposit."""
    grid = np.array([[c != "." for c in r] for r in rows])
    dep = np.array([[c == "$" for c in r] for r in rows])
    ids = churn_ids(len(rows))
    return History(
        player_ids=ids,
        sessions=grid.astype(np.int16),
        bets=(grid * 3).astype(np.int32),
        deposits=(dep * 5000).astype(np.int64),
        net_loss=(grid * money).astype(np.int64),
    )


def churn_ids(n: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=i + 1) for i in range(n)]


def test_labels_and_population_follow_the_definitions() -> None:
    # 31 feature days then a 30-day horizon (the cutoff is day 31 in a 61-day history).
    h = hand_history(
        [
            "s" + "." * 30 + "." * 30,  # last seen 31 days before the cutoff: not at risk; churned
            "." * 30 + "s" + "." * 30,  # seen the day before the cutoff, then gone: churned
            "." * 30 + "s" + "." * 29 + "s",  # back on the last day of the horizon: retained
            "." * 31 + "s" + "." * 29,  # back on the cutoff day itself: retained
        ]
    )
    assert labels(h, 31).tolist() == [True, True, False, False]
    assert at_risk(h, 31).tolist() == [False, True, True, False]


def test_features_on_a_hand_made_history() -> None:
    h = hand_history(["$" + "." * 59 + "s" * 30, "." * 90], money=250)
    X = features(h, 90)
    f = dict(zip(FEATURES, X[0], strict=True))
    assert f["days_since_active"] == 0 and f["days_since_first_active"] == 90
    assert (f["active_days_7"], f["active_days_30"], f["active_days_window"]) == (7, 30, 31)
    assert f["activity_trend"] == pytest.approx(1.0 - 1 / 60)
    assert f["deposit_days_window"] == 1 and f["log_deposits_30"] == 0.0
    assert f["net_loss_30"] == pytest.approx(np.log1p(30 * 2.5))
    assert f["loss_to_deposits"] == pytest.approx(31 * 250 / 5000)
    idle = dict(zip(FEATURES, X[1], strict=True))
    assert idle["days_since_active"] == 90 and idle["active_days_window"] == 0


def test_history_and_cutoff_are_validated() -> None:
    h = hand_history(["s" * 40])
    with pytest.raises(InvalidInput) as e:
        features(h, 39)  # needs 90 days before the cutoff
    assert e.value.field == "cutoff"
    with pytest.raises(InvalidInput) as e:
        labels(h, 20)  # needs 30 days after it
    assert e.value.field == "cutoff"
    with pytest.raises(InvalidInput) as e:
        History(
            player_ids=churn_ids(1),
            sessions=np.zeros((1, 5), np.int16),
            bets=np.zeros((1, 5), np.int16),
            deposits=np.zeros((1, 5)),  # type: ignore[arg-type]  # floats on purpose
            net_loss=np.zeros((1, 5), np.int64),
        )
    assert e.value.field == "deposits"  # floats: money is integer minor units


# ---------------------------------------------------------------------------- split


def test_split_is_deterministic_per_player_and_near_its_fraction() -> None:
    ids = np.frombuffer(np.random.default_rng(9).bytes(16 * 50_000), dtype="V16")
    held = split(ids, 0.2, seed=3)
    assert abs(float(held.mean()) - 0.2) < 6 * np.sqrt(0.2 * 0.8 / 50_000)
    # A player's side does not depend on who else is in the set, nor on their order.
    assert (split(ids[:1000], 0.2, seed=3) == held[:1000]).all()
    order = np.random.default_rng(1).permutation(50_000)
    assert (split(ids[order], 0.2, seed=3) == held[order]).all()
    # Another seed, another split; a larger fraction only adds players.
    assert (split(ids, 0.2, seed=4) != held).mean() > 0.2
    assert (held <= split(ids, 0.3, seed=3)).all()


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_fraction_must_be_inside_zero_one(fraction: float) -> None:
    with pytest.raises(InvalidInput) as e:
        split(churn_ids(3), fraction, seed=1)
    assert e.value.field == "fraction"


# ---------------------------------------------------------------------------- model


def test_model_beats_the_recency_baseline_on_a_known_signal() -> None:
    syn = synthetic_history(30_000, seed=20260301)
    assert (labels(syn.history, syn.cutoff) == syn.churned).all()
    model, ev = fit(syn.history, syn.cutoff, trained_at=T0, seed=7)
    assert ev.n_train > 20_000 and ev.n_held_out > 4_000
    assert 0.1 < ev.churn_rate < 0.6
    assert ev.auc_model > ev.auc_baseline + 0.05, ev
    assert model.auc == ev.auc_model and model.extra["auc_recency_baseline"] == ev.auc_baseline
    # The signal the generator hid: declining activity and rising losses raise the risk.
    coef = dict(zip(FEATURES, model.coefficients, strict=True))
    assert coef["activity_trend"] < 0 and coef["net_loss_window"] > 0
    # Prior correction: the mean score is close to the training churn rate.
    X = features(syn.history, syn.cutoff)
    pop = at_risk(syn.history, syn.cutoff)
    assert float(predict(model, X[pop]).mean()) == pytest.approx(model.base_rate, abs=0.05)


def test_training_is_deterministic() -> None:
    syn = synthetic_history(3000, seed=5)
    a, _ = fit(syn.history, syn.cutoff, trained_at=T0, seed=1)
    b, _ = fit(syn.history, syn.cutoff, trained_at=T0, seed=1)
    assert a.to_dict() == b.to_dict()


def test_scores_are_probabilities_even_for_extreme_inputs() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    y = (X[:, 0] + 0.3 * rng.normal(size=500)) > 0
    model = train(X, y, trained_at=T0, feature_names=("a", "b", "c"))
    s = predict(model, np.vstack([X, [[1e6, 0, 0], [-1e6, 0, 0]]]))
    assert ((s >= 0) & (s <= 1)).all()
    assert s[-2] == 1.0 and s[-1] == 0.0
    assert auc(s[:500], y) > 0.9


def test_perfectly_separated_training_data_still_gives_a_model() -> None:
    X = np.arange(20, dtype=np.float64).reshape(-1, 1)
    y = X[:, 0] >= 10
    model = train(X, y, l2=0.0, trained_at=T0, feature_names=("x",))
    assert auc(predict(model, X), y) == 1.0
    assert all(np.isfinite(model.coefficients))


def test_model_round_trips_through_its_json_dict() -> None:
    syn = synthetic_history(2000, seed=11)
    model, _ = fit(syn.history, syn.cutoff, trained_at=T0, version=4, seed=2)
    data = json.loads(json.dumps(model.to_dict()))
    back = Model.from_dict(data)
    assert back == model
    X = features(syn.history, syn.cutoff)
    assert (predict(back, X) == predict(model, X)).all()
    assert len(json.dumps(data)) < 4000


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("coefficients"), "coefficients"),
        (lambda d: d.update(format=99), "format"),
        (lambda d: d.update(means=d["means"][:-1]), "coefficients"),
        (lambda d: d.update(trained_at="2026-03-01T00:00:00"), "trained_at"),
        (lambda d: d.update(intercept="nan"), "coefficients"),
    ],
)
def test_malformed_model_dicts_are_refused(mutate: Any, field: str) -> None:
    data = train(
        np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 1, 0, 1]), trained_at=T0, feature_names=("x",)
    ).to_dict()
    mutate(data)
    with pytest.raises(InvalidInput) as e:
        Model.from_dict(data)
    assert e.value.field == field


def test_training_input_is_validated() -> None:
    X = np.zeros((4, len(FEATURES)))
    with pytest.raises(InvalidInput) as e:
        train(X, np.zeros(4), trained_at=T0)
    assert e.value.field == "y"
    with pytest.raises(InvalidInput) as e:
        train(X, np.array([0, 1, 0, 1]), trained_at=datetime(2026, 3, 1))  # naive: refused
    assert e.value.field == "trained_at"
    with pytest.raises(InvalidInput) as e:
        train(X[:, :3], np.array([0, 1, 0, 1]), trained_at=T0)
    assert e.value.field == "X"
    model = train(X, np.array([0, 1, 0, 1]), trained_at=T0)
    with pytest.raises(InvalidInput) as e:
        predict(model, np.zeros((2, 3)))
    assert e.value.field == "X"
