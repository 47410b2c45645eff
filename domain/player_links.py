"""Which player a help-desk ticket belongs to: the normal form of an email address, who an address
names, and the rule of an agent linking a ticket to a player. Pure: no IO, the clock is passed in.

- Normal form (`normalize_email`): surrounding whitespace stripped, lower-cased, the domain in IDNA
  (xn--) form without a trailing dot. The local part is folded too: RFC 5321 lets a host treat case
  as significant, but no mailbox provider players use does, and players type their address in any
  case on the casino's forms. Not an address (no `@`, an empty side, whitespace inside) -> None.
- Who an address names (`verified_player`): the (brand, email) index may hold stale rows (the player
  changed their address since), so a candidate counts only when their live profile, read now, still
  has that address and they are of the brand. Exactly one -> that player. None -> nobody. Several
  (two accounts share an address) -> nobody: an agent decides which account wrote.
- Trusting the From address (`sender_may_be_linked`): the gateway links a new email ticket only
  when the configured policy accepts the trusted MTA's DMARC verdict; by default only dmarc=pass
  (the From domain is authenticated), since anybody can write any From of a domain without DMARC.
- Linking (`link_player`): a ticket without a player gets one (version + 1); the same player again
  is a retry and changes nothing, whatever the version; another player is refused (Conflict on
  `player_id`: re-linking would move a conversation out of one player's history into another's, and
  is not offered); a stale version is refused (Conflict on `version`); a player of another brand than
  the ticket is invalid input on `player_id`. A closed ticket may be linked: the link changes neither
  the conversation, the status nor the SLA, and refusing it would keep an auto-closed email ticket out
  of its player's history forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

from domain.errors import Conflict, InvalidInput
from domain.tickets import Ticket


def normalize_email(value: str | None) -> str | None:
    """The index's form of an address, or None when `value` is not one address."""
    if value is None:
        return None
    text = value.strip().lower()
    local, at, domain = text.rpartition("@")
    domain = domain.rstrip(".")
    if not at or not local or not domain or any(c.isspace() for c in text):
        return None
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return f"{local}@{domain}"


def verified_player(brand: str, email: str, candidates: Mapping[UUID, tuple[str, str | None]]) -> UUID | None:
    """The one player the address names. `candidates`: the players the index lists for (brand, email),
    each with their live (brand, profile email); players that no longer exist are left out by the caller."""
    want = normalize_email(email)
    if want is None:
        return None
    found = [pid for pid, (b, e) in candidates.items() if b == brand and normalize_email(e) == want]
    return found[0] if len(found) == 1 else None


def link_player(ticket: Ticket, player_id: UUID, player_brand: str, version: int, now: datetime) -> Ticket:
    """The ticket linked to `player_id` (the same object when it already is: a retry)."""
    if ticket.player_id == player_id:
        return ticket
    if ticket.player_id is not None:
        raise Conflict(f"ticket {ticket.ticket_id} already belongs to player {ticket.player_id}", field="player_id")
    if player_brand != ticket.brand:
        raise InvalidInput(f"player {player_id} is a player of brand {player_brand}, the ticket is of brand "
                           f"{ticket.brand}", field="player_id")
    if version != ticket.version:
        raise Conflict(f"ticket {ticket.ticket_id} was changed by someone else (version {ticket.version}, expected "
                       f"{version}): reload it", field="version")
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput("the clock must be timezone-aware", field="now")
    at = now.astimezone(UTC)
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # what Cassandra stores
    return replace(ticket, player_id=player_id, version=ticket.version + 1, updated_at=max(at, ticket.updated_at))


def sender_may_be_linked(policy: str, dmarc: str | None) -> bool:
    """Whether an email's From address may be trusted to name a player (`PITBOSS_HELPDESK_MAIL_LINK_PLAYERS`),
    given the trusted MTA's DMARC verdict (None: no trusted Authentication-Results header)."""
    if policy == "dmarc_pass":
        return dmarc == "pass"
    if policy == "unless_dmarc_fail":
        return dmarc != "fail"
    return False
