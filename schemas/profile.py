"""Profile fields shared by the API bodies and the player events."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import BaseModel, Field

Name = Annotated[str, Field(min_length=1, max_length=100)]
Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Phone = Annotated[str, Field(max_length=32, pattern=r"^\+?[0-9 ()-]{4,31}$")]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")]
TrafficSource = Annotated[str, Field(max_length=64)]


class ProfileFields(BaseModel):
    """Optional personal data of a player; the account currency and country are set apart."""

    email: Email | None = None
    phone: Phone | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    birth_date: date | None = None
    language: Language | None = None
