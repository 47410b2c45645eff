"""Reply templates: placeholder checks at save time, one-pass rendering, money formatting."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import macros
from domain.errors import InvalidInput

NAMES = sorted(macros.PLACEHOLDERS)


def test_check_lists_placeholders_in_order_of_first_use() -> None:
    body = "Hi {{player.first_name}}, ticket {{ ticket.short_id }} ({{player.first_name|there}}) - {{agent.name}}"
    assert macros.check(body) == ["player.first_name", "ticket.short_id", "agent.name"]


def test_unknown_placeholder_is_refused_naming_it() -> None:
    with pytest.raises(InvalidInput) as exc:
        macros.check("Hello {{player.nickname}}!")
    assert exc.value.field == "body"
    assert "player.nickname" in exc.value.detail


def test_unclosed_placeholder_is_refused() -> None:
    with pytest.raises(InvalidInput, match="never closed"):
        macros.check("Hello {{player.first_name")


def test_code_looking_placeholder_is_refused_not_evaluated() -> None:
    with pytest.raises(InvalidInput, match="unknown placeholder"):
        macros.check("{{ __import__('os').system('id') }}")


def test_escaped_braces_render_literally() -> None:
    assert macros.render("{{{{not a placeholder}}}}", {}).text == "{{not a placeholder}}"


def test_render_fills_values_and_fallbacks() -> None:
    values = {"player.first_name": "Maria", "ticket.short_id": "1234abcd", "agent.name": None}
    r = macros.render("Hi {{player.first_name}}, #{{ticket.short_id}} by {{agent.name|Support}} {{player.tier}}",
                      values)
    assert r.text == "Hi Maria, #1234abcd by Support Standard"
    assert r.missing == ("agent.name", "player.tier")


def test_personal_data_is_left_out_when_the_agent_may_not_read_it() -> None:
    r = macros.render("Hi {{player.first_name|there}} {{player.currency}}",
                      {"player.first_name": "Maria", "player.currency": "EUR"}, pii_allowed=False)
    assert r.text == "Hi there EUR"
    assert r.masked == ("player.first_name",)


@given(st.text(max_size=60))
def test_a_value_is_never_scanned_again(value: str) -> None:
    # A player named "{{agent.name}}" gets that text, never the agent's name.
    r = macros.render("[{{player.first_name}}]", {"player.first_name": value, "agent.name": "Zed"})
    expected = value if value.strip() else ""
    assert r.text == f"[{expected}]"


PLAIN = st.characters(blacklist_characters="{}")


@given(st.lists(st.one_of(st.sampled_from(NAMES).map(lambda n: ("p", n)),
                          st.text(alphabet=PLAIN, max_size=20).map(lambda t: ("t", t))), max_size=12),
       st.dictionaries(st.sampled_from(NAMES), st.text(alphabet=PLAIN, max_size=10)))
def test_render_matches_a_plain_substitution(parts: list[tuple[str, str]], values: dict[str, str]) -> None:
    body = "".join("{{" + v + "}}" if k == "p" else v for k, v in parts)
    expected = "".join(
        (values[v] if values.get(v, "").strip() else macros.DEFAULT_FALLBACK.get(v, "")) if k == "p" else v
        for k, v in parts
    )
    assert macros.render(body, dict(values)).text == expected
    assert macros.check(body) == list(dict.fromkeys(v for k, v in parts if k == "p"))


@pytest.mark.parametrize(("minor", "currency", "text"), [
    (123456, "EUR", "1,234.56 EUR"),
    (5, "eur", "0.05 EUR"),
    (1000, "JPY", "1,000 JPY"),
    (12345, "KWD", "12.345 KWD"),
    (-250, "GBP", "-2.50 GBP"),
    (0, "USD", "0.00 USD"),
])
def test_money_is_formatted_from_minor_units(minor: int, currency: str, text: str) -> None:
    assert macros.format_money(minor, currency) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_money_text_round_trips_to_the_minor_units(minor: int) -> None:
    text = macros.format_money(minor, "EUR")
    number = re.sub(r"[^0-9-]", "", text.split()[0])
    assert int(number) == minor


def test_values_come_from_the_player_view_ticket_and_agent() -> None:
    player = {
        "brand": "demo",
        "profile": {"first_name": "Maria", "last_name": "Borg", "currency": "EUR"},
        "lifetime": {"last_deposit_at": "2024-05-17T10:00:00+00:00", "last_deposit_minor": 2500},
    }
    ticket = {"ticket_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "subject": "Deposit", "status": "open",
              "priority": "P2"}
    v = macros.values_for(player, ticket, "alice", vip_manager="op-1")
    assert v["player.first_name"] == "Maria"
    assert v["player.last_deposit"] == "25.00 EUR"
    assert v["player.last_deposit_date"] == "2024-05-17"
    assert v["player.tier"] == "VIP"
    assert v["ticket.short_id"] == "0f8fad5b"
    assert v["agent.name"] == "alice"


def test_without_a_recorded_amount_the_last_deposit_is_missing_not_guessed() -> None:
    v = macros.values_for({"profile": {"currency": "EUR"}, "lifetime": {"last_deposit_at": None}}, {}, "a")
    assert v["player.last_deposit"] is None
    assert v["player.tier"] == "Standard"
    assert macros.values_for(None, {}, None)["player.tier"] is None
