"""CRM segments: checking rules against the feature catalogue and evaluating them over a columnar
feature matrix with numpy, plus incremental membership.

Storage (`FeatureMatrix`): one numpy array per feature (dtype from `schemas.features`), a row per
player, capacity doubling as players arrive. Row numbers are stable: deleting a player nulls its
values and marks the row dead; the row is revived if the player comes back, and only `compact()`
renumbers (returning the old -> new map that `Membership.remap` takes). Missing values are stored
as per-dtype sentinels (`schemas.features.NULL_SENTINEL`): the maximum of an unsigned column, the
minimum of a signed one, NaN for float32. A comparison never matches a null, `is_null` does, and
`not` is the exact complement (so `not (country eq MT)` includes players without a country).

Time: `now` is passed in and truncated to the minute, the resolution timestamps are stored at.
`within {days: 7}` is `value >= now - 7 days` (a timestamp in the future counts as within);
`not_within {days: 7}` is `value < now - 7 days` and never matches a null: "no activity in the
last 7 days, or never active" is `{"any": [not_within, is_null]}`.

`reference_evaluate` is a plain-Python evaluator of one `FeatureRow`, written apart from the
vectorised one; the property tests hold the two equal.
"""

from __future__ import annotations

import operator
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from domain.errors import InvalidInput, NotFound
from schemas.features import (
    CATALOGUE,
    FEATURES,
    NULL_SENTINEL,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    FeatureRow,
    FeatureSpec,
    epoch_minutes,
    float32,
    to_minute,
)
from schemas.segments import (
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_NODES,
    RULE,
    TAGS,
    All,
    AnyOf,
    Between,
    Cmp,
    In,
    IsNull,
    Not,
    NotWithin,
    Rule,
    Within,
)

Mask = npt.NDArray[np.bool_]
Rows = npt.NDArray[np.int64]
Catalogue = Mapping[str, FeatureSpec]

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}
# Node and condition field names: what a validation error's location may name.
_FIELDS = frozenset(("all", "any", "not", "feature", "op", "value", "min", "max", "values", "last", "days", "hours"))
_ORDERED_KINDS = frozenset(("int", "float", "timestamp"))
_IN_KINDS = frozenset(("int", "category", "code"))
_KIND_WORD = {"int": "an integer", "float": "a number", "bool": "a boolean", "category": "a string",
              "code": "a string", "timestamp": "an RFC 3339 timestamp with offset"}


# ---------------------------------------------------------------------------- parsing and checking


def parse_rule(data: Any, catalogue: Catalogue = CATALOGUE) -> Rule:
    """A rule from its JSON form, fully checked; InvalidInput names the bad part (`rule.all[2].value`)."""
    _check_raw_limits(data)
    try:
        rule: Rule = RULE.validate_python(data)
    except ValidationError as exc:
        raise _invalid(exc) from None
    check_rule(rule, catalogue)
    return rule


def _check_raw_limits(data: Any) -> None:
    """Depth, size and in-list limits on the raw JSON, before pydantic walks a hostile tree."""
    stack: list[tuple[Any, str, int]] = [(data, "rule", 1)]
    nodes = 0
    while stack:
        node, path, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        nodes += 1
        if depth > MAX_DEPTH:
            raise InvalidInput(f"rules nest at most {MAX_DEPTH} levels deep", field=path)
        if nodes > MAX_NODES:
            raise InvalidInput(f"a rule has at most {MAX_NODES} nodes", field=path)
        values = node.get("values")
        if isinstance(values, list) and len(values) > MAX_IN_VALUES:
            raise InvalidInput(f"an in-list has at most {MAX_IN_VALUES} values, got {len(values)}",
                               field=f"{path}.values")
        for key in ("all", "any"):
            children = node.get(key)
            if isinstance(children, list):
                stack.extend((c, f"{path}.{key}[{i}]", depth + 1) for i, c in reversed(list(enumerate(children))))
        if "not" in node:
            stack.append((node["not"], f"{path}.not", depth + 1))


