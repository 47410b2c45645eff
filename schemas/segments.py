"""CRM segment rules: a JSON rule tree, validated as data and never evaluated as code.

A node is one of

    {"all": [node, ...]}                                   every child matches (1..50 children)
    {"any": [node, ...]}                                   at least one child matches
    {"not": node}                                          the complement
    {"feature": f, "op": "eq|ne|lt|le|gt|ge", "value": v}  a comparison
    {"feature": f, "op": "between", "min": a, "max": b}    a <= value <= b (inclusive)
    {"feature": f, "op": "in", "values": [v, ...]}         one of 1..1,000 values
    {"feature": f, "op": "within", "last": {"days": n}}    a timestamp in the last n days (or "hours")
    {"feature": f, "op": "not_within", "last": {...}}      a timestamp older than that (not null)
    {"feature": f, "op": "is_null"}                        the value is missing

The shape is checked here (pydantic, extra keys refused). What needs the feature catalogue (is the
feature known, does the value's type fit it, is a category value in its vocabulary) and the tree
limits (depth, node count) are checked by `domain.segments.check_rule`, which `parse_rule` calls;
both raise `InvalidInput` naming the offending part as `rule.all[2].value`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_DEPTH = 8
MAX_NODES = 200
MAX_CHILDREN = 50
MAX_IN_VALUES = 1_000
MAX_WINDOW_DAYS = 3_660
MAX_WINDOW_HOURS = MAX_WINDOW_DAYS * 24

# A rule value: JSON scalars only. Timestamps are RFC 3339 strings ("2026-03-01T00:00:00Z"),
# checked against the feature's kind by check_rule. Strict, so "5" never becomes 5 nor true 1.
Scalar = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=64)]
CmpOp = Literal["eq", "ne", "lt", "le", "gt", "ge"]
FeatureName = Annotated[StrictStr, Field(min_length=1, max_length=64)]


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Window(_Node):
    """A look-back window ending now: exactly one of days or hours."""

    days: StrictInt | None = Field(default=None, ge=1, le=MAX_WINDOW_DAYS)
    hours: StrictInt | None = Field(default=None, ge=1, le=MAX_WINDOW_HOURS)

    @model_validator(mode="after")
    def _one_unit(self) -> Window:
        if (self.days is None) == (self.hours is None):
            raise ValueError("a window has exactly one of days or hours")
        return self

    @property
    def minutes(self) -> int:
        return (self.days or 0) * 1440 + (self.hours or 0) * 60


class All(_Node):
    all: list[Rule] = Field(min_length=1, max_length=MAX_CHILDREN)


class AnyOf(_Node):
    any: list[Rule] = Field(min_length=1, max_length=MAX_CHILDREN)


class Not(_Node):
    not_: Rule = Field(alias="not")


class Cmp(_Node):
    feature: FeatureName
    op: CmpOp
    value: Scalar


class Between(_Node):
    feature: FeatureName
    op: Literal["between"]
    min: Scalar
    max: Scalar

    @model_validator(mode="after")
    def _ordered(self) -> Between:
        lo, hi = self.min, self.max
        # Numbers are ordered here; timestamps (strings) once check_rule has parsed them.
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi))
        if numbers and lo > hi:  # type: ignore[operator]
            raise PydanticCustomError("min_above_max", "min must not be greater than max")
        return self


class In(_Node):
    feature: FeatureName
    op: Literal["in"]
    values: list[Scalar] = Field(min_length=1, max_length=MAX_IN_VALUES)


class Within(_Node):
    feature: FeatureName
    op: Literal["within"]
    last: Window


class NotWithin(_Node):
    feature: FeatureName
    op: Literal["not_within"]
    last: Window


class IsNull(_Node):
    feature: FeatureName
    op: Literal["is_null"]


Leaf = Cmp | Between | In | Within | NotWithin | IsNull

# Tags are capitalised so that they never collide with field names: domain.segments drops them from
# a validation error's location to name the field the author wrote.
_BY_OP = {**dict.fromkeys(("eq", "ne", "lt", "le", "gt", "ge"), "Cmp"), "between": "Between", "in": "In",
          "within": "Within", "not_within": "NotWithin", "is_null": "IsNull"}
TAGS = frozenset(("All", "Any", "Not", *_BY_OP.values()))
OPS = tuple(_BY_OP)


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key, tag in (("all", "All"), ("any", "Any"), ("not", "Not")):
            if key in value:
                return tag
        op = value.get("op")
        return _BY_OP.get(op) if isinstance(op, str) else None
    if isinstance(value, AnyOf):
        return "Any"
    return type(value).__name__ if isinstance(value, _Node) else None


Rule = Annotated[
    Annotated[All, Tag("All")]
    | Annotated[AnyOf, Tag("Any")]
    | Annotated[Not, Tag("Not")]
    | Annotated[Cmp, Tag("Cmp")]
    | Annotated[Between, Tag("Between")]
    | Annotated[In, Tag("In")]
    | Annotated[Within, Tag("Within")]
    | Annotated[NotWithin, Tag("NotWithin")]
    | Annotated[IsNull, Tag("IsNull")],
    Discriminator(
        _kind,
        custom_error_type="rule_node",
        custom_error_message=f"a rule node is {{all: [...]}}, {{any: [...]}}, {{not: ...}} or a condition with "
                             f"feature and op (one of {', '.join(OPS)})",
    ),
]

All.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


# mypy reads an Annotated union as a value here, not a type: the cast keeps one answer whatever its cache holds.
RULE: TypeAdapter[Rule] = TypeAdapter(cast(Any, Rule))
