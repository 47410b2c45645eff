"""Bodies of the back office's operator and session endpoints (XCreate / XUpdate / XPublic families).

Role names are checked against the policy by the caller; here they are only well-formed strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import pycountry
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

USERNAME_PATTERN = r"^[a-z0-9._-]+$"
# Recovery codes: three groups of four base32 characters (see domain.identity); hyphens and case are
# forgiven, so "abcd efgh ijkl" typed from paper still matches.
RECOVERY_CODE_PATTERN = r"^[A-Za-z2-7]{4}-?[A-Za-z2-7]{4}-?[A-Za-z2-7]{4}$"
TOTP_CODE_PATTERN = r"^[0-9]{6}$"
PASSWORD_MAX = 256

SessionStage = Literal["mfa", "enrol", "full"]


def _strip_spaces(value: object) -> object:
    return "".join(value.split()) if isinstance(value, str) else value


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _lower_strip(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _jurisdiction(value: str) -> str:
    if value == "*":
        return value
    code = value.upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise ValueError('expected an ISO 3166-1 alpha-2 code such as MT, or "*"')
    return code


Username = Annotated[str, BeforeValidator(_lower_strip), Field(min_length=3, max_length=64, pattern=USERNAME_PATTERN)]
DisplayName = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=128)]
# Deliberately loose: one "@", no spaces. Deliverability is the mail system's business.
Email = Annotated[
    str, BeforeValidator(_lower_strip), Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
]
RoleName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")]
BrandScope = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^(\*|[a-z0-9][a-z0-9_-]*)$")]
Jurisdiction = Annotated[str, AfterValidator(_jurisdiction)]
Roles = Annotated[list[RoleName], Field(min_length=1, max_length=64), AfterValidator(_unique)]
Brands = Annotated[list[BrandScope], Field(max_length=256), AfterValidator(_unique)]
Jurisdictions = Annotated[list[Jurisdiction], Field(max_length=256), AfterValidator(_unique)]
Password = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OperatorCreate(_Body):
    username: Username
    display_name: DisplayName
    email: Email | None = None
    roles: Roles
    brands: Brands = Field(default_factory=list)
    jurisdictions: Jurisdictions = Field(default_factory=list)


class OperatorUpdate(_Body):
    display_name: DisplayName | None = None
    email: Email | None = None
    roles: Roles | None = None
    brands: Brands | None = None
    jurisdictions: Jurisdictions | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> OperatorUpdate:
        if not self.model_fields_set:
            raise ValueError("at least one field is required")
        for name in ("display_name", "roles", "brands", "jurisdictions"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class OperatorPublic(_Body):
    operator_id: UUID
    username: str
    display_name: str
    email: str | None
    roles: list[str]
    brands: list[str]
    jurisdictions: list[str]
    disabled: bool
    mfa_enrolled: bool
    sso_provider: str | None
    # Set while the operator still has a generated temporary password (created or reset by an admin).
    must_change_password: bool = False
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


class SessionPublic(_Body):
    handle: str  # not a secret: names the session in lists and "end this session" forms
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime  # the absolute end; an idle session ends earlier
    ip: str | None
    user_agent: str | None
    stage: SessionStage
    current: bool


class LoginRequest(_Body):
    # No username pattern here: a malformed name gets the same answer as an unknown one.
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Password


class CodeRequest(_Body):
    code: Annotated[
        str,
        BeforeValidator(_strip_spaces),
        Field(min_length=6, max_length=14, pattern=f"({TOTP_CODE_PATTERN})|({RECOVERY_CODE_PATTERN})"),
    ]


class PasswordChange(_Body):
    old_password: Password
    new_password: Password
