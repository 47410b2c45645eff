"""Bodies and answers of the segmentation API (`/segments/v1`).

A segment's `rule` arrives as plain JSON (`dict`) on purpose: the service checks it with
`domain.segments.parse_rule`, whose errors name the part of the rule (`rule.all[2].value`), which
a pydantic error on a nested union could not do as precisely. Nothing is stored before that check.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from schemas.common import AwareDatetime, Brand
from schemas.experiments import Experiment, Variant

SegmentName = Annotated[str, Field(min_length=1, max_length=120)]
Description = Annotated[str, Field(max_length=2000)]
SegmentStatus = str  # "active" | "retired"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegmentCreate(_Body):
    segment_id: UUID = Field(description="Chosen by the caller: a retry with the same id returns the first answer.")
    brand: Brand
    name: SegmentName
    description: Description = ""
    rule: dict[str, Any] = Field(description="The JSON rule tree (see the README's segment rules).")


class SegmentUpdate(_Body):
    version: StrictInt = Field(ge=1, description="The version the change is based on; 409 if it is no longer current.")
    name: SegmentName | None = None
    description: Description | None = None
    rule: dict[str, Any] | None = Field(default=None, description="A new rule: the segment's version goes up by one.")


class SegmentPublic(BaseModel):
    segment_id: UUID
    brand: str
    name: str
    description: str
    rule: dict[str, Any]
    version: int
    status: str
    count: int | None = Field(description="Members now, per the region's engine (else the last stored count).")
    created_by_name: str | None
    created_at: datetime
    updated_by_name: str | None
    updated_at: datetime | None


class SegmentPage(BaseModel):
    items: list[SegmentPublic]
    next_cursor: str | None


class PreviewRequest(_Body):
    rule: dict[str, Any]
    brand: Brand | None = Field(default=None, description="Show the sample's players of this brand (none if absent).")
    sample: Annotated[StrictInt, Field(ge=0, le=100)] = 20
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] = 0


class MemberRow(BaseModel):
    """A member as an operator sees it: features from the engine, personal data masked by role."""

    player_id: UUID
    brand: str | None = None
    features: dict[str, Any] = Field(default_factory=dict)
    profile: dict[str, Any] = Field(default_factory=dict)
    masked_fields: list[str] = Field(default_factory=list)


class PreviewPublic(BaseModel):
    count: int
    total: int
    sample: list[MemberRow]
    evaluated_ms: float


class MembersPage(BaseModel):
    segment_id: UUID
    items: list[MemberRow]
    next_cursor: str | None


class SizePoint(BaseModel):
    at: datetime
    count: int


class SizeHistory(BaseModel):
    segment_id: UUID
    points: list[SizePoint]


class FeaturePublic(BaseModel):
    name: str
    kind: str
    unit: str
    description: str
    vocabulary: list[str]
    ops: list[str]


# --- experiments -------------------------------------------------------------------------


class ExperimentCreate(Experiment):
    """An experiment on a segment; validated by `schemas.experiments.Experiment` (weights,
    holdout in basis points, window). The key is the idempotency key."""

    segment_id: UUID


class ExperimentUpdate(_Body):
    version: StrictInt = Field(ge=1)
    variants: Annotated[list[Variant], Field(min_length=2, max_length=20)] | None = None
    holdout_bp: StrictInt | None = None
    ends_at: AwareDatetime | None = None


class ExperimentPublic(BaseModel):
    experiment_key: str
    segment_id: UUID
    brand: str
    variants: list[Variant]
    holdout_bp: int
    starts_at: datetime
    ends_at: datetime | None
    version: int
    running: bool
    created_by_name: str | None
    created_at: datetime


class ExperimentPage(BaseModel):
    items: list[ExperimentPublic]
    next_cursor: str | None


class AssignmentPublic(BaseModel):
    experiment_key: str
    player_id: UUID
    variant: str
    bucket: int
    in_holdout: bool = Field(description="True for the control group: campaigns must leave this player out.")
    assigned_at: datetime
    first: bool = Field(description="True when this call made the assignment; later calls return it unchanged.")


class SplitPublic(BaseModel):
    experiment_key: str
    segment_id: UUID
    members: int
    holdout: int
    counts: dict[str, int]
    expected_share: dict[str, float] = Field(description="Each group's share of the bucket space (holdout included).")