def _invalid(exc: ValidationError) -> InvalidInput:
    err = exc.errors()[0]
    loc = err["loc"]
    path = "rule"
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _FIELDS or (err["type"] == "extra_forbidden" and i == len(loc) - 1):
            path += f".{part}"
        # else: a union tag or a scalar member name, not something the author wrote
    if err["type"] == "min_above_max":
        path += ".min"
    message = err["msg"]
    if len(loc) > 0 and loc[-1] not in _FIELDS and not isinstance(loc[-1], int) and loc[-1] not in TAGS \
            and err["type"] != "extra_forbidden":
        message = "expected a JSON number, boolean or string"  # every member of the scalar union refused it
    if err["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
    return InvalidInput(message, field=path)


def check_rule(rule: Rule, catalogue: Catalogue = CATALOGUE) -> None:
    """Raise InvalidInput (field = path of the bad part) unless `rule` fits the catalogue and the limits:
    known features, values of the feature's type, category values in their vocabulary, windows on
    timestamps only, no window pair that nothing can satisfy, depth <= 8, nodes <= 200."""
    nodes = 0
    stack: list[tuple[Rule, str, int]] = [(rule, "rule", 1)]
    while stack:
        node, path, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise InvalidInput(f"rules nest at most {MAX_DEPTH} levels deep", field=path)
        if nodes > MAX_NODES:
            raise InvalidInput(f"a rule has at most {MAX_NODES} nodes", field=path)
        if isinstance(node, All):
            _check_windows(node, path)
            stack.extend((c, f"{path}.all[{i}]", depth + 1) for i, c in reversed(list(enumerate(node.all))))
        elif isinstance(node, AnyOf):
            stack.extend((c, f"{path}.any[{i}]", depth + 1) for i, c in reversed(list(enumerate(node.any))))
        elif isinstance(node, Not):
            stack.append((node.not_, f"{path}.not", depth + 1))
        else:
            _check_leaf(node, path, catalogue)


def _spec(node: Any, path: str, catalogue: Catalogue) -> FeatureSpec:
    spec = catalogue.get(node.feature)
    if spec is None:
        raise InvalidInput(f"unknown feature {node.feature!r}", field=f"{path}.feature")
    return spec


def _check_leaf(node: Any, path: str, catalogue: Catalogue) -> None:
    spec = _spec(node, path, catalogue)
    kind = spec.kind
    if isinstance(node, Cmp):
        if node.op not in ("eq", "ne") and kind not in _ORDERED_KINDS:
            raise InvalidInput(f"{node.op} needs an ordered feature; {spec.name} is {kind}: use eq or ne",
                               field=f"{path}.op")
        _value(spec, node.value, f"{path}.value")
    elif isinstance(node, Between):
        if kind not in _ORDERED_KINDS:
            raise InvalidInput(f"between needs an ordered feature; {spec.name} is {kind}", field=f"{path}.op")
        lo = _value(spec, node.min, f"{path}.min")
        hi = _value(spec, node.max, f"{path}.max")
        if lo > hi:
            raise InvalidInput("min must not be greater than max", field=f"{path}.min")
    elif isinstance(node, In):
        if kind not in _IN_KINDS:
            raise InvalidInput(f"in needs an integer, category or code feature; {spec.name} is {kind}",
                               field=f"{path}.op")
        for i, v in enumerate(node.values):
            _value(spec, v, f"{path}.values[{i}]")
    elif isinstance(node, Within | NotWithin) and kind != "timestamp":
        raise InvalidInput(f"a time window needs a timestamp feature; {spec.name} is {kind}",
                           field=f"{path}.feature")


def _value(spec: FeatureSpec, value: Any, path: str) -> Any:
    """The rule value in the form evaluation compares (minutes for timestamps), or InvalidInput."""
    kind = spec.kind
    ok: bool
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "bool":
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        got = "a boolean" if isinstance(value, bool) else "a string" if isinstance(value, str) else "a number"
        raise InvalidInput(f"{spec.name} is {kind}: expected {_KIND_WORD[kind]}, got {got}", field=path)
    if kind == "category" and value not in spec.vocabulary:
        raise InvalidInput(f"{value!r} is not a {spec.name}: one of {', '.join(spec.vocabulary)}", field=path)
    if kind == "timestamp":
        return epoch_minutes(_timestamp(value, path))
    if kind == "float":
        return float32(float(value))
    return value


def _timestamp(value: str, path: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not an RFC 3339 timestamp", field=path) from None
    if parsed.utcoffset() is None:
        raise InvalidInput("a timestamp needs a UTC offset (2026-03-01T00:00:00Z)", field=path)
    return to_minute(parsed)


def _check_windows(node: All, path: str) -> None:
    # within(a) and not_within(b) on one feature under one `all` need now - a <= t < now - b: empty if b >= a.
    within: dict[str, tuple[int, int]] = {}
    for i, child in enumerate(node.all):
        if isinstance(child, Within):
            m = child.last.minutes
            if child.feature not in within or m < within[child.feature][0]:
                within[child.feature] = (m, i)
    for i, child in enumerate(node.all):
        if isinstance(child, NotWithin) and child.feature in within:
            m, j = within[child.feature]
            if child.last.minutes >= m:
                raise InvalidInput(f"contradicts {path}.all[{j}] (within the last {m} minutes): nothing can match",
                                   field=f"{path}.all[{i}].last")


# ---------------------------------------------------------------------------- the feature matrix


def _storage_info(spec: FeatureSpec) -> tuple[np.dtype[Any], Any]:
    dtype = np.dtype(spec.dtype)
    return dtype, dtype.type(NULL_SENTINEL[spec.dtype])


class FeatureMatrix:
    """Columnar features of many players (see the module docstring for rows and nulls)."""

    def __init__(self, features: Sequence[FeatureSpec] = FEATURES, capacity: int = 1024) -> None:
        self.specs: dict[str, FeatureSpec] = {f.name: f for f in features}
        self._info = {name: _storage_info(spec) for name, spec in self.specs.items()}
        cap = max(1, capacity)
        self._cols: dict[str, np.ndarray[Any, Any]] = {
            name: np.full(cap, sentinel, dtype=dtype) for name, (dtype, sentinel) in self._info.items()}
        self._ids = np.zeros(cap, dtype="V16")  # row -> player id (UUID bytes), kept for dead rows
        self._live = np.zeros(cap, dtype=np.bool_)
        self._index: dict[int, int] = {}  # player id (UUID as int) -> row
        self._size = 0
        self._live_count = 0
        self._category_codes = {n: {v: i for i, v in enumerate(s.vocabulary)}
                                for n, s in self.specs.items() if s.kind == "category"}
        # Interned strings of each code feature: code -> string and back. Codes are never reused.
        self._strings: dict[str, list[str]] = {n: [] for n, s in self.specs.items() if s.kind == "code"}
        self._codes: dict[str, dict[str, int]] = {n: {} for n in self._strings}

    # -- shape

    @property
    def size(self) -> int:
        """Rows in use, dead ones included: the length of every mask."""
        return self._size

    def __len__(self) -> int:
        return self._live_count

    @property
    def capacity(self) -> int:
        return int(self._live.shape[0])

    def nbytes(self) -> int:
        """Bytes of the numpy arrays (at capacity): feature columns, row ids, liveness."""
        return sum(c.nbytes for c in self._cols.values()) + self._ids.nbytes + self._live.nbytes

    def index_nbytes(self) -> int:
        """An estimate of the player id -> row dict (Python objects): kept apart from nbytes()."""
        key = sys.getsizeof(uuid.UUID(int=2**127 + 1).int)
        return sys.getsizeof(self._index) + len(self._index) * key

    def column(self, name: str) -> np.ndarray[Any, Any]:
        """A read-only view of a column's rows in use."""
        view = self._cols[name][: self._size]
        view.flags.writeable = False
        return view

    @property
    def live(self) -> Mask:
        view = self._live[: self._size]
        view.flags.writeable = False
        return view

    def row_of(self, player_id: uuid.UUID) -> int | None:
        """The player's row, dead or alive; None if the matrix never held the player (or compacted it away)."""
        return self._index.get(player_id.int)

    def is_live(self, player_id: uuid.UUID) -> bool:
        row = self._index.get(player_id.int)
        return row is not None and bool(self._live[row])

    def player_ids(self, rows: Iterable[int] | Rows) -> list[uuid.UUID]:
        return [uuid.UUID(bytes=self._ids[int(r)].tobytes()) for r in rows]

    def code(self, feature: str, value: str) -> int | None:
        """The interned code of a code feature's value, None if no player ever had it."""
        return self._codes[feature].get(value)

    # -- writes

    def upsert(self, player_id: uuid.UUID, row: FeatureRow) -> int:
        """Set every feature of the player (absent values become null); returns the player's row."""
        encoded = [(name, self._encode(name, getattr(row, name))) for name in self.specs]
        r = self._row_for(player_id)
        for name, value in encoded:
            self._cols[name][r] = value
        return r

    def update(self, player_id: uuid.UUID, changes: Mapping[str, Any]) -> int:
        """Change some features of a live player (None nulls a feature); returns the player's row.
        Nothing is written unless every change is valid."""
        r = self._index.get(player_id.int)
        if r is None or not self._live[r]:
            raise NotFound(f"player {player_id} has no features", field="player_id")
        try:
            parsed = FeatureRow.model_validate(dict(changes))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidInput(err["msg"], field=".".join(["changes", *map(str, err["loc"])])) from None
        encoded = [(name, self._encode(name, getattr(parsed, name))) for name in parsed.model_fields_set
                   if name in self.specs]
        for name, value in encoded:
            self._cols[name][r] = value
        return r

    def delete(self, player_id: uuid.UUID) -> int | None:
        """Null the player's features and mark the row dead (kept for the player until compact())."""
        r = self._index.get(player_id.int)
        if r is None or not self._live[r]:
            return r
        for name, (_, sentinel) in self._info.items():
            self._cols[name][r] = sentinel
        self._live[r] = False
        self._live_count -= 1
        return r

    def get(self, player_id: uuid.UUID) -> FeatureRow:
        r = self._index.get(player_id.int)
        if r is None or not self._live[r]:
            raise NotFound(f"player {player_id} has no features", field="player_id")
        return FeatureRow.model_validate({name: self._decode(name, r) for name in self.specs})

    def compact(self) -> npt.NDArray[np.int64]:
        """Drop dead rows; returns old row -> new row (-1: dropped), for Membership.remap."""
        keep = np.flatnonzero(self._live[: self._size])
        mapping = np.full(self._size, -1, dtype=np.int64)
        mapping[keep] = np.arange(keep.size)
        n = int(keep.size)
        for name, col in self._cols.items():
            col[:n] = col[keep]
            col[n : self._size] = self._info[name][1]
        self._ids[:n] = self._ids[keep]
        self._live[:n] = True
        self._live[n : self._size] = False
        self._index = {uuid.UUID(bytes=self._ids[r].tobytes()).int: r for r in range(n)}
        self._size = n
        return mapping

    def bulk_load(self, player_ids: Sequence[uuid.UUID], columns: Mapping[str, Any]) -> None:
        """Append many new players at once (the initial load). Columns are arrays of len(player_ids):
        int/float/bool features in their storage dtype with the null sentinel already in place,
        timestamps as datetime64 (NaT: null), category/code features as strings (None: null).
        Absent features are null. Trusted input (the feature builder): ranges are not re-checked."""
        k = len(player_ids)
        unknown = set(columns) - set(self.specs)
        if unknown:
            raise InvalidInput(f"unknown features {sorted(unknown)}", field="columns")
        keys = [p.int for p in player_ids]
        if len(set(keys)) != k or any(key in self._index for key in keys):
            raise InvalidInput("bulk_load takes new, distinct players", field="player_ids")
        encoded: dict[str, np.ndarray[Any, Any]] = {}
        for name, values in columns.items():
            arr = np.asarray(values)
            if arr.shape != (k,):
                raise InvalidInput(f"expected {k} values", field=f"columns.{name}")
            encoded[name] = self._encode_column(name, arr)
        start = self._size
        self._grow(start + k, exact=True)
        for name, (_, sentinel) in self._info.items():
            col = self._cols[name]
            col[start:start + k] = encoded.get(name, sentinel)
        raw = np.frombuffer(b"".join(p.bytes for p in player_ids), dtype="V16")
        self._ids[start : start + k] = raw
        self._live[start : start + k] = True
        self._index.update(zip(keys, range(start, start + k), strict=True))
        self._size += k
        self._live_count += k

    # -- encoding

    def _row_for(self, player_id: uuid.UUID) -> int:
        key = player_id.int
        r = self._index.get(key)
        if r is None:
            r = self._size
            self._grow(r + 1)
            self._size += 1
            self._index[key] = r
            self._ids[r] = np.frombuffer(player_id.bytes, dtype="V16")[0]
        if not self._live[r]:
            self._live[r] = True
            self._live_count += 1
        return r

    def _grow(self, needed: int, exact: bool = False) -> None:
        # Doubling for players arriving one by one; a bulk load sizes the arrays exactly (doubling
        # from 1,024 to a million rows would leave 5% of them empty).
        cap = self.capacity
        if needed <= cap:
            return
        if exact:
            cap = needed
        while cap < needed:
            cap *= 2
        for name, col in self._cols.items():
            bigger = np.full(cap, self._info[name][1], dtype=col.dtype)
            bigger[: self._size] = col[: self._size]
            self._cols[name] = bigger
        ids = np.zeros(cap, dtype="V16")
        ids[: self._size] = self._ids[: self._size]
        self._ids = ids
        live = np.zeros(cap, dtype=np.bool_)
        live[: self._size] = self._live[: self._size]
        self._live = live

    def _intern(self, name: str, value: str) -> int:
        codes = self._codes[name]
        code = codes.get(value)
        if code is None:
            dtype, sentinel = self._info[name]
            code = len(codes)
            if code >= int(sentinel):
                raise InvalidInput(f"{name} has more than {int(sentinel)} distinct values (dtype {dtype})",
                                   field=f"features.{name}")
            codes[value] = code
            self._strings[name].append(value)
        return code

    def _encode(self, name: str, value: Any) -> Any:
        spec = self.specs[name]
        if value is None:
            return self._info[name][1]
        if spec.kind == "timestamp":
            return epoch_minutes(value)
        if spec.kind == "bool":
            return 1 if value else 0
        if spec.kind == "category":
            return self._category_codes[name][value]
        if spec.kind == "code":
            return self._intern(name, value)
        return value

    def _decode(self, name: str, r: int) -> Any:
        spec = self.specs[name]
        _dtype, sentinel = self._info[name]
        raw = self._cols[name][r]
        if spec.kind == "float":
            return None if np.isnan(raw) else float(raw)
        if raw == sentinel:
            return None
        value = int(raw)
        if spec.kind == "timestamp":
            return TIMESTAMP_MIN + timedelta(minutes=value)
        if spec.kind == "bool":
            return value == 1
        if spec.kind == "category":
            return spec.vocabulary[value]
        if spec.kind == "code":
            return self._strings[name][value]
        return value

    def _encode_column(self, name: str, arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        spec = self.specs[name]
        dtype, sentinel = self._info[name]
        if spec.kind == "timestamp":
            minutes = arr.astype("datetime64[m]")
            out = minutes.astype(np.int64)
            lo, hi = epoch_minutes(TIMESTAMP_MIN), epoch_minutes(TIMESTAMP_MAX)
            nat = np.isnat(minutes)
            if np.any(((out < lo) | (out >= hi)) & ~nat):
                raise InvalidInput(f"timestamps outside {TIMESTAMP_MIN.date()}..{TIMESTAMP_MAX.date()}",
                                   field=f"columns.{name}")
            out[nat] = sentinel
            return out.astype(dtype)
        if spec.kind in ("category", "code"):
            objs = arr.astype(object)
            nulls = np.frompyfunc(lambda v: v is None, 1, 1)(objs).astype(np.bool_)
            out = np.full(arr.shape[0], sentinel, dtype=dtype)
            strings, inverse = np.unique(objs[~nulls].astype(str), return_inverse=True)
            table = np.empty(strings.size, dtype=dtype)
            for i, s in enumerate(strings):
                if spec.kind == "category":
                    if s not in self._category_codes[name]:
                        raise InvalidInput(f"{s!r} is not a {name}", field=f"columns.{name}")
                    table[i] = self._category_codes[name][s]
                else:
                    table[i] = self._intern(name, str(s))
            out[~nulls] = table[inverse.reshape(-1)]
            return out
        return arr.astype(dtype, casting="same_kind")


# ---------------------------------------------------------------------------- vectorised evaluation


class _Frame:
    """Column access for one evaluation: all rows in use, or a subset (incremental membership)."""

    def __init__(self, matrix: FeatureMatrix, rows: Rows | None) -> None:
        self.matrix = matrix
        self.rows = rows
        self.n = matrix.size if rows is None else int(rows.size)

    def col(self, name: str) -> np.ndarray[Any, Any]:
        full = self.matrix._cols[name]
        return full[: self.matrix.size] if self.rows is None else full[self.rows]

    def none(self) -> Mask:
        return np.zeros(self.n, dtype=np.bool_)


def evaluate(rule: Rule, matrix: FeatureMatrix, now: datetime, rows: Rows | None = None) -> Mask:
    """Which rows match `rule` at `now`: a bool mask over `matrix.size` rows (dead rows never match),
    or over `rows` if given. The rule is checked first (InvalidInput as check_rule)."""
    check_rule(rule, matrix.specs)
    if now.utcoffset() is None:
        raise InvalidInput("now must be timezone-aware", field="now")
    frame = _Frame(matrix, rows)
    mask = _eval(rule, frame, epoch_minutes(now))
    live = matrix._live[: matrix.size] if rows is None else matrix._live[rows]
    np.logical_and(mask, live, out=mask)
    return mask


def count(mask: Mask) -> int:
    return int(np.count_nonzero(mask))


def sample(mask: Mask, n: int, seed: int) -> Rows:
    """Up to n matching rows chosen uniformly (reproducible with the seed), in row order."""
    rows = np.flatnonzero(mask)
    if rows.size <= n:
        return rows.astype(np.int64)
    picked = np.random.default_rng(seed).choice(rows, size=n, replace=False)
    return np.sort(picked).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Preview:
    count: int
    sample: list[uuid.UUID]


def preview(rule: Rule, matrix: FeatureMatrix, now: datetime, n: int = 20, seed: int = 0) -> Preview:
    mask = evaluate(rule, matrix, now)
    return Preview(count(mask), matrix.player_ids(sample(mask, n, seed)))


def _eval(node: Rule, frame: _Frame, now_min: int) -> Mask:
    if isinstance(node, All):
        acc = _eval(node.all[0], frame, now_min)
        for child in node.all[1:]:
            np.logical_and(acc, _eval(child, frame, now_min), out=acc)
        return acc
    if isinstance(node, AnyOf):
        acc = _eval(node.any[0], frame, now_min)
        for child in node.any[1:]:
            np.logical_or(acc, _eval(child, frame, now_min), out=acc)
        return acc
    if isinstance(node, Not):
        out = _eval(node.not_, frame, now_min)
        return np.logical_not(out, out=out)
    spec = frame.matrix.specs[node.feature]
    col = frame.col(spec.name)
    dtype, sentinel = frame.matrix._info[spec.name]
    if isinstance(node, IsNull):
        return cast(Mask, np.isnan(col) if spec.kind == "float" else col == sentinel)
    if isinstance(node, Within | NotWithin):
        cutoff = now_min - node.last.minutes
        m = col >= cutoff if isinstance(node, Within) else col < cutoff
        return _drop_nulls(m, col, sentinel, _OPS["ge" if isinstance(node, Within) else "lt"](int(sentinel), cutoff))
    if isinstance(node, Cmp):
        v = _stored(frame, spec, _value(spec, node.value, "rule"))
        if v is None:  # a code no player has: eq matches nobody, ne every non-null
            return frame.none() if node.op == "eq" else col != sentinel
        return _compare(col, node.op, v, dtype, sentinel)
    if isinstance(node, Between):
        lo = _stored(frame, spec, _value(spec, node.min, "rule"))
        hi = _stored(frame, spec, _value(spec, node.max, "rule"))
        return _between(col, lo, hi, dtype, sentinel)
    if isinstance(node, In):
        return _in(frame, spec, col, [_stored(frame, spec, _value(spec, v, "rule")) for v in node.values],
                   dtype, sentinel)
    raise AssertionError(f"unknown node {node!r}")


def _stored(frame: _Frame, spec: FeatureSpec, value: Any) -> Any:
    """A checked rule value as the column stores it (None: a code value never interned)."""
    if spec.kind == "bool":
        return 1 if value else 0
    if spec.kind == "category":
        return frame.matrix._category_codes[spec.name][value]
    if spec.kind == "code":
        return frame.matrix.code(spec.name, value)
    return value


def _drop_nulls(m: Mask, col: np.ndarray[Any, Any], sentinel: Any, sentinel_matches: Any) -> Mask:
    # Only when the predicate is true of the sentinel itself does it need the extra pass.
    if sentinel_matches:
        np.logical_and(m, ~np.isnan(col) if col.dtype.kind == "f" else col != sentinel, out=m)
    return m


def _compare(col: np.ndarray[Any, Any], op: str, v: Any, dtype: np.dtype[Any], sentinel: Any) -> Mask:
    if dtype.kind == "f":
        m = _OPS[op](col, dtype.type(v))
        return _drop_nulls(m, col, sentinel, op == "ne")
    info = np.iinfo(dtype)
    if v > info.max or v < info.min:  # every stored value lies on one side of v
        above = v > info.max
        if op == "ne" or (op in ("lt", "le") and above) or (op in ("gt", "ge") and not above):
            return np.asarray(col != sentinel)
        return np.zeros(col.shape[0], dtype=np.bool_)
    m = _OPS[op](col, dtype.type(v))
    return _drop_nulls(m, col, sentinel, _OPS[op](int(sentinel), v))


def _between(col: np.ndarray[Any, Any], lo: Any, hi: Any, dtype: np.dtype[Any], sentinel: Any) -> Mask:
    if dtype.kind == "f":
        m = col >= dtype.type(lo)
        np.logical_and(m, col <= dtype.type(hi), out=m)
        return cast(Mask, m)  # NaN fails both comparisons
    info = np.iinfo(dtype)
    lo, hi = max(lo, int(info.min)), min(hi, int(info.max))
    if lo > hi:
        return np.zeros(col.shape[0], dtype=np.bool_)
    m = col >= dtype.type(lo)
    np.logical_and(m, col <= dtype.type(hi), out=m)
    return _drop_nulls(m, col, sentinel, lo <= int(sentinel) <= hi)


def _in(frame: _Frame, spec: FeatureSpec, col: np.ndarray[Any, Any], values: list[Any], dtype: np.dtype[Any],
        sentinel: Any) -> Mask:
    info = np.iinfo(dtype)
    wanted = sorted({int(v) for v in values if v is not None and info.min <= v <= info.max and v != sentinel})
    if not wanted:
        return frame.none()
    if dtype.itemsize <= 2:
        # A lookup table over every possible code: one gather, whatever the list's length.
        table = np.zeros(1 << (8 * dtype.itemsize), dtype=np.bool_)
        table[np.asarray(wanted, dtype=np.int64) - int(info.min)] = True
        found: Any = table[col] if info.min == 0 else table[col.astype(np.int64) - int(info.min)]
        return cast(Mask, found)
    return np.isin(col, np.asarray(wanted, dtype=dtype))


# ---------------------------------------------------------------------------- reference evaluator


def reference_evaluate(rule: Rule, row: FeatureRow, now: datetime) -> bool:
    """The rule on one player, in plain Python over FeatureRow values (no numpy, no storage codes)."""
    if isinstance(rule, All):
        return all(reference_evaluate(c, row, now) for c in rule.all)
    if isinstance(rule, AnyOf):
        return any(reference_evaluate(c, row, now) for c in rule.any)
    if isinstance(rule, Not):
        return not reference_evaluate(rule.not_, row, now)
    value = getattr(row, rule.feature)
    if isinstance(rule, IsNull):
        return value is None
    if value is None:
        return False
    spec = CATALOGUE[rule.feature]
    if isinstance(rule, Within):
        return bool(value >= to_minute(now) - timedelta(minutes=rule.last.minutes))
    if isinstance(rule, NotWithin):
        return bool(value < to_minute(now) - timedelta(minutes=rule.last.minutes))
    if isinstance(rule, Cmp):
        return bool(_OPS[rule.op](value, _ref_value(spec, rule.value)))
    if isinstance(rule, Between):
        return bool(_ref_value(spec, rule.min) <= value <= _ref_value(spec, rule.max))
    if isinstance(rule, In):
        return value in {_ref_value(spec, v) for v in rule.values}
    raise AssertionError(f"unknown node {rule!r}")


def _ref_value(spec: FeatureSpec, value: Any) -> Any:
    if spec.kind == "timestamp":
        return to_minute(datetime.fromisoformat(value))
    if spec.kind == "float":
        return float32(float(value))
    return value


# ---------------------------------------------------------------------------- incremental membership


class Membership:
    """A segment's members, kept up to date by evaluating only the rows that changed.

    Time windows move with the clock even when no feature changes: `apply` evaluates the changed
    rows at the `now` it is given, and `refresh(now)` (a full evaluation) brings every row to a new
    `now`; run it on a schedule (e.g. every minute) for rules with windows.
    """

    def __init__(self, rule: Rule, matrix: FeatureMatrix, now: datetime) -> None:
        check_rule(rule, matrix.specs)
        self.rule = rule
        self.matrix = matrix
        self._member = evaluate(rule, matrix, now)

    @property
    def mask(self) -> Mask:
        self._fit()
        return self._member

    def count(self) -> int:
        return count(self._member)

    def apply(self, player_ids: Iterable[uuid.UUID], now: datetime) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        """(entered, exited) among the players whose features changed (upserted, updated or deleted)."""
        rows = [r for r in map(self.matrix.row_of, player_ids) if r is not None]
        return self.apply_rows(np.asarray(rows, dtype=np.int64), now)

    def apply_rows(self, rows: Rows, now: datetime) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        self._fit()
        rows = np.unique(rows)
        if rows.size == 0:
            return [], []
        new = evaluate(self.rule, self.matrix, now, rows)
        old = self._member[rows]
        self._member[rows] = new
        return (self.matrix.player_ids(rows[new & ~old]), self.matrix.player_ids(rows[old & ~new]))

    def refresh(self, now: datetime) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        """Re-evaluate every row at `now`; (entered, exited)."""
        self._fit()
        new = evaluate(self.rule, self.matrix, now)
        old = self._member
        entered, exited = np.flatnonzero(new & ~old), np.flatnonzero(old & ~new)
        self._member = new
        return self.matrix.player_ids(entered), self.matrix.player_ids(exited)

    def remap(self, mapping: npt.NDArray[np.int64]) -> None:
        """Follow FeatureMatrix.compact(): mapping is old row -> new row (-1: dropped). Apply the
        changes made before the compaction first: a deleted member's exit is reported by apply()."""
        old = np.zeros(mapping.size, dtype=np.bool_)
        n = min(mapping.size, self._member.size)
        old[:n] = self._member[:n]
        kept = mapping >= 0
        member = np.zeros(self.matrix.size, dtype=np.bool_)
        member[mapping[kept]] = old[kept]
        self._member = member

    def _fit(self) -> None:
        # Rows appended since the last call start outside the segment: apply() brings them in.
        n = self.matrix.size
        if self._member.size < n:
            grown = np.zeros(n, dtype=np.bool_)
            grown[: self._member.size] = self._member
            self._member = grown
