"""Live-chat rules: ids, line limits, the player's token, the per-socket rate, frame parsing. Pure:
no IO, the clock is passed in.

- A chat is a ticket (channel "chat") whose id is derived from the brand and the platform's
  `chat_id`, so a retried session request names the same ticket and two brands' chat ids never
  collide.
- A line's `message_id` is derived from its ticket and the sender's `client_id`: a resent line
  has the id of the first, which is also the id of the ticket message it becomes.
- A body is stripped of surrounding white space, then must hold 1 to `max_chars` characters.
- The player's token is an HS256 JWT signed with a key derived from the deployment's secret
  key (never the secret itself), audience `pitboss-chat`, naming the player, the brand and the
  one ticket it opens; a token of another audience, a forged signature or one past `exp`
  is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid5

import jwt
from pydantic import ValidationError

from domain.errors import Forbidden, InvalidInput, RateLimited, Unauthorized
from schemas.chat import MAX_FRAME_CHARS, AnyClientFrame, ClientFrame

AUDIENCE = "pitboss-chat"
_NS_TICKET = UUID("9b7d2a5e-3c1f-4f6a-8e0b-5d4c3b2a1f10")
_NS_LINE = UUID("2c9e6f1a-7b3d-4e8f-a1c5-0d9b8a7f6e21")


def ticket_id_for(brand: str, chat_id: UUID) -> UUID:
    return uuid5(_NS_TICKET, f"{brand}/{chat_id}")


def line_message_id(ticket_id: UUID, client_id: UUID) -> UUID:
    return uuid5(_NS_LINE, f"{ticket_id}/{client_id}")


def check_body(body: str, max_chars: int) -> str:
    """The body to store, or InvalidInput(field="body")."""
    text = body.strip()
    if not text:
        raise InvalidInput("a chat message is not empty", field="body")
    if len(text) > max_chars:
        raise InvalidInput(f"a chat message has at most {max_chars} characters ({len(text)} sent)", field="body")
    return text


def parse_frame(text: str | bytes) -> ClientFrame:
    """A client frame, or InvalidInput naming the first wrong field."""
    if isinstance(text, bytes):
        raise InvalidInput("frames are JSON text, not binary", field="frame")
    if len(text) > MAX_FRAME_CHARS:
        raise InvalidInput(f"a frame has at most {MAX_FRAME_CHARS} characters", field="body")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInput("a frame is one JSON object", field="frame") from exc
    if not isinstance(data, dict):
        raise InvalidInput("a frame is one JSON object", field="frame")
    try:
        return AnyClientFrame.model_validate(data).root
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        # The discriminated union puts the frame type first; the field is what the client wrote.
        field = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else "type")
        raise InvalidInput(str(err["msg"]), field=field or "type") from exc


# ---------------------------------------------------------------------------- the player's token


@dataclass(frozen=True, slots=True)
class ChatGrant:
    """What a valid token lets its holder do: talk as `player_id` of `brand` in `ticket_id` only."""

    player_id: UUID
    brand: str
    ticket_id: UUID
    chat_id: UUID
    expires_at: datetime


def token_key(secret_key: str) -> bytes:
    # A key of its own: a leaked chat key forges chat tokens only, not what else the secret protects.
    return hmac.new(secret_key.encode(), b"pitboss/chat-token/v1", hashlib.sha256).digest()


def issue_token(key: bytes, grant: ChatGrant, now: datetime) -> str:
    claims = {
        "aud": AUDIENCE,
        "sub": str(grant.player_id),
        "brand": grant.brand,
        "tid": str(grant.ticket_id),
        "cid": str(grant.chat_id),
        "iat": int(now.timestamp()),
        "exp": int(grant.expires_at.timestamp()),
    }
    return jwt.encode(claims, key, algorithm="HS256")


def grant_for(player_id: UUID, brand: str, ticket_id: UUID, chat_id: UUID, now: datetime, seconds: int) -> ChatGrant:
    expires = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
    return ChatGrant(player_id, brand, ticket_id, chat_id, expires)


def read_token(key: bytes, token: str | None, now: datetime) -> ChatGrant:
    """The grant of a token, or Unauthorized(field="token") (missing, forged, expired, malformed)."""
    if not token or len(token) > 2048:
        raise Unauthorized("connect with the token the chat session gave (?token=...)", field="token")
    try:
        # Expiry is checked against the clock passed in, not the library's.
        claims = jwt.decode(token, key, algorithms=["HS256"], audience=AUDIENCE,
                            options={"verify_exp": False, "require": ["exp", "sub", "aud"]})
        grant = ChatGrant(UUID(str(claims["sub"])), str(claims["brand"]), UUID(str(claims["tid"])),
                          UUID(str(claims["cid"])), datetime.fromtimestamp(int(claims["exp"]), UTC))
    except (jwt.PyJWTError, KeyError, ValueError, TypeError, OverflowError) as exc:
        raise Unauthorized("the chat token is not valid", field="token") from exc
    if now >= grant.expires_at:
        raise Unauthorized("the chat token expired: ask the site for a new chat session", field="token")
    return grant


def player_target(grant: ChatGrant, named: UUID | None) -> UUID:
    """The ticket a player's frame is for: the token's own, whatever the frame says otherwise."""
    if named is not None and named != grant.ticket_id:
        raise Forbidden("this chat socket may only write to its own conversation", field="ticket_id")
    return grant.ticket_id


# ---------------------------------------------------------------------------- rate


@dataclass(slots=True)
class TokenBucket:
    """`rate` lines a second sustained, `burst` at once; `take` raises RateLimited when empty."""

    rate: float
    burst: int
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens, self.at = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            wait = (1.0 - self.tokens) / self.rate
            raise RateLimited(f"too many chat messages: wait {wait:.1f} s", field="body",
                              extra={"retry_after": round(wait, 1)})
        self.tokens -= 1.0
