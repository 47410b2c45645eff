"""Help desk: the telephony provider's webhook (`POST /helpdesk/v1/phone/events`).

Authentication: `X-Pitboss-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
`<t>.<raw body>` with the shared secret `PITBOSS_PHONE_WEBHOOK_SECRET`; a timestamp further than
`PITBOSS_PHONE_WEBHOOK_TOLERANCE_SECONDS` from now is refused (a captured request cannot be
replayed later), and the provider's `event_id` makes a redelivery a no-op (the call's log line is
a ticket message whose id is derived from it).

What each event does:
- `call.started`, `call.missed`: the call's ticket is the player's open phone ticket if they have
  one, else a new phone ticket; claimed for the call id once (table `phone_calls`), so every later
  event of the call lands on it.
- `call.ended` (duration), `call.recording` (https URL only): logged on the call's ticket
  (404 `call_id` before the call is known: the provider retries).
Each event is an internal system message on the ticket and a `call` line of the player's history.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Literal
from uuid import UUID, uuid5

from fastapi import APIRouter, Depends, Header, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from domain.errors import InvalidInput, NotFound, Unauthorized
from domain.tickets import ACTIVE
from schemas.common import Brand
from schemas.tickets import MessageCreate, MessagePublic, TicketCreate, summarize
from serve_apps.access import mark_service
from serve_apps.backoffice.deps import BO
from serve_apps.helpdesk.service import HD, Actor, HelpDesk

router = APIRouter(tags=["phone"])
SIGNATURE_HEADER = "X-Pitboss-Signature"
_CALLS = UUID("c6a1e8f2-3b7d-4e59-9a0c-5d2f8b1e7c34")  # namespace of ids derived from the provider's
MAX_EVENT_BYTES = 16 * 1024


class PhoneEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Annotated[str, Field(min_length=1, max_length=128)]
    type: Literal["call.started", "call.ended", "call.missed", "call.recording"]
    call_id: Annotated[str, Field(min_length=1, max_length=128)]
    occurred_at: AwareDatetime
    brand: Brand
    player_id: UUID | None = None
    direction: Literal["inbound", "outbound"] = "inbound"
    from_number: Annotated[str, Field(max_length=32, pattern=r"^\+?[0-9 ()-]{3,32}$")] | None = None
    duration_seconds: Annotated[int, Field(ge=0, le=86_400)] | None = None
    recording_url: Annotated[str, Field(max_length=2000)] | None = None

    @field_validator("recording_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith("https://"):
            raise ValueError("a recording URL is https")
        return value


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for a body sent at `timestamp` (what the provider computes)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


async def phone_signature(
    request: Request,
    bo: BO,
    signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER, max_length=512)] = None,
) -> bytes:
    """The raw body, once its signature and timestamp are checked (401 otherwise)."""
    if not signature:
        raise Unauthorized(f"sign the body: {SIGNATURE_HEADER}: t=<unix>,v1=<hmac-sha256>", field=SIGNATURE_HEADER)
    parts = dict(p.strip().split("=", 1) for p in signature.split(",") if "=" in p)
    try:
        ts = int(parts.get("t", ""))
    except ValueError:
        raise Unauthorized("the signature has no timestamp t=", field=SIGNATURE_HEADER) from None
    if abs(time.time() - ts) > bo.settings.phone_webhook_tolerance_seconds:
        raise Unauthorized("the signature's timestamp is too old or in the future", field=SIGNATURE_HEADER)
    body = await request.body()
    expected = sign(bo.settings.phone_webhook_secret, ts, body).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise Unauthorized("wrong signature", field=SIGNATURE_HEADER)
    return body


mark_service(phone_signature)


class PhoneAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ticket_id: UUID
    message: MessagePublic


def _parse(body: bytes) -> PhoneEvent:
    if len(body) > MAX_EVENT_BYTES:
        raise InvalidInput(f"a phone event is at most {MAX_EVENT_BYTES} bytes", field="body")
    try:
        return PhoneEvent.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise InvalidInput(f"{where}: {str(err['msg']).removeprefix('Value error, ')}", field=where) from exc


def _duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _line(e: PhoneEvent) -> str:
    who = f" from {e.from_number}" if e.from_number else ""
    if e.type == "call.started":
        return f"Call started ({e.direction}{who}), call {e.call_id}"
    if e.type == "call.missed":
        return f"Missed call ({e.direction}{who}), call {e.call_id}"
    if e.type == "call.ended":
        return f"Call ended after {_duration(e.duration_seconds or 0)}, call {e.call_id}"
    return f"Call recording: {e.recording_url}, call {e.call_id}"


async def _open_phone_ticket(hd: HelpDesk, player_id: UUID, brand: str) -> UUID | None:
    rows, _ = await hd.tickets.player_tickets(player_id, None, 50)
    for row in rows:
        if row["channel"] == "phone" and row["status"] in ACTIVE:
            try:
                t = await hd.tickets.get(row["ticket_id"])
            except NotFound:
                continue
            if t.status in ACTIVE and t.brand == brand:  # the index row may lag the ticket
                return t.ticket_id
    return None


async def _call_ticket(hd: HelpDesk, e: PhoneEvent, actor: Actor) -> UUID:
    known = await hd.routes.call_ticket(e.call_id)
    if known is not None:
        return known
    if e.type in ("call.ended", "call.recording"):
        raise NotFound(f"no call {e.call_id} started yet", field="call_id")
    if e.player_id is None:
        raise InvalidInput("a call's first event names the player (who called, or was called)", field="player_id")
    existing = await _open_phone_ticket(hd, e.player_id, e.brand)
    fresh = uuid5(_CALLS, f"call:{e.call_id}")
    ticket_id = await hd.routes.claim_call(e.call_id, existing or fresh, e.player_id, e.occurred_at)
    if ticket_id == fresh:
        missed = e.type == "call.missed"
        await hd.create_ticket(TicketCreate(
            ticket_id=fresh, player_id=e.player_id, brand=e.brand, channel="phone", category="phone",
            priority="P2" if missed else "P3", subject="Missed call" if missed else "Phone call",
            body=f"{'Missed call' if missed else 'Phone call'} from the player (call {e.call_id})",
        ), actor)
    return ticket_id


@router.post("/phone/events", summary="The telephony provider's call events (signed; idempotent by event_id)")
async def phone_event(body: Annotated[bytes, Depends(phone_signature)], hd: HD) -> PhoneAnswer:
    e = _parse(body)
    actor = Actor("system", "phone", brand=e.brand)
    ticket_id = await _call_ticket(hd, e, actor)
    message = await hd.add_message(ticket_id, MessageCreate(
        message_id=uuid5(_CALLS, f"event:{e.event_id}"), body=_line(e), visibility="internal", author_kind="system",
    ), actor)
    ticket = await hd.tickets.get(ticket_id)
    if ticket.player_id is not None:
        await hd.routes.timeline(ticket.player_id, message.created_at, message.message_id, "call", ticket_id,
                                 summarize(_line(e)), "internal")
    return PhoneAnswer(ticket_id=ticket_id, message=message)
