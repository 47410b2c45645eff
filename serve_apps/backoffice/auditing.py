"""One way to put a back-office action on the audit chain, used by every route."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import uuid4

from schemas.audit import AuditRecord

if TYPE_CHECKING:
    from serve_apps.backoffice.runtime import BackOffice

log = logging.getLogger("pitboss.audit")
Outcome = Literal["succeeded", "denied", "failed"]


class Anonymous:
    """Someone not logged in yet (a login attempt): named by what they typed."""

    def __init__(self, name: str, ip: str | None, user_agent: str | None, request_id: str | None) -> None:
        self.id = f"anonymous:{name[:64]}"
        self.name = name[:64]
        self.ip = ip
        self.user_agent = user_agent
        self.request_id = request_id
        self.roles: list[str] = []


async def record(
    bo: BackOffice,
    actor: Any,
    action: str,
    *,
    target_kind: str,
    target_id: str | None = None,
    brand: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    outcome: Outcome = "succeeded",
    reason: str | None = None,
) -> int:
    """Appends and waits until the entry is durable, so an answered action is on the record."""
    roles = sorted(actor.subject.roles) if hasattr(actor, "subject") else list(getattr(actor, "roles", []))
    entry = AuditRecord(
        record_id=uuid4(),
        actor_id=actor.id,
        actor_name=actor.name,
        actor_roles=roles,
        action=action,
        target_kind=target_kind,
        target_id=target_id,
        brand=brand,
        before=before,
        after=after,
        ip=actor.ip,
        user_agent=actor.user_agent,
        outcome=outcome,
        reason=reason,
        request_id=actor.request_id,
        occurred_at=datetime.now(UTC),
    )
    return await bo.audit.append(entry)
