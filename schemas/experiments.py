"""A/B experiments as data: variants with integer weights, a holdout share in basis points, and
the assignment a player receives. The rules that use them are in `domain.ab`.

Decisions fixed here:

- The holdout share is an integer number of basis points (0-5000, i.e. 0-50 %), never a float, so
  the share of the bucket space it covers is exact (`holdout_bp` buckets of 10,000).
- Weights are positive integers; a variant's share of the non-holdout space is weight / sum of
  weights, rounded to whole buckets. Every variant must receive at least one bucket, so a weight
  too small to be represented is refused rather than silently never assigned.
- "holdout" is reserved: it is what an assignment says for the control group kept out of campaigns.
- Validation errors name the field (`variants`, `variants.1.weight`, `holdout_bp`, `ends_at`...).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.common import AwareDatetime

BUCKETS = 10_000  # the bucket space: one bucket is one basis point
MAX_HOLDOUT_BP = 5_000  # at most half of the players may be held out
HOLDOUT = "holdout"
MAX_WEIGHT = 1_000_000

Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Model):
    name: Slug
    weight: Annotated[StrictInt, Field(gt=0, le=MAX_WEIGHT)]

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == HOLDOUT:
            raise ValueError(f"'{HOLDOUT}' is reserved for the control group; choose another variant name")
        return value


def variant_bounds(weights: list[int], holdout_bp: int) -> list[int]:
    """Cumulative bucket bounds: variant i owns buckets [bounds[i], bounds[i+1]); bounds[0] = holdout_bp.

    Integer arithmetic only (floor of the cumulative share), so the bounds are the same on every
    machine and every language that re-implements them.
    """
    rest = BUCKETS - holdout_bp
    total = sum(weights)
    bounds = [holdout_bp]
    running = 0
    for w in weights:
        running += w
        bounds.append(holdout_bp + rest * running // total)
    return bounds


class Experiment(_Model):
    experiment_key: Slug
    # Before `variants`: the variants' validator needs it to check that each variant gets a bucket.
    holdout_bp: Annotated[StrictInt, Field(ge=0, le=MAX_HOLDOUT_BP)] = 0
    variants: Annotated[list[Variant], Field(min_length=2, max_length=20)]
    # Changing the salt reshuffles every player: a fresh experiment under the same key.
    salt: Annotated[StrictStr, Field(max_length=128)] | None = None
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None

    @field_validator("variants")
    @classmethod
    def _unique_names_and_representable(cls, value: list[Variant], info: ValidationInfo) -> list[Variant]:
        seen: set[str] = set()
        for v in value:
            if v.name in seen:
                raise ValueError(f"duplicate variant name '{v.name}'")
            seen.add(v.name)
        holdout_bp = info.data.get("holdout_bp")
        if isinstance(holdout_bp, int):  # absent when holdout_bp itself was refused
            bounds = variant_bounds([v.weight for v in value], holdout_bp)
            for i, v in enumerate(value):
                if bounds[i + 1] == bounds[i]:
                    raise ValueError(f"weight {v.weight} of variant '{v.name}' is below one bucket "
                                     f"(1/{BUCKETS - holdout_bp} of the non-holdout players)")
        return value

    @field_validator("ends_at")
    @classmethod
    def _after_start(cls, value: AwareDatetime | None, info: ValidationInfo) -> AwareDatetime | None:
        start = info.data.get("starts_at")
        if value is not None and start is not None and value <= start:
            raise ValueError("ends_at must be later than starts_at")
        return value

    @property
    def weights(self) -> list[int]:
        return [v.weight for v in self.variants]

    @property
    def bounds(self) -> list[int]:
        return variant_bounds(self.weights, self.holdout_bp)


class Assignment(_Model):
    """What a player receives in one experiment. `variant` is "holdout" exactly when `in_holdout`."""

    experiment_key: Slug
    variant: str
    bucket: Annotated[StrictInt, Field(ge=0, lt=BUCKETS)]
    in_holdout: StrictBool

    @model_validator(mode="after")
    def _holdout_consistent(self) -> Assignment:
        if self.in_holdout != (self.variant == HOLDOUT):
            raise ValueError("variant: 'holdout' exactly when in_holdout is true")
        return self

