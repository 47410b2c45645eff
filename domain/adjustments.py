"""The rules of a manual payment adjustment, without IO (the clock is passed in).

    request ──► approved            the policy's decision did not ask for a second approver
       └──────► pending_approval ──► approved | rejected    by another operator, once

- The currency is the player's account currency: the wallet holds one.
- Only a pending adjustment is decided, and only once (the store makes that atomic too).
- The requester never decides their own: four eyes means two people. The policy's `not_self`
  says so first; this is the same rule where the state changes, so no path skips it.
- A retry of a request (same id) is the same request only if everything in it is the same.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from domain.errors import Conflict, Forbidden, InvalidInput
from schemas.adjustments import (
    PENDING,
    AdjustmentApproved,
    AdjustmentCreate,
    AdjustmentPublic,
)

AUTO_APPROVED_NOTE = "at or below the four-eyes threshold: approved with the request"


def request(
    data: AdjustmentCreate,
    *,
    player_id: UUID,
    brand: str,
    jurisdiction: str | None,
    player_currency: str,
    requested_by: str,
    requested_by_name: str,
    needs_second_approver: bool,
    now: datetime,
) -> AdjustmentPublic:
    """The new adjustment: pending if the policy asked for a second approver, else approved by
    the request itself (decided by the requester, at the same instant)."""
    if data.currency != player_currency:
        raise InvalidInput(
            f"currency {data.currency} is not the player's account currency {player_currency}", field="currency"
        )
    approved = not needs_second_approver
    return AdjustmentPublic(
        adjustment_id=data.adjustment_id,
        player_id=player_id,
        brand=brand,
        jurisdiction=jurisdiction,
        amount_minor=data.amount_minor,
        currency=data.currency,
        reason=data.reason,
        case_ref=data.case_ref,
        status="approved" if approved else PENDING,
        needs_second_approver=needs_second_approver,
        requested_by=requested_by,
        requested_by_name=requested_by_name,
        requested_at=now,
        decided_by=requested_by if approved else None,
        decided_by_name=requested_by_name if approved else None,
        decided_at=now if approved else None,
        decision_note=AUTO_APPROVED_NOTE if approved else None,
    )


def same_request(existing: AdjustmentPublic, data: AdjustmentCreate, player_id: UUID, requested_by: str) -> bool:
    """Whether a request with an id already used is a retry of the first (else a conflict)."""
    return (
        existing.adjustment_id == data.adjustment_id
        and existing.player_id == player_id
        and existing.requested_by == requested_by
        and existing.amount_minor == data.amount_minor
        and existing.currency == data.currency
        and existing.reason == data.reason
        and existing.case_ref == data.case_ref
    )


def decide(
    adj: AdjustmentPublic, *, approve: bool, by: str, by_name: str, note: str | None, now: datetime
) -> AdjustmentPublic:
    """The adjustment after a second operator's decision."""
    if adj.status != PENDING:
        raise Conflict(f"the adjustment is already {adj.status}", field="status", extra={"current_status": adj.status})
    if by == adj.requested_by:
        raise Forbidden("the requester cannot decide their own adjustment (needs another operator)")
    return adj.model_copy(
        update={
            "status": "approved" if approve else "rejected",
            "decided_by": by,
            "decided_by_name": by_name,
            "decided_at": now,
            "decision_note": note or None,
        }
    )


def needs_publishing(adj: AdjustmentPublic) -> bool:
    return adj.status == "approved" and adj.published_at is None


def approved_payload(adj: AdjustmentPublic) -> AdjustmentApproved:
    if adj.status != "approved" or adj.decided_by is None:
        raise Conflict(f"the adjustment is {adj.status}, not approved", field="status")
    return AdjustmentApproved(
        adjustment_id=adj.adjustment_id,
        amount_minor=adj.amount_minor,
        currency=adj.currency,
        reason=adj.reason,
        case_ref=adj.case_ref,
        requested_by=adj.requested_by,
        approved_by=adj.decided_by,
    )
