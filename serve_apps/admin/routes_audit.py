"""The audit chain: recent entries, verification, export for a regulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from actors.audit import to_csv_lines, to_json_lines
from schemas.audit import AuditEntry, VerifyReport
from serve_apps.backoffice import actions
from serve_apps.backoffice.deps import BO, Operator, Require

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", summary="Audit entries, newest first; filters match exactly (`action` ending in `.` is a prefix)")
async def recent(
    op: Annotated[Operator, Require("audit.read")],
    bo: BO,
    cursor: Annotated[int | None, Query(ge=1, description="`next_cursor` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    actor_id: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    target_id: Annotated[str | None, Query(max_length=200)] = None,
    outcome: Annotated[Literal["succeeded", "denied", "failed"] | None, Query()] = None,
) -> dict[str, Any]:
    entries, nxt = await bo.audit.recent_page(
        limit, cursor, actor_id=actor_id, action=action, target_id=target_id, outcome=outcome
    )
    return {"items": [e.model_dump(mode="json") for e in entries], "next_cursor": nxt}


@router.get("/verify", response_model=VerifyReport, summary="Verify the hash chain and its signed anchors")
async def verify(
    op: Annotated[Operator, Require("audit.verify")],
    bo: BO,
    from_seq: Annotated[int | None, Query(ge=0)] = None,
    to_seq: Annotated[int | None, Query(ge=0)] = None,
) -> VerifyReport:
    return await bo.audit.verify(None, from_seq, to_seq)


@router.get("/export", summary="Entries of a time range as CSV or JSON lines (the export itself is audited)")
async def export(
    op: Annotated[Operator, Require("audit.export")],
    bo: BO,
    start: Annotated[datetime, Query(alias="from")],
    end: Annotated[datetime, Query(alias="to")],
    format: Annotated[Literal["csv", "json"], Query()] = "json",
) -> StreamingResponse:
    entries = await actions.export_audit(bo, op, start, end, format)
    return StreamingResponse(
        _serialise(entries, format),
        media_type="text/csv" if format == "csv" else "application/x-ndjson",
        headers={
            "Content-Disposition": f'attachment; filename="pitboss-audit.{"csv" if format == "csv" else "jsonl"}"'
        },
    )


async def _serialise(entries: AsyncIterator[AuditEntry], fmt: str) -> AsyncIterator[bytes]:
    lines = to_csv_lines(entries) if fmt == "csv" else to_json_lines(entries)
    async for line in lines:
        yield line.encode()
