"""Reply templates (macros): placeholder syntax, checks at save time, rendering. Pure: no IO.

Syntax: `{{name}}` or `{{name|fallback}}`, spaces allowed inside the braces
(`{{ player.first_name | there }}`). Names are the keys of `PLACEHOLDERS`; an unknown name is
refused when the template is saved (InvalidInput naming it, field "body"), as is a `{{` that is
never closed. `{{{{` stands for a literal `{{` (and `}}}}` for `}}`).

Rendering is one left-to-right substitution pass over the template: values are inserted as
text and never scanned again, so a player whose name is "{{agent.name}}" gets exactly that
text, and nothing is ever evaluated. A missing value (None or blank) is replaced by the
placeholder's inline fallback, else by its default fallback (empty unless `DEFAULT_FALLBACK`
says otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.errors import InvalidInput

PLACEHOLDERS: Mapping[str, str] = {
    "player.first_name": "the player's first name (personal data)",
    "player.last_name": "the player's last name (personal data)",
    "player.tier": "the player's tier: VIP when a VIP manager is assigned, otherwise Standard",
    "player.last_deposit": "the player's last deposit, e.g. 25.00 EUR (amount from the player's record)",
    "player.last_deposit_date": "the UTC date of the player's last deposit, e.g. 2024-05-17",
    "player.currency": "the player's account currency, e.g. EUR",
    "player.brand": "the player's brand",
    "ticket.short_id": "the first 8 characters of the ticket id",
    "ticket.subject": "the ticket's subject",
    "ticket.status": "the ticket's status",
    "ticket.priority": "the ticket's priority",
    "agent.name": "the applying agent's name",
}
# Placeholders whose value is personal data: left out unless the agent may read it.
PII: frozenset[str] = frozenset({"player.first_name", "player.last_name"})
DEFAULT_FALLBACK: Mapping[str, str] = {"player.tier": "Standard"}
FALLBACK_MAX = 100

_TOKEN = re.compile(r"\{\{\{\{|\}\}\}\}|\{\{(?P<inner>[^{}]*)\}\}|\{\{")
_NAME = re.compile(r"^[a-z][a-z_]*\.[a-z][a-z_]*$")

# ISO 4217 minor-unit exponents that differ from 2 (others: 2).
_EXPONENT: Mapping[str, int] = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0, "RWF": 0,
    "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    fallback: str | None
    start: int
    end: int


def _parse(body: str) -> list[Placeholder | str]:
    """The template as literal text pieces and placeholders, in order."""
    out: list[Placeholder | str] = []
    pos = 0
    for m in _TOKEN.finditer(body):
        if m.start() > pos:
            out.append(body[pos:m.start()])
        token = m.group(0)
        if token == "{{{{":
            out.append("{{")
        elif token == "}}}}":
            out.append("}}")
        elif m.group("inner") is None:
            raise InvalidInput(f"body: '{{{{' at character {m.start()} is never closed with '}}}}' "
                               "(write '{{{{' for a literal '{{')", field="body")
        else:
            name, bar, fallback = m.group("inner").partition("|")
            name = name.strip()
            if name not in PLACEHOLDERS:
                known = ", ".join(PLACEHOLDERS)
                shown = name if _NAME.match(name) else repr(name[:60])
                raise InvalidInput(f"body: unknown placeholder {shown} (known: {known})", field="body")
            fb = fallback.strip() if bar else None
            if fb is not None and len(fb) > FALLBACK_MAX:
                raise InvalidInput(f"body: the fallback of {name} is longer than {FALLBACK_MAX} characters",
                                   field="body")
            out.append(Placeholder(name, fb, m.start(), m.end()))
        pos = m.end()
    if pos < len(body):
        out.append(body[pos:])
    return out


def check(body: str) -> list[str]:
    """The placeholders a template uses, in order of first use; InvalidInput naming an unknown one."""
    return list(dict.fromkeys(p.name for p in _parse(body) if isinstance(p, Placeholder)))


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    missing: tuple[str, ...]  # placeholders without a value (their fallback was used)
    masked: tuple[str, ...]  # personal-data placeholders the agent may not read (fallback used)


def render(body: str, values: Mapping[str, str | None], *, pii_allowed: bool = True) -> Rendered:
    """Fill the placeholders in one pass; values are text and are never interpreted."""
    parts: list[str] = []
    missing: dict[str, None] = {}
    masked: dict[str, None] = {}
    for piece in _parse(body):
        if isinstance(piece, str):
            parts.append(piece)
            continue
        value = values.get(piece.name)
        if piece.name in PII and not pii_allowed:
            masked[piece.name] = None
            value = None
        elif value is None or not value.strip():
            missing[piece.name] = None
        if value is None or not value.strip():
            value = piece.fallback if piece.fallback is not None else DEFAULT_FALLBACK.get(piece.name, "")
        parts.append(value)
    return Rendered("".join(parts), tuple(missing), tuple(masked))


def format_money(minor: int, currency: str) -> str:
    """Integer minor units as text with the currency's exponent: 123456, "EUR" -> "1,234.56 EUR"."""
    exp = _EXPONENT.get(currency.upper(), 2)
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 10**exp)
    text = f"{units:,}" + (f".{cents:0{exp}d}" if exp else "")
    return f"{sign}{text} {currency.upper()}"


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def values_for(player: Mapping[str, Any] | None, ticket: Mapping[str, Any], agent_name: str | None,
               vip_manager: str | None = None) -> dict[str, str | None]:
    """Placeholder values from a player's view (as the player actor answers it), a ticket's public
    fields and the agent. The last deposit's amount is read from `lifetime.last_deposit_minor`
    when the player's record carries it; otherwise the placeholder is missing (never guessed)."""
    p = player or {}
    profile = p.get("profile") or {}
    lifetime = p.get("lifetime") or {}
    currency = _text(profile.get("currency"))
    last_minor = lifetime.get("last_deposit_minor")
    last_at = lifetime.get("last_deposit_at")
    last_date: str | None = None
    if isinstance(last_at, datetime):
        last_date = last_at.date().isoformat()
    elif isinstance(last_at, str) and len(last_at) >= 10:
        last_date = last_at[:10]
    tier = _text(p.get("tier")) or ("VIP" if vip_manager else ("Standard" if player else None))
    ticket_id = str(ticket.get("ticket_id") or "")
    return {
        "player.first_name": _text(profile.get("first_name")),
        "player.last_name": _text(profile.get("last_name")),
        "player.tier": tier,
        "player.last_deposit": (format_money(last_minor, currency)
                                if isinstance(last_minor, int) and not isinstance(last_minor, bool) and currency
                                else None),
        "player.last_deposit_date": last_date,
        "player.currency": currency,
        "player.brand": _text(p.get("brand")),
        "ticket.short_id": ticket_id[:8] or None,
        "ticket.subject": _text(ticket.get("subject")),
        "ticket.status": _text(ticket.get("status")),
        "ticket.priority": _text(ticket.get("priority")),
        "agent.name": _text(agent_name),
    }
