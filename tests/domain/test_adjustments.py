"""The rules of manual adjustments: the state machine, four eyes, the account currency, what
counts as a retry, and the request body's limits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain import adjustments
from domain.errors import Conflict, Forbidden, InvalidInput
from schemas.adjustments import MAX_ADJUSTMENT_MINOR, AdjustmentCreate, AdjustmentPublic

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PLAYER = uuid.UUID("00000000-0000-4000-8000-000000000001")
REQUESTER, OTHER = "op-requester", "op-other"

amounts = st.integers(min_value=-MAX_ADJUSTMENT_MINOR, max_value=MAX_ADJUSTMENT_MINOR).filter(lambda a: a != 0)
operators = st.sampled_from([REQUESTER, OTHER, "op-third"])


def body(amount: int = 500, currency: str = "EUR", reason: str = "disputed deposit", **kw: object) -> AdjustmentCreate:
    return AdjustmentCreate.model_validate(
        {"adjustment_id": str(uuid.uuid4()), "amount_minor": amount, "currency": currency, "reason": reason, **kw}
    )


def requested(data: AdjustmentCreate, needs: bool, currency: str = "EUR") -> AdjustmentPublic:
    return adjustments.request(
        data,
        player_id=PLAYER,
        brand="demo",
        jurisdiction="MT",
        player_currency=currency,
        requested_by=REQUESTER,
        requested_by_name="requester",
        needs_second_approver=needs,
        now=NOW,
    )


@given(amounts, st.booleans())
def test_a_request_is_pending_exactly_when_the_policy_asks_for_a_second_approver(amount: int, needs: bool) -> None:
    adj = requested(body(amount), needs)
    assert adj.status == ("pending_approval" if needs else "approved")
    assert adj.needs_second_approver is needs
    assert adj.amount_minor == amount
    if needs:
        assert adj.decided_by is None and adj.decided_at is None
    else:
        assert adj.decided_by == REQUESTER and adj.decided_at == NOW
        assert adjustments.needs_publishing(adj)


@given(st.sampled_from(["USD", "GBP", "SEK", "JPY"]))
def test_a_currency_other_than_the_account_currency_is_refused(currency: str) -> None:
    with pytest.raises(InvalidInput) as err:
        requested(body(currency=currency), needs=False, currency="EUR")
    assert err.value.field == "currency"


@given(amounts, st.booleans(), operators, st.lists(st.tuples(operators, st.booleans()), min_size=1, max_size=4))
def test_only_a_pending_adjustment_is_decided_once_and_never_by_its_requester(
    amount: int, needs: bool, first: str, later: list[tuple[str, bool]]
) -> None:
    adj = requested(body(amount), needs)
    for who, approve in [(first, True), *later]:
        before = adj
        try:
            adj = adjustments.decide(adj, approve=approve, by=who, by_name=who, note=None, now=NOW + timedelta(1))
        except Conflict:
            assert before.status != "pending_approval"
            continue
        except Forbidden:
            assert who == REQUESTER and before.status == "pending_approval"
            continue
        assert before.status == "pending_approval" and who != REQUESTER
        assert adj.status == ("approved" if approve else "rejected")
        assert adj.decided_by == who
    decided = adj.status != "pending_approval"
    assert decided or all(w == REQUESTER for w, _ in [(first, True), *later])
    assert adj.decided_by != REQUESTER or not adj.needs_second_approver


@given(amounts)
def test_the_approved_event_names_both_operators_and_a_rejected_one_has_none(amount: int) -> None:
    pending = requested(body(amount, case_ref="CASE-1"), needs=True)
    approved = adjustments.decide(pending, approve=True, by=OTHER, by_name="other", note="ok", now=NOW)
    payload = adjustments.approved_payload(approved)
    assert (payload.requested_by, payload.approved_by) == (REQUESTER, OTHER)
    assert (payload.amount_minor, payload.case_ref, payload.adjustment_id) == (amount, "CASE-1", pending.adjustment_id)
    rejected = adjustments.decide(pending, approve=False, by=OTHER, by_name="other", note=None, now=NOW)
    assert not adjustments.needs_publishing(rejected)
    with pytest.raises(Conflict):
        adjustments.approved_payload(rejected)
    assert not adjustments.needs_publishing(approved.model_copy(update={"published_at": NOW}))


@given(amounts, st.sampled_from(["amount_minor", "reason", "case_ref", "currency", "player", "requester"]))
def test_a_retry_is_the_same_request_only_if_nothing_differs(amount: int, change: str) -> None:
    data = body(amount, case_ref="C-9")
    adj = requested(data, needs=True)
    assert adjustments.same_request(adj, data, PLAYER, REQUESTER)
    changed = {
        "amount_minor": data.model_copy(update={"amount_minor": amount + (1 if amount != -1 else 2)}),
        "reason": data.model_copy(update={"reason": data.reason + "!"}),
        "case_ref": data.model_copy(update={"case_ref": None}),
        "currency": data.model_copy(update={"currency": "USD"}),
    }
    player = uuid.uuid4() if change == "player" else PLAYER
    requester = OTHER if change == "requester" else REQUESTER
    assert not adjustments.same_request(adj, changed.get(change, data), player, requester)


@given(
    st.one_of(
        st.just(0),
        st.integers(min_value=MAX_ADJUSTMENT_MINOR + 1),
        st.integers(max_value=-MAX_ADJUSTMENT_MINOR - 1),
        st.floats(allow_nan=False),
        st.booleans(),
        st.text(max_size=5),
    )
)
def test_an_amount_that_is_zero_huge_fractional_or_not_a_number_is_refused(amount: object) -> None:
    with pytest.raises(ValidationError) as err:
        body(amount)  # type: ignore[arg-type]
    assert err.value.errors()[0]["loc"] == ("amount_minor",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reason", ""),
        ("reason", "   "),
        ("reason", "x" * 501),
        ("case_ref", "c" * 101),
        ("currency", "XXY"),
        ("extra", 1),
    ],
)
def test_a_body_outside_its_limits_is_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        body(**{field: value})  # type: ignore[arg-type]
    assert err.value.errors()[0]["loc"] == (field,)
