"""Creates the region's long-lived actors from inside the Serve apps, so a KubeRay RayService
that only applies the Serve config brings up everything."""

from __future__ import annotations

from typing import Any

from actors.audit import audit_actor
from actors.consumer import EventConsumer
from actors.router import detached
from adapters.settings import Settings


def consumer_name(region: str, index: int) -> str:
    return f"pitboss-consumer-{region}-{index}"


def ensure_consumers(settings: Settings) -> list[Any]:
    return [
        detached(EventConsumer, consumer_name(settings.region, i), settings, 64, settings.region, i)
        for i in range(settings.consumers)
    ]


def ensure_audit(settings: Settings) -> Any:
    """Get or create the region's audit log writer, `pitboss-audit-<region>` (actors.audit.AuditLog)."""
    return audit_actor(settings)


def ensure_sla_scheduler(settings: Settings) -> Any:
    """Get or create the region's help-desk SLA scheduler, `pitboss-helpdesk-sla-<region>`
    (actors.helpdesk_sla.SlaScheduler). A broken SLA file stops the caller with its message."""
    from actors.helpdesk_sla import sla_scheduler_actor

    return sla_scheduler_actor(settings)
