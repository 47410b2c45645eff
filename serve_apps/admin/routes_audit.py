"""The audit chain: recent entries, verification, export for a regulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from schemas.audit import VerifyReport
from serve_apps.backoffice import actions
from serve_apps.backoffice.deps import BO, Operator, Require

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", summary="Audit entries, newest first (cursor = the last seq seen)")
async def recent(
    op: Annotated[Operator, Require("audit.read")],
    bo: BO,
    cursor: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    entries = await bo.audit.recent(limit, cursor)
    items = [e.model_dump(mode="json") for e in entries]
    return {"items": items, "next_cursor": str(entries[-1].seq) if len(entries) == limit and entries else None}


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


async def _serialise(entries: AsyncIterator[Any], fmt: str) -> AsyncIterator[bytes]:
    from actors.audit import csv_header, csv_line, json_line

    if fmt == "csv":
        yield csv_header().encode()
    async for e in entries:
        yield (csv_line(e) if fmt == "csv" else json_line(e)).encode()
