"""The audit log's records: what callers append, what the chain stores, what verification reports.

`before` and `after` are stored as JSON and covered by the chain's hashes, so they are normalised
to JSON-native values when a record is built: datetimes become RFC 3339 UTC strings, UUIDs and
Decimals strings, sets sorted lists, and floats their shortest round-trip text (`0.1` -> "0.1"),
because the canonical form has no floats (their text differs between JSON implementations).
What is stored is then exactly what was hashed, and reading it back gives the same record.
"""

from __future__ import annotations

import enum
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Outcome = Literal["succeeded", "denied", "failed"]
ProblemKind = Literal["changed", "removed", "inserted", "reordered", "bad_anchor", "anchor_missing_entry"]
# A chain is a region's name, or a test/benchmark chain such as "test-<uuid>".
ChainName = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
_MAX_DEPTH = 32


def rfc3339(value: datetime) -> str:
    """UTC, always six fractional digits and a `Z`: one text per instant."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a UTC offset (RFC 3339)")
    return value.astimezone(UTC)


def json_native(value: Any, depth: int = 0) -> Any:
    """`value` as JSON-native data (dict with str keys, list, str, int, bool, None)."""
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deeply for an audit record")
    if isinstance(value, enum.Enum):
        return json_native(value.value, depth + 1)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and infinity cannot be audited")
        return repr(value)
    if isinstance(value, datetime):
        return rfc3339(_utc(value))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, BaseModel):
        return json_native(value.model_dump(mode="json"), depth + 1)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"audit data keys must be strings, not {type(key).__name__}")
            out[key] = json_native(item, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [json_native(item, depth + 1) for item in value]
    if isinstance(value, (set, frozenset)):
        items = [json_native(item, depth + 1) for item in value]
        return sorted(items, key=repr)
    raise ValueError(f"{type(value).__name__} cannot be stored in an audit record")


def _json_data(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else json_native(value)


JsonData = Annotated[dict[str, Any] | None, AfterValidator(_json_data)]
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class AuditRecord(BaseModel):
    """One back-office or marketing action, as its caller appends it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: UUID  # idempotency: the same record_id is stored once
    actor_id: str = Field(max_length=200)
    actor_name: str = Field(max_length=200)
    actor_roles: list[str] = Field(default_factory=list, max_length=64)
    action: str = Field(min_length=1, max_length=120)  # "operator.create", "auth.login", "player.block"
    target_kind: str = Field(max_length=120)
    target_id: str | None = Field(default=None, max_length=200)
    brand: str | None = Field(default=None, max_length=64)
    before: JsonData = None
    after: JsonData = None
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)
    outcome: Outcome
    reason: str | None = Field(default=None, max_length=2000)
    request_id: str | None = Field(default=None, max_length=200)
    occurred_at: UtcDatetime


class AuditEntry(AuditRecord):
    """A record as the chain holds it: its place (`seq`), its link (`prev_hash`) and its `hash`."""

    chain: ChainName
    seq: int = Field(ge=1)
    appended_at: UtcDatetime
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")

    def record(self) -> AuditRecord:
        return AuditRecord.model_validate(self.model_dump(include=set(AuditRecord.model_fields)))


class AuditAnchor(BaseModel):
    """A signed statement "entry `seq` of `chain` had hash `hash`" (HMAC-SHA256)."""

    model_config = ConfigDict(frozen=True)

    chain: ChainName
    seq: int = Field(ge=1)
    hash: str
    signature: str
    signed_at: UtcDatetime


class AuditHead(BaseModel):
    """The chain's last committed entry; `seq` 0 and the genesis hash for an empty chain."""

    model_config = ConfigDict(frozen=True)

    chain: ChainName
    seq: int = Field(ge=0)
    hash: str
    epoch: int = Field(ge=0)


class VerifyProblem(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int
    kind: ProblemKind
    detail: str


class VerifyReport(BaseModel):
    ok: bool
    chain: str
    checked: int  # entries examined
    first_seq: int | None
    last_seq: int | None
    anchors_checked: int
    problems: list[VerifyProblem] = Field(default_factory=list)
    # Problems beyond the report's cap are counted here, not listed.
    problems_omitted: int = 0
