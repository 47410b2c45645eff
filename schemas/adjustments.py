"""Manual payment adjustments: an operator's request to credit or debit a player's account
(a disputed deposit, a game fault), approved at once up to the policy's four-eyes threshold,
above it by a second operator. The casino platform's wallet applies an approved one from the
`payment.adjustment.approved` event."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from schemas.common import AwareDatetime, Brand, Currency

MAX_ADJUSTMENT_MINOR = 10**12  # ten billion in a two-decimal currency: anything larger is a typo
APPROVED_EVENT = "payment.adjustment.approved"

AdjustmentStatus = Literal["pending_approval", "approved", "rejected"]
PENDING: AdjustmentStatus = "pending_approval"


def _non_zero(value: int) -> int:
    if value == 0:
        raise ValueError("an adjustment of zero moves nothing: give a credit (> 0) or a debit (< 0)")
    return value


# Signed: a credit is positive, a debit negative. StrictInt refuses 10.5, "10" and true.
SignedAmount = Annotated[
    StrictInt, Field(ge=-MAX_ADJUSTMENT_MINOR, le=MAX_ADJUSTMENT_MINOR), AfterValidator(_non_zero)
]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
CaseRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]


class AdjustmentCreate(BaseModel):
    """A request. `adjustment_id` is chosen by the caller: sending the same request again
    (a retry after a timeout) returns the first one instead of adjusting twice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adjustment_id: UUID
    amount_minor: SignedAmount
    currency: Currency
    reason: Reason
    case_ref: CaseRef | None = None


class AdjustmentDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    note: Note | None = None


class AdjustmentPublic(BaseModel):
    """One adjustment as stored and shown. `requested_by` / `decided_by` are operator ids (the
    four-eyes rule compares them); the names are for people reading the page."""

    model_config = ConfigDict(frozen=True)

    adjustment_id: UUID
    player_id: UUID
    brand: Brand
    jurisdiction: str | None = None  # the player's country when requested (the queue's scope)
    amount_minor: int
    currency: str
    reason: str
    case_ref: str | None = None
    status: AdjustmentStatus
    needs_second_approver: bool
    requested_by: str
    requested_by_name: str
    requested_at: AwareDatetime
    decided_by: str | None = None
    decided_by_name: str | None = None
    decided_at: AwareDatetime | None = None
    decision_note: str | None = None
    published_at: AwareDatetime | None = None  # when the approved event was confirmed by the broker


class AdjustmentApproved(BaseModel):
    """Payload of the `payment.adjustment.approved` event (envelope `event_id` = adjustment id,
    so a consumer that sees it twice applies it once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adjustment_id: UUID
    amount_minor: int
    currency: str
    reason: str
    case_ref: str | None = None
    requested_by: str
    approved_by: str
