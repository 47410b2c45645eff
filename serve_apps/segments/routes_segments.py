"""Segmentation: segments routes (`/segments/v1`). The use cases are in `service`; every route
declares one permission, checked again on the segment's brand once it is loaded."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from schemas.common import AwareDatetime, Brand
from schemas.segment_api import (
    FeaturePublic,
    MembersPage,
    PreviewPublic,
    PreviewRequest,
    SegmentCreate,
    SegmentPage,
    SegmentPublic,
    SegmentUpdate,
    SizeHistory,
)
from serve_apps.backoffice.deps import BO, Operator, Require
from serve_apps.segments import service

router = APIRouter(tags=["segments"])
Cursor = Annotated[str | None, Query(max_length=200, description="Opaque cursor from the previous page.")]
Limit = Annotated[int, Query(ge=1, le=service.MAX_PAGE)]
Features = Annotated[
    str | None,
    Query(max_length=2000, description="Comma-separated feature names to include (default: a few common ones)."),
]


@router.get("/features", response_model=list[FeaturePublic], summary="The feature catalogue rules can test")
async def features(op: Annotated[Operator, Require("segment.read")]) -> list[FeaturePublic]:
    return service.features()


@router.post("/segments/preview", response_model=PreviewPublic,
             summary="Count a rule's players now and show a sample (personal data masked by role); stores nothing")
async def preview(body: PreviewRequest, op: Annotated[Operator, Require("segment.read")], bo: BO) -> PreviewPublic:
    return await service.preview(bo, op, body.rule, body.sample, body.seed, body.brand)


@router.post("/segments", response_model=SegmentPublic, status_code=201,
             summary="Create a segment and materialise its membership; a retry with the same id returns it (200)")
async def create(
    body: SegmentCreate, response: Response, op: Annotated[Operator, Require("segment.write")], bo: BO
) -> SegmentPublic:
    segment, created = await service.create_segment(bo, op, body)
    if not created:
        response.status_code = 200
    return segment


@router.get("/segments", response_model=SegmentPage, summary="Segments of the operator's brands, newest first")
async def list_segments(
    op: Annotated[Operator, Require("segment.read")],
    bo: BO,
    cursor: Cursor = None,
    limit: Limit = 50,
    brand: Annotated[Brand | None, Query()] = None,
) -> SegmentPage:
    items, nxt = await service.list_segments(bo, op, cursor, limit, brand)
    return SegmentPage(items=items, next_cursor=nxt)


@router.get("/segments/{segment_id}", response_model=SegmentPublic, summary="One segment")
async def get(segment_id: UUID, op: Annotated[Operator, Require("segment.read")], bo: BO) -> SegmentPublic:
    return await service.get_segment(bo, op, segment_id)


@router.patch("/segments/{segment_id}", response_model=SegmentPublic,
              summary="Rename, describe or change the rule (version + 1, re-materialised); 409 if `version` is stale")
async def update(
    segment_id: UUID, body: SegmentUpdate, op: Annotated[Operator, Require("segment.write")], bo: BO
) -> SegmentPublic:
    return await service.update_segment(bo, op, segment_id, body)


@router.delete("/segments/{segment_id}", response_model=SegmentPublic,
               summary="Retire a segment: the engine stops tracking it; the definition stays for the record")
async def retire(segment_id: UUID, op: Annotated[Operator, Require("segment.write")], bo: BO) -> SegmentPublic:
    return await service.retire_segment(bo, op, segment_id)


@router.get("/segments/{segment_id}/members", response_model=MembersPage,
            summary="Current members of the segment's brand, with features; personal data masked by role")
async def members(
    segment_id: UUID,
    op: Annotated[Operator, Require("segment.read")],
    bo: BO,
    cursor: Cursor = None,
    limit: Limit = 50,
    features: Features = None,
) -> MembersPage:
    items, nxt = await service.members(bo, op, segment_id, cursor, limit, service.feature_list(features))
    return MembersPage(segment_id=segment_id, items=items, next_cursor=nxt)


@router.get("/segments/{segment_id}/sizes", response_model=SizeHistory,
            summary="The segment's size over time (default: the last 30 days)")
async def sizes(
    segment_id: UUID,
    op: Annotated[Operator, Require("segment.read")],
    bo: BO,
    since: Annotated[AwareDatetime | None, Query()] = None,
) -> SizeHistory:
    start: datetime | None = since
    return SizeHistory(segment_id=segment_id, points=await service.sizes(bo, op, segment_id, start))


@router.get("/segments/{segment_id}/export.csv", response_class=StreamingResponse,
            summary="The members as CSV, streamed; personal data masked by role; every export is audited")
async def export(
    segment_id: UUID,
    op: Annotated[Operator, Require("segment.export")],
    bo: BO,
    features: Features = None,
) -> StreamingResponse:
    lines = await service.export_csv(bo, op, segment_id, service.feature_list(features))
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="segment-{segment_id}.csv"',
            "Cache-Control": "no-store",
        },
    )
