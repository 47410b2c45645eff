"""Who an email address belongs to, for the help desk: the `player_contacts` index, then every
candidate's live profile (`domain.player_links.verified_player`). Used by the mail gateway before it
opens an email ticket, and by the ticket page to suggest the player of an unlinked email ticket.

The index is written by the players' shards a flush interval after a profile change, so an email
sent in the first moments after a player registered or changed address may find nobody: the ticket
then opens unlinked, as for an unknown sender, and an agent links it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol
from uuid import UUID

from adapters.cassandra.player_contacts import PlayerContacts
from domain.errors import Forbidden, NotFound
from domain.player_links import normalize_email, verified_player

log = logging.getLogger("pitboss.helpdesk.contacts")


class PlayerReader(Protocol):
    """What the resolver needs of `actors.router.PlayerRouter`."""

    async def read(self, player_id: UUID, brand: str | None) -> dict[str, Any]: ...


class SenderResolver:
    def __init__(self, contacts: PlayerContacts, players: PlayerReader) -> None:
        self.contacts = contacts
        self.players = players

    async def _live(self, brand: str, email: str) -> dict[UUID, dict[str, Any]]:
        """The index's candidates for (brand, email) that still exist, with their live state."""
        listed = await self.contacts.players(brand, email)
        states = await asyncio.gather(*(self._state(pid, brand) for pid in listed))
        return {pid: state for pid, state in zip(listed, states, strict=True) if state is not None}

    async def candidates(self, brand: str, address: str) -> dict[UUID, dict[str, Any]]:
        """The players of `brand` whose live profile has `address`, in index order (for an agent to
        choose), each with the live state just read."""
        email = normalize_email(address)
        if email is None:
            return {}
        live = await self._live(brand, email)
        return {pid: state for pid, state in live.items()
                if verified_player(brand, email, {pid: _address(state)}) == pid}

    async def resolve(self, brand: str, address: str) -> UUID | None:
        """The one player `address` names in `brand`, or None (unknown, stale index row, or shared)."""
        email = normalize_email(address)
        if email is None:
            return None
        live = await self._live(brand, email)
        found = verified_player(brand, email, {pid: _address(state) for pid, state in live.items()})
        if found is None and len(live) > 1:
            log.info("several players of brand %s are indexed under the sender's address: left for an agent", brand)
        return found

    async def _state(self, player_id: UUID, brand: str) -> dict[str, Any] | None:
        try:
            return await self.players.read(player_id, brand)
        except (NotFound, Forbidden):  # gone, or (a stale row) of another brand
            return None


def _address(state: dict[str, Any]) -> tuple[str, str | None]:
    """A live state's (brand, profile email), as `verified_player` takes it."""
    return str(state["brand"]), (state.get("profile") or {}).get("email")
