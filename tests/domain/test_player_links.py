"""Linking tickets to players: the email normal form, who an address names, the DMARC policy, the link rule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import Conflict, InvalidInput
from domain.player_links import link_player, normalize_email, sender_may_be_linked, verified_player
from domain.tickets import Ticket
from schemas.email import normalize_address

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
P1, P2, P3 = (uuid.UUID(int=i) for i in (1, 2, 3))

local_part = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-", min_size=1,
                     max_size=20).filter(lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s)
label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
domain_name = st.lists(label, min_size=1, max_size=3).map(lambda labels: ".".join([*labels, "com"]))
addresses = st.builds(lambda lp, d: f"{lp}@{d}", local_part, domain_name)


@given(addresses, st.sampled_from(["", " ", "\t", "  \n"]), st.booleans(), st.booleans())
def test_an_address_typed_in_any_case_with_spaces_or_a_final_dot_has_one_normal_form(
        address: str, pad: str, upper: bool, dot: bool) -> None:
    typed = address.upper() if upper else address
    typed = pad + typed + ("." if dot else "") + pad
    assert normalize_email(typed) == normalize_email(address) == address.lower()


@given(addresses)
def test_the_normal_form_is_stable_and_agrees_with_the_mail_parser(address: str) -> None:
    once = normalize_email(address)
    assert once is not None and normalize_email(once) == once
    # The gateway's From address is already the mail parser's canonical form: both meet in one key.
    assert normalize_email(normalize_address(address)) == once


def test_an_international_domain_is_kept_in_its_idna_form() -> None:
    assert normalize_email("Jörg@Bücher.DE") == "jörg@xn--bcher-kva.de"
    assert normalize_email("jörg@xn--bcher-kva.de") == "jörg@xn--bcher-kva.de"


@pytest.mark.parametrize("value", [None, "", "   ", "no-at-sign", "@example.com", "player@", "a b@example.com",
                                   "player@exa mple.com", "player@.", "player@a..com"])
def test_what_is_not_one_address_has_no_normal_form(value: str | None) -> None:
    assert normalize_email(value) is None


def test_the_one_player_whose_live_profile_has_the_address_is_named() -> None:
    live = {P1: ("demo", "Maria@Example.com"), P2: ("demo", "someone.else@example.com")}
    assert verified_player("demo", "maria@example.com", live) == P1


def test_a_stale_index_row_names_nobody() -> None:
    assert verified_player("demo", "old@example.com", {P1: ("demo", "new@example.com")}) is None
    assert verified_player("demo", "old@example.com", {P1: ("demo", None)}) is None


def test_a_player_of_another_brand_is_never_named() -> None:
    assert verified_player("demo", "maria@example.com", {P1: ("other", "maria@example.com")}) is None


@given(st.lists(st.sampled_from([("demo", "m@example.com"), ("demo", "x@example.com"), ("other", "m@example.com"),
                                 ("demo", " M@EXAMPLE.COM ")]), max_size=6))
def test_an_address_names_a_player_only_when_exactly_one_live_profile_matches(
        profiles: list[tuple[str, str]]) -> None:
    live = {uuid.UUID(int=i + 1): p for i, p in enumerate(profiles)}
    matching = [pid for pid, (b, e) in live.items() if b == "demo" and e.strip().lower() == "m@example.com"]
    assert verified_player("demo", "M@example.com", live) == (matching[0] if len(matching) == 1 else None)


@pytest.mark.parametrize(("policy", "dmarc", "linked"), [
    ("dmarc_pass", "pass", True), ("dmarc_pass", None, False), ("dmarc_pass", "none", False),
    ("dmarc_pass", "fail", False), ("unless_dmarc_fail", None, True), ("unless_dmarc_fail", "none", True),
    ("unless_dmarc_fail", "pass", True), ("unless_dmarc_fail", "fail", False), ("off", "pass", False),
])
def test_the_from_address_is_trusted_only_as_the_policy_says(policy: str, dmarc: str | None, linked: bool) -> None:
    assert sender_may_be_linked(policy, dmarc) is linked


def ticket(player_id: uuid.UUID | None = None, version: int = 3, status: str = "open") -> Ticket:
    return Ticket(ticket_id=uuid.uuid4(), player_id=player_id, brand="demo", channel="email", category="general",
                  priority="p3", status=status, subject="Hello", language="en", created_at=T0,  # type: ignore[arg-type]
                  updated_at=T0 + timedelta(minutes=5), version=version, sender_email="maria@example.com")


def test_linking_sets_the_player_and_bumps_the_version() -> None:
    before = ticket()
    after = link_player(before, P1, "demo", 3, T0 + timedelta(hours=1, microseconds=1234))
    assert (after.player_id, after.version) == (P1, 4)
    assert after.updated_at == T0 + timedelta(hours=1, microseconds=1000)
    assert (after.status, after.messages, after.sender_email) == (before.status, before.messages, before.sender_email)


def test_linking_the_same_player_again_is_a_retry_whatever_the_version() -> None:
    linked = ticket(P1, version=4)
    assert link_player(linked, P1, "demo", 3, T0) is linked


def test_a_ticket_of_another_player_is_not_moved() -> None:
    with pytest.raises(Conflict) as err:
        link_player(ticket(P2), P1, "demo", 3, T0)
    assert err.value.field == "player_id"


def test_a_stale_version_is_refused() -> None:
    with pytest.raises(Conflict) as err:
        link_player(ticket(), P1, "demo", 2, T0)
    assert err.value.field == "version"


def test_a_player_of_another_brand_is_invalid() -> None:
    with pytest.raises(InvalidInput) as err:
        link_player(ticket(), P1, "other", 3, T0)
    assert err.value.field == "player_id"


def test_a_closed_ticket_may_still_be_linked() -> None:
    assert link_player(ticket(status="closed"), P3, "demo", 3, T0).player_id == P3


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(InvalidInput):
        link_player(ticket(), P1, "demo", 3, datetime(2025, 3, 1, 9, 0))
