"""Help-desk tickets: API bodies and stored records. The rules are in `domain.tickets`.

Decisions fixed here:

- A ticket links to its player by `player_id` only; the profile is read from its one table.
  `player_id` may be None only for an inbound email from an unknown sender (linked later).
- Ids are the caller's idempotency keys: `ticket_id` for a ticket, `message_id` for a message,
  `attachment_id` for an upload. A retry with the same id has the effect of the first call.
- Bodies are stripped of surrounding white space before their length is checked, so a body of
  blanks is empty. Lengths count characters (code points), not bytes.
- Attachments: an allow-list of content types, each with the file name extensions it may carry
  (a `.exe` declared as `image/png` is refused); at most 10 MiB; the name is reduced to its last
  path component with control and shell-unsafe characters replaced.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from schemas.common import AwareDatetime, Brand

Channel = Literal["web", "api", "email", "chat", "phone"]
Priority = Literal["P1", "P2", "P3", "P4"]
Status = Literal["new", "open", "pending", "on_hold", "solved", "closed"]
Visibility = Literal["public", "internal"]
AuthorKind = Literal["agent", "player", "system"]
TimelineKind = Literal["ticket", "message", "email", "chat", "call", "campaign"]

STATUSES: tuple[Status, ...] = ("new", "open", "pending", "on_hold", "solved", "closed")
MAX_BODY = 20_000
MAX_SUBJECT = 200
MAX_TAGS = 20
MAX_ATTACHMENTS_PER_MESSAGE = 10
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# Content type -> the file name extensions it may carry (lower case, with the dot).
ALLOWED_TYPES: dict[str, tuple[str, ...]] = {
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/gif": (".gif",),
    "image/webp": (".webp",),
    "application/pdf": (".pdf",),
    "text/plain": (".txt", ".log"),
    "text/csv": (".csv",),
}

_UNSAFE = re.compile(r"[^\w.\- ()\[\]+,@]")


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def sanitize_filename(value: str) -> str:
    """The last path component, NFC, control and unsafe characters replaced by `_`, at most 200 chars."""
    name = unicodedata.normalize("NFC", value).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join("_" if unicodedata.category(c).startswith("C") else c for c in name)
    name = _UNSAFE.sub("_", name).strip(" .")
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 200 - len(ext) - 1] + "." + ext) if dot and len(ext) <= 16 else name[:200]
    if not name or name.startswith("."):
        raise ValueError("a file name is needed (not empty, not only dots or path separators)")
    return name


Body = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=MAX_BODY)]
Subject = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=MAX_SUBJECT)]
Category = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
Tag = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(_unique)]
Team = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
OperatorId = Annotated[str, Field(min_length=1, max_length=128)]
Language = Annotated[str, Field(min_length=2, max_length=16, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
Filename = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(sanitize_filename)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
AttachmentRefs = Annotated[list[UUID], Field(max_length=MAX_ATTACHMENTS_PER_MESSAGE), AfterValidator(_unique)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TicketCreate(_In):
    ticket_id: UUID
    player_id: UUID | None = None
    brand: Brand
    channel: Channel
    category: Category
    priority: Priority = "P3"
    subject: Subject
    body: Body
    language: Language = "en"
    tags: Tags = Field(default_factory=list)
    attachments: AttachmentRefs = Field(default_factory=list)
    # The address of an unknown email sender, kept until the ticket is linked to a player.
    sender_email: Annotated[str, Field(max_length=320)] | None = None


class TicketUpdate(_In):
    """Fields left out are unchanged; `assignee: null` (sent explicitly) unassigns.

    `version` is the version the agent's screen showed: a ticket changed since is refused (409)
    rather than overwritten."""

    version: Annotated[StrictInt, Field(ge=1)] | None = None
    status: Status | None = None
    priority: Priority | None = None
    category: Category | None = None
    team: Team | None = None
    assignee: OperatorId | None = None
    tags_add: Tags = Field(default_factory=list)
    tags_remove: Tags = Field(default_factory=list)


class MessageCreate(_In):
    message_id: UUID
    body: Body
    visibility: Visibility = "public"
    author_kind: AuthorKind
    attachments: AttachmentRefs = Field(default_factory=list)


class TicketPlayerLink(_In):
    """An agent links a ticket without a player (an email from an address no profile had) to one.
    `version` is the version the agent's screen showed (409 when the ticket changed since)."""

    player_id: UUID
    version: Annotated[StrictInt, Field(ge=1)]


class AttachmentMeta(_In):
    attachment_id: UUID
    ticket_id: UUID
    filename: Filename
    content_type: str
    size: Annotated[StrictInt, Field(ge=1, le=MAX_ATTACHMENT_BYTES)]
    sha256: Sha256
    created_at: AwareDatetime

    @field_validator("content_type", mode="before")
    @classmethod
    def _allowed(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        kind = value.split(";", 1)[0].strip().lower()
        if kind not in ALLOWED_TYPES:
            raise ValueError(f"content type {kind!r} is not allowed: {', '.join(ALLOWED_TYPES)}")
        return kind

    @model_validator(mode="after")
    def _extension(self) -> AttachmentMeta:
        ext = "." + self.filename.rsplit(".", 1)[-1].lower() if "." in self.filename else ""
        if ext not in ALLOWED_TYPES[self.content_type]:
            raise ValueError(f"filename: a {self.content_type} file is named "
                             f"{' or '.join(ALLOWED_TYPES[self.content_type])}, not {ext or 'without extension'}")
        return self


class TicketPublic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ticket_id: UUID
    player_id: UUID | None
    brand: Brand
    channel: Channel
    category: Category
    priority: Priority
    status: Status
    subject: str
    language: str
    team: str | None
    assignee: str | None
    tags: list[str]
    version: int
    created_at: AwareDatetime
    updated_at: AwareDatetime
    first_responded_at: AwareDatetime | None
    solved_at: AwareDatetime | None
    closed_at: AwareDatetime | None
    message_count: int
    sender_email: str | None = None


class MessagePublic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: UUID
    ticket_id: UUID
    author_kind: AuthorKind
    author_id: str | None
    visibility: Visibility
    body: str
    attachments: list[UUID]
    created_at: AwareDatetime


class PlayerCandidate(BaseModel):
    """A player whose live profile has an unlinked ticket's sender address, offered to the agent who
    links the ticket. Personal data is masked (`masked`) unless the agent may see it on that player."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    player_id: UUID
    email: str | None
    first_name: str | None
    last_name: str | None
    country: str | None
    masked: bool


class TimelineItem(BaseModel):
    """One line of a player's communication history, newest first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: UUID
    kind: TimelineKind
    at: AwareDatetime
    ticket_id: UUID | None
    summary: Annotated[str, Field(max_length=300)]
    visibility: Visibility = "public"


def summarize(text: str, limit: int = 200) -> str:
    """One line of at most `limit` characters for lists and the timeline."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
