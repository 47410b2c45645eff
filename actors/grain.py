"""One player's virtual actor turn, without IO: idempotency, creation and the domain decision.

The live path and the journal replay go through `decide_entry`, so replaying a journal gives
exactly the state the live turns produced.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from pydantic import TypeAdapter

from actors.ids import id_hash
from domain.errors import Conflict, NotFound
from domain.player import AnyCommand, Decision, decide, new_player, register_from_event, remember, view
from schemas.commands import ApplyEvent, AuthorizeDeposit, Command, RegisterPlayer
from schemas.events import PlayerRegistered, parse_envelope
from schemas.state import PlayerState

# Command is an Annotated union, which mypy does not take as a type here.
_COMMANDS: TypeAdapter[Any] = TypeAdapter(cast(Any, Command))


@dataclass(slots=True)
class Replay:
    """An answer given again to a retried command: nothing is written."""

    status: int
    body: dict[str, Any]


def encode(cmd: AnyCommand) -> tuple[str, bytes]:
    # Unset fields stay out: a partial update must not come back as explicit nulls.
    if isinstance(cmd, ApplyEvent):
        return "event", cmd.event.model_dump_json(exclude_unset=True).encode()
    return cmd.kind, cmd.model_dump_json(exclude_unset=True).encode()


def decode(kind: str, body: bytes) -> AnyCommand:
    if kind == "event":
        from schemas.commands import event_command

        return event_command(parse_envelope(body))
    return _COMMANDS.validate_json(body)  # type: ignore[no-any-return]


def decode_command(raw: bytes) -> AnyCommand:
    """A command sent as JSON (callers send JSON: it crosses processes cheaper than a model)."""
    return _COMMANDS.validate_json(raw)  # type: ignore[no-any-return]


def check_replay(
    state: PlayerState | None, seen: Container[int], cmd: AnyCommand, version: int, now: datetime
) -> Replay | None:
    """The first answer if this command id was applied before; None if it is new."""
    if cmd.command_id is None or id_hash(cmd.command_id) not in seen:
        return None
    if state is None:
        return Replay(200, {})
    stored = state.results.get(cmd.command_id)
    if stored is not None and stored.fingerprint != cmd.fingerprint:
        raise Conflict("this id was used before with a different request", field=_id_field(cmd))
    if stored is None and isinstance(cmd, AuthorizeDeposit):
        raise Conflict("this tx_id was decided long ago; its answer is no longer kept", field="tx_id")
    if stored is None or stored.body is None:
        current = view(state, version, now).model_dump(mode="json")
        return Replay(stored.status if stored else 200, current)
    return Replay(stored.status, json.loads(stored.body))


def _id_field(cmd: AnyCommand) -> str:
    if isinstance(cmd, RegisterPlayer):
        return "player_id"
    if cmd.kind == "authorize_deposit":
        return "tx_id"
    return "Idempotency-Key"


def decide_entry(state: PlayerState | None, cmd: AnyCommand, now: datetime, version: int, home_region: str) -> Decision:
    """Decide one command for a player that may not exist yet."""
    if state is not None:
        return decide(state, cmd, now, version)
    if isinstance(cmd, RegisterPlayer):
        created = new_player(cmd, now)
        body = view(created, version + 1, now).model_dump(mode="json")
        remember(created, cmd.command_id, cmd.fingerprint, 201)
        return Decision(created, 201, body, [("player.registered", {"brand": created.brand})])
    if isinstance(cmd, ApplyEvent) and isinstance(cmd.event.payload, PlayerRegistered):
        created = register_from_event(cmd, home_region)
        return Decision(created, 200, {"status": "accepted"}, [])
    raise NotFound("unknown player", field="player_id")
