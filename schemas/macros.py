"""Reply templates (macros) of the help desk: API bodies. Rules (placeholders, rendering) are in
`domain.macros`.

A template is a reply text in one language with `{{placeholders}}` filled from the player, the
ticket and the agent when applied, plus optional actions on the ticket (set a status, add tags).
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from schemas.common import AwareDatetime

BODY_MAX = 10_000
NAME_MAX = 100
MAX_TAGS = 10
# What a template may move a ticket to: never back to new, never closed (only the scheduler closes).
TemplateStatus = Literal["open", "pending", "on_hold", "solved"]


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _lower_strip(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


Language = Annotated[str, BeforeValidator(_lower_strip), Field(min_length=2, max_length=3, pattern=r"^[a-z]{2,3}$")]
Name = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=NAME_MAX)]
Body = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=BODY_MAX)]
# The ticket's tag alphabet (schemas.tickets.Tag), so an added tag is always one the ticket accepts.
Tag = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(_unique)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateCreate(_In):
    template_id: UUID | None = None  # the caller's idempotency key; generated when left out
    language: Language
    name: Name
    body: Body
    set_status: TemplateStatus | None = None
    add_tags: Tags = Field(default_factory=list)


class TemplateUpdate(_In):
    """Fields left out are unchanged; `set_status: null` (sent explicitly) removes the action.
    `version` is the version the editor showed: a template changed since is refused (409)."""

    version: Annotated[StrictInt, Field(ge=1)]
    language: Language | None = None
    name: Name | None = None
    body: Body | None = None
    set_status: TemplateStatus | None = None
    add_tags: Tags | None = None


class TemplatePublic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    template_id: UUID
    language: str
    name: str
    body: str
    set_status: TemplateStatus | None
    add_tags: list[str]
    placeholders: list[str]  # the placeholders the body uses, in order of first use
    version: int
    created_at: AwareDatetime
    updated_at: AwareDatetime
    updated_by: str


class TemplateApply(_In):
    template_id: UUID
    # The ticket version the agent's screen showed; a ticket changed since is refused (409).
    ticket_version: Annotated[StrictInt, Field(ge=1)] | None = None
    # Apply the actions (status, tags). False: only render the text (a preview).
    apply_actions: bool = True


class TemplateApplied(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    template_id: UUID
    ticket_id: UUID
    body: str  # plain text: escape it when rendering
    missing: list[str]  # placeholders that had no value (rendered with their fallback)
    masked: list[str]  # placeholders left out because the agent may not read the player's personal data
    set_status: str | None
    added_tags: list[str]
    ticket_version: int | None  # the ticket's version after the actions (None when not applied)
