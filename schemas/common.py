"""Value types shared by API bodies, events and stored records."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import pycountry
from pydantic import AfterValidator, BeforeValidator, Field, StrictInt

MAX_MINOR = 10**15  # a quadrillion minor units: far above any real transaction, far below int64


def _currency(value: str) -> str:
    code = value.upper() if isinstance(value, str) else value
    if not isinstance(code, str) or len(code) != 3 or pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError("unknown currency: expected an ISO 4217 code such as EUR")
    return code


def _country(value: str) -> str:
    code = value.upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise ValueError("unknown country: expected an ISO 3166-1 alpha-2 code such as MT")
    return code


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a UTC offset (RFC 3339)")
    return value


def _no_bool(value: object) -> object:
    # JSON true/false must never become 1/0 minor units.
    if isinstance(value, bool):
        raise ValueError("expected an integer number of minor units")
    return value


Currency = Annotated[str, AfterValidator(_currency)]
Country = Annotated[str, AfterValidator(_country)]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
AmountMinor = Annotated[StrictInt, BeforeValidator(_no_bool), Field(gt=0, le=MAX_MINOR)]
NonNegativeMinor = Annotated[StrictInt, BeforeValidator(_no_bool), Field(ge=0, le=MAX_MINOR)]
Brand = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
Region = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
