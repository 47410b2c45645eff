"""Live chat: the platform's session request and answer, the stored chat line, and the JSON frames
of the chat WebSockets. Rules (limits, token claims) are in `domain.chat`.

Frame protocol (one JSON object per WebSocket text frame, `type` first):

client -> server
    {"type": "message", "client_id": uuid, "body": str, "ticket_id"?: uuid}
        a chat line; `client_id` is the sender's idempotency key (a resend after a lost ack is
        answered with the first ack, nothing stored twice). A player may leave `ticket_id` out;
        if given it must be the token's ticket. An agent names the chat.
    {"type": "typing", "ticket_id"?: uuid}
        the sender is typing; relayed, never stored.
    {"type": "join", "ticket_id": uuid, "after"?: int}    (agent only)
        open a chat (assigned or not, within the agent's brands): replays lines with seq > after,
        then delivers it live. Chats assigned to the agent are delivered live from the connect on.
    {"type": "leave", "ticket_id": uuid}                  (agent only)

server -> client
    {"type": "ready", ...}          after the connect: the player's ticket and last seq, or the
                                    agent's open chats
    {"type": "message", "ticket_id", "seq", "message_id", "client_id", "author_kind",
     "author_id", "body", "created_at"}
    {"type": "ack", "ticket_id", "client_id", "message_id", "seq"}   the line is durable
    {"type": "typing", "ticket_id", "author_kind"}
    {"type": "chat", "ticket_id", "subject", "player_id", "brand", "status", "last_seq"}
                                    (agent) a chat was assigned to or opened by the agent
    {"type": "error", "field", "detail", "client_id"?}   the frame was refused, nothing stored

`seq` numbers a chat's lines 1, 2, 3... A socket reconnected with `?after=<seq>` (player) or a
`join` with `after` (agent) gets every line it missed, so a chat survives a replica restart.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, RootModel

from schemas.common import AwareDatetime, Brand

ChatAuthor = Literal["player", "agent", "system"]
Language = Annotated[str, Field(min_length=2, max_length=16, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
Category = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
# The frame-level cap, far above any line the settings allow; the body's limit is a setting.
MAX_FRAME_CHARS = 100_000


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatSessionCreate(_In):
    """The platform opens (or re-opens, same `chat_id`) a chat for one of its players."""

    player_id: UUID
    chat_id: UUID  # the platform's idempotency key: a retry answers the same ticket with a fresh token
    language: Language = "en"
    category: Category = "chat"
    subject: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    message: Annotated[str, Field(max_length=20_000)] | None = None  # the player's first line, if any


class ChatSessionPublic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    chat_id: UUID
    ticket_id: UUID
    token: str
    expires_at: AwareDatetime
    # Where the player's browser connects: wss://<host><socket>?token=<token>[&after=<seq>].
    socket: str = "/helpdesk/v1/chat/player"


class ChatLine(BaseModel):
    """One stored line of a chat (table chat_lines)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ticket_id: UUID
    seq: int
    message_id: UUID
    client_id: UUID
    author_kind: ChatAuthor
    author_id: str | None
    body: str
    created_at: AwareDatetime


class ChatSummary(BaseModel):
    """A chat as the agent console lists it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ticket_id: UUID
    brand: Brand
    player_id: UUID | None
    subject: str
    status: str
    assignee: str | None
    last_seq: int


# ---------------------------------------------------------------------------- client frames


class MessageFrame(_In):
    type: Literal["message"]
    client_id: UUID
    body: str
    ticket_id: UUID | None = None


class TypingFrame(_In):
    type: Literal["typing"]
    ticket_id: UUID | None = None


class JoinFrame(_In):
    type: Literal["join"]
    ticket_id: UUID
    after: Annotated[int, Field(ge=0)] = 0


class LeaveFrame(_In):
    type: Literal["leave"]
    ticket_id: UUID


ClientFrame = Annotated[MessageFrame | TypingFrame | JoinFrame | LeaveFrame, Field(discriminator="type")]


class AnyClientFrame(RootModel[ClientFrame]):
    """Parses any client frame by its `type`."""
