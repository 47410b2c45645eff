"""Event ingestion over HTTP: the same path as the bus, answered per event."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from schemas.events import EnvelopeError, EventEnvelope, parse_envelope
from schemas.players import EventBatchResult, EventOutcome
from serve_apps.platform.deps import Brand, Platform

router = APIRouter(tags=["events"])


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: Annotated[
        list[dict[str, Any]],
        Field(min_length=1, max_length=1000, description="Event envelopes; see the EventEnvelope schema"),
    ]


@router.post(
    "/events",
    response_model=EventBatchResult,
    summary="Ingest up to 1,000 events; each is accepted, a duplicate, or rejected with a reason",
)
async def ingest(body: EventBatch, brand: Brand, app: Platform) -> EventBatchResult:
    outcomes: list[EventOutcome | None] = [None] * len(body.events)
    valid: list[tuple[int, EventEnvelope]] = []
    for i, raw in enumerate(body.events):
        raw_id = raw.get("event_id")
        try:
            env = parse_envelope(raw)
        except EnvelopeError as exc:
            outcomes[i] = EventOutcome(
                event_id=str(raw_id) if raw_id else None, index=i, status="rejected", reason=exc.reason
            )
            continue
        if env.brand != brand:
            outcomes[i] = EventOutcome(
                event_id=str(env.event_id),
                index=i,
                status="rejected",
                reason="brand: the API key belongs to another brand",
            )
            continue
        valid.append((i, env))
    if valid:
        results = await app.router.apply_events([env for _, env in valid])
        for (i, env), (status, reason) in zip(valid, results, strict=True):
            outcomes[i] = EventOutcome(
                event_id=str(env.event_id),
                index=i,
                status=status,
                reason=reason,
            )
    final = [o for o in outcomes if o is not None]
    return EventBatchResult(
        accepted=sum(o.status == "accepted" for o in final),
        duplicates=sum(o.status == "duplicate" for o in final),
        rejected=sum(o.status == "rejected" for o in final),
        results=final,
    )
