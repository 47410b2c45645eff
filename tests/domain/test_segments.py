"""Segment rules: the vectorised evaluator agrees with the plain-Python reference, incremental
membership agrees with a full recomputation, and bad rules are refused with the path of the bad part."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain.errors import InvalidInput, NotFound
from domain.segments import (
    FeatureMatrix,
    Membership,
    check_rule,
    count,
    evaluate,
    parse_rule,
    preview,
    reference_evaluate,
    sample,
)
from schemas.features import (
    CATALOGUE,
    FEATURES,
    INT_RANGE,
    MAX_BYTES_PER_PLAYER,
    FeatureRow,
    FeatureSpec,
    bytes_per_player,
)
from schemas.segments import MAX_IN_VALUES, All, AnyOf, Not

NOW = datetime(2026, 3, 1, 12, 30, 17, tzinfo=UTC)
CODES = ["MT", "DE", "FR", "SE", "slots", "live", "en", "aff-7"]
DAY = 24 * 60


# ---------------------------------------------------------------------------- strategies


def _int_values(spec: FeatureSpec) -> st.SearchStrategy[int]:
    lo, hi = INT_RANGE[spec.dtype]
    lo = 0 if spec.nonnegative else lo
    # Mostly small values so that rules and players meet; the ends of the range now and then.
    return st.one_of(st.integers(0 if spec.nonnegative else -20, 20), st.sampled_from([lo, hi]))


def _floats() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 2.5]), st.floats(0, 100, width=32))


def _timestamps() -> st.SearchStrategy[datetime]:
    # Seconds included: storage keeps minutes, and rules must agree with it.
    return st.integers(-60 * DAY, DAY).map(lambda m: NOW + timedelta(minutes=m)) | st.integers(
        -60 * DAY * 60, DAY * 60
    ).map(lambda s: NOW + timedelta(seconds=s))


def feature_value(spec: FeatureSpec) -> st.SearchStrategy[Any]:
    kind = spec.kind
    base: st.SearchStrategy[Any]
    if kind == "int":
        base = _int_values(spec)
    elif kind == "float":
        base = _floats()
    elif kind == "bool":
        base = st.booleans()
    elif kind == "category":
        base = st.sampled_from(spec.vocabulary)
    elif kind == "code":
        base = st.sampled_from(CODES[:5])
    else:
        base = _timestamps()
    return st.none() | base


# A handful of features keeps the rows small and the rules dense on them; every kind is present.
RULE_FEATURES = [
    CATALOGUE[n]
    for n in (
        "sessions_7d",
        "deposits_sum_30d",
        "ggr_30d",
        "bets_count_30d",
        "active_days_30d",
        "churn_risk",
        "bonus_use_ratio",
        "active_7d",
        "self_excluded",
        "lifecycle_stage",
        "device",
        "country",
        "traffic_source",
        "last_active_at",
        "first_deposit_at",
    )
]


@st.composite
def feature_rows(draw: st.DrawFn, features: list[FeatureSpec] = RULE_FEATURES) -> FeatureRow:
    return FeatureRow(**{f.name: draw(feature_value(f)) for f in features})


def _rule_value(spec: FeatureSpec) -> st.SearchStrategy[Any]:
    if spec.kind == "timestamp":
        return _timestamps().map(lambda t: t.isoformat())
    if spec.kind == "int":
        # Also values no column can hold: beyond the dtype, negative for counts.
        return _int_values(spec) | st.sampled_from([-(2**70), -1, 2**16, 2**33, 2**70])
    if spec.kind == "code":
        return st.sampled_from(CODES)  # some no player has
    return feature_value(spec).filter(lambda v: v is not None)


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(st.sampled_from(RULE_FEATURES))
    f, kind = spec.name, spec.kind
    choices = ["is_null", "cmp"]
    if kind in ("int", "float", "timestamp"):
        choices.append("between")
    if kind in ("int", "category", "code"):
        choices.append("in")
    if kind == "timestamp":
        choices += ["within", "not_within"]
    shape = draw(st.sampled_from(choices))
    if shape == "is_null":
        return {"feature": f, "op": "is_null"}
    if shape == "cmp":
        ops = ["eq", "ne", "lt", "le", "gt", "ge"] if kind in ("int", "float", "timestamp") else ["eq", "ne"]
        return {"feature": f, "op": draw(st.sampled_from(ops)), "value": draw(_rule_value(spec))}
    if shape == "between":
        a, b = draw(_rule_value(spec)), draw(_rule_value(spec))
        a, b = (
            (a, b)
            if (datetime.fromisoformat(a) if kind == "timestamp" else a)
            <= (datetime.fromisoformat(b) if kind == "timestamp" else b)
            else (b, a)
        )
        return {"feature": f, "op": "between", "min": a, "max": b}
    if shape == "in":
        return {"feature": f, "op": "in", "values": draw(st.lists(_rule_value(spec), min_size=1, max_size=5))}
    unit = draw(st.sampled_from(["days", "hours"]))
    return {"feature": f, "op": shape, "last": {unit: draw(st.integers(1, 40))}}


def rules() -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        leaves(),
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=4).map(lambda c: {"all": c}),
            st.lists(children, min_size=1, max_size=4).map(lambda c: {"any": c}),
            children.map(lambda c: {"not": c}),
        ),
        max_leaves=12,
    )


def _parse(data: dict[str, Any]) -> Any:
    try:
        return parse_rule(data)
    except InvalidInput:
        assume(False)  # too deep, or a window pair nothing can satisfy: covered by the bad-input tests


def _matrix(rows: list[FeatureRow]) -> tuple[FeatureMatrix, list[uuid.UUID]]:
    m = FeatureMatrix(capacity=2)  # small, so that growth is exercised
    ids = [uuid.UUID(int=i + 1) for i in range(len(rows))]
    for pid, row in zip(ids, rows, strict=True):
        m.upsert(pid, row)
    return m, ids


now_strategy = st.integers(-3 * DAY, 3 * DAY).map(lambda m: NOW + timedelta(minutes=m, seconds=m % 60))


# ---------------------------------------------------------------------------- properties


@settings(max_examples=250)
@given(rows=st.lists(feature_rows(), min_size=1, max_size=25), data=rules(), now=now_strategy)
def test_vectorised_evaluation_equals_the_reference(
    rows: list[FeatureRow], data: dict[str, Any], now: datetime
) -> None:
    rule = _parse(data)
    m, _ = _matrix(rows)
    mask = evaluate(rule, m, now)
    assert mask.shape == (len(rows),)
    assert mask.tolist() == [reference_evaluate(rule, row, now) for row in rows]
    # The subset path (incremental membership) agrees with the full one.
    rows_idx = np.arange(len(rows) - 1, -1, -2, dtype=np.int64)
    assert evaluate(rule, m, now, rows_idx).tolist() == mask[rows_idx].tolist()


@given(rows=st.lists(feature_rows(list(FEATURES)), min_size=1, max_size=5))
def test_a_stored_row_reads_back_equal(rows: list[FeatureRow]) -> None:
    m, ids = _matrix(rows)
    for pid, row in zip(ids, rows, strict=True):
        assert m.get(pid) == row


@given(rows=st.lists(feature_rows(), min_size=1, max_size=25), a=rules(), b=rules(), now=now_strategy)
def test_not_is_the_complement_and_all_any_are_intersection_union(
    rows: list[FeatureRow], a: dict[str, Any], b: dict[str, Any], now: datetime
) -> None:
    ra, rb = _parse(a), _parse(b)
    m, ids = _matrix(rows)
    m.delete(ids[0])  # a dead row matches nothing, not even a complement
    ea, eb = evaluate(ra, m, now), evaluate(rb, m, now)
    live = m.live
    assert (evaluate(Not.model_validate({"not": ra}), m, now) == (~ea & live)).all()
    both = {"all": [a, b]}
    either = {"any": [a, b]}
    try:
        r_all, r_any = parse_rule(both), parse_rule(either)
    except InvalidInput:
        assume(False)  # nesting one level deeper went past the limit
    assert (evaluate(r_all, m, now) == (ea & eb)).all()
    assert (evaluate(r_any, m, now) == (ea | eb)).all()
    assert isinstance(r_all, All) and isinstance(r_any, AnyOf)
    assert not ea[0] and not eb[0]


@st.composite
def changes(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(RULE_FEATURES), min_size=1, max_size=4, unique_by=lambda f: f.name))
    return {f.name: draw(feature_value(f)) for f in names}


Op = tuple[str, int, Any]
ops = st.one_of(
    st.tuples(st.just("upsert"), st.integers(0, 30), feature_rows()),
    st.tuples(st.just("update"), st.integers(0, 30), changes()),
    st.tuples(st.just("delete"), st.integers(0, 30), st.none()),
    st.tuples(st.just("compact"), st.just(0), st.none()),
)


@given(
    initial=st.lists(feature_rows(), max_size=15),
    data=rules(),
    batches=st.lists(st.lists(ops, min_size=1, max_size=8), min_size=1, max_size=6),
    now=now_strategy,
)
def test_incremental_membership_equals_full_recomputation(
    initial: list[FeatureRow], data: dict[str, Any], batches: list[list[Op]], now: datetime
) -> None:
    rule = _parse(data)
    m, _ = _matrix(initial)
    seg = Membership(rule, m, now)
    members = set(m.player_ids(np.flatnonzero(seg.mask)))

    def apply(changed: list[uuid.UUID]) -> None:
        nonlocal members
        entered, exited = seg.apply(changed, now)
        assert not set(entered) & members and set(exited) <= members
        members = (members | set(entered)) - set(exited)
        changed.clear()

    for batch in batches:
        changed: list[uuid.UUID] = []
        for kind, key, value in batch:
            pid = uuid.UUID(int=key + 1)
            if kind == "upsert":
                m.upsert(pid, value)
            elif kind == "update":
                if not m.is_live(pid):
                    with pytest.raises(NotFound):
                        m.update(pid, value)
                    continue
                m.update(pid, value)
            elif kind == "delete":
                m.delete(pid)
            else:
                apply(changed)  # deleted members exit before their rows go
                seg.remap(m.compact())
                continue
            changed.append(pid)
        apply(changed)
        full = evaluate(rule, m, now)
        assert seg.mask.tolist() == full.tolist()
        assert members == set(m.player_ids(np.flatnonzero(full)))
        assert seg.count() == count(full)


def test_refresh_moves_time_windows_forward() -> None:
    m = FeatureMatrix()
    pid = uuid.uuid4()
    m.upsert(pid, FeatureRow(last_active_at=NOW - timedelta(days=6)))
    seg = Membership(parse_rule({"feature": "last_active_at", "op": "within", "last": {"days": 7}}), m, NOW)
    assert seg.count() == 1
    assert seg.refresh(NOW + timedelta(days=2)) == ([], [pid])


def test_preview_counts_and_samples_reproducibly() -> None:
    m = FeatureMatrix()
    ids = [uuid.UUID(int=i + 1) for i in range(100)]
    for i, pid in enumerate(ids):
        m.upsert(pid, FeatureRow(sessions_7d=i))
    rule = parse_rule({"feature": "sessions_7d", "op": "ge", "value": 50})
    p = preview(rule, m, NOW, n=10, seed=3)
    assert p.count == 50 and len(p.sample) == 10 and set(p.sample) <= set(ids[50:])
    assert p == preview(rule, m, NOW, n=10, seed=3)
    assert sample(evaluate(rule, m, NOW), 1000, 0).tolist() == list(range(50, 100))


def test_bulk_load_equals_row_by_row_upserts() -> None:
    rows = [
        FeatureRow(
            country="MT",
            deposits_sum_30d=500,
            last_active_at=NOW,
            lifecycle_stage="active",
            churn_risk=0.5,
            active_7d=True,
        ),
        FeatureRow(),
    ]
    ids = [uuid.uuid4(), uuid.uuid4()]
    m = FeatureMatrix()
    m.bulk_load(
        ids,
        {
            "country": np.array(["MT", None], dtype=object),
            "deposits_sum_30d": np.array([500, -(2**63)], dtype=np.int64),
            "last_active_at": np.array([NOW.replace(tzinfo=None), "NaT"], dtype="datetime64[m]"),
            "lifecycle_stage": np.array(["active", None], dtype=object),
            "churn_risk": np.array([0.5, np.nan], dtype=np.float32),
            "active_7d": np.array([1, 255], dtype=np.uint8),
        },
    )
    assert [m.get(p) for p in ids] == [rows[0].model_copy(update={"last_active_at": NOW.replace(second=0)}), rows[1]]


def test_feature_storage_stays_within_200_bytes_per_player() -> None:
    m = FeatureMatrix(capacity=1000)
    assert bytes_per_player() + 17 == m.nbytes() / 1000  # + 16-byte player id + liveness byte
    assert m.nbytes() / 1000 <= MAX_BYTES_PER_PLAYER


# ---------------------------------------------------------------------------- bad input


LEAF = {"feature": "sessions_7d", "op": "gt", "value": 3}


def _deep(levels: int) -> dict[str, Any]:
    rule: dict[str, Any] = LEAF
    for _ in range(levels - 1):
        rule = {"not": rule}
    return rule


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"all": [LEAF, LEAF, {"feature": "nope", "op": "eq", "value": 1}]}, "rule.all[2].feature", "unknown feature"),
        (
            {"all": [LEAF, LEAF, {"feature": "deposits_sum_30d", "op": "gt", "value": "100"}]},
            "rule.all[2].value",
            "expected an integer, got a string",
        ),
        ({"any": [{"feature": "deposits_sum_30d", "op": "eq", "value": 10.5}]}, "rule.any[0].value", "integer"),
        ({"not": {"feature": "country", "op": "eq", "value": 49}}, "rule.not.value", "expected a string"),
        ({"feature": "active_7d", "op": "gt", "value": True}, "rule.op", "ordered"),
        ({"feature": "lifecycle_stage", "op": "in", "values": ["active", "zombie"]}, "rule.values[1]", "zombie"),
        ({"feature": "country", "op": "in", "values": []}, "rule.values", "at least 1"),
        ({"feature": "country", "op": "in", "values": ["MT"] * (MAX_IN_VALUES + 1)}, "rule.values", "at most 1000"),
        ({"feature": "deposits_sum_30d", "op": "between", "min": 500, "max": 100}, "rule.min", "greater than max"),
        (
            {"feature": "registered_at", "op": "between", "min": "2026-02-01T00:00:00Z", "max": "2026-01-01T00:00:00Z"},
            "rule.min",
            "greater than max",
        ),
        ({"feature": "deposits_sum_30d", "op": "within", "last": {"days": 7}}, "rule.feature", "timestamp"),
        ({"feature": "last_active_at", "op": "within", "last": {}}, "rule.last", "exactly one"),
        ({"feature": "last_active_at", "op": "within", "last": {"days": 0}}, "rule.last.days", "greater than"),
        (
            {
                "all": [
                    {"feature": "last_active_at", "op": "within", "last": {"days": 7}},
                    {"feature": "last_active_at", "op": "not_within", "last": {"days": 30}},
                ]
            },
            "rule.all[1].last",
            "nothing can match",
        ),
        ({"feature": "registered_at", "op": "gt", "value": "2026-01-01T00:00:00"}, "rule.value", "offset"),
        ({"feature": "registered_at", "op": "gt", "value": "yesterday"}, "rule.value", "RFC 3339"),
        (_deep(9), "rule" + ".not" * 8, "8 levels"),
        (
            {"any": [LEAF] * 50 + [{"all": [LEAF] * 50}, {"all": [LEAF] * 50}, {"all": [LEAF] * 50}]},
            "rule.any[52].all[46]",
            "200 nodes",
        ),
        ({"all": [LEAF, {"feature": "sessions_7d", "op": "like", "value": 1}]}, "rule.all[1]", "a rule node is"),
        ({"all": [LEAF, {**LEAF, "extra": 1}]}, "rule.all[1].extra", "unknown key"),
        ({"feature": "sessions_7d", "op": "eq", "value": [1, 2]}, "rule.value", "number, boolean or string"),
    ],
)
def test_a_bad_rule_is_refused_with_the_path_of_the_bad_part(data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rule(data)
    assert caught.value.field == field
    assert words in caught.value.detail


def test_a_rule_built_in_code_is_checked_too() -> None:
    deep = parse_rule(_deep(8))
    with pytest.raises(InvalidInput) as caught:
        check_rule(Not.model_validate({"not": deep}))
    assert caught.value.field == "rule" + ".not" * 8
    with pytest.raises(InvalidInput):
        evaluate(Not.model_validate({"not": deep}), FeatureMatrix(), NOW)


def test_a_bad_update_writes_nothing() -> None:
    m = FeatureMatrix()
    pid = uuid.uuid4()
    m.upsert(pid, FeatureRow(sessions_7d=3, country="MT"))
    for bad, field in (
        ({"sessions_7d": 4, "country": 7}, "changes.country"),
        ({"sessions_7d": 2**16}, "changes.sessions_7d"),
        ({"sessions_7d": 4, "lifecycle_stage": "zombie"}, "changes.lifecycle_stage"),
        ({"sessions_7d": 4, "unknown": 1}, "changes.unknown"),
    ):
        with pytest.raises(InvalidInput) as caught:
            m.update(pid, bad)
        assert caught.value.field == field
    assert m.get(pid) == FeatureRow(sessions_7d=3, country="MT")
