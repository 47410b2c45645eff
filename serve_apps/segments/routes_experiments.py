"""Segmentation: experiments routes (`/segments/v1`). A/B experiments on a segment with weighted
variants and a holdout; assignments are sticky (stored on first use, returned forever after).

Operators reach them with their session; the casino platform (or the campaigns service) reads a
player's assignment at `/service/experiments/{key}/assignments/{player_id}` with its brand's API
key, and only for experiments of that brand."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Response

from schemas.experiments import Slug
from schemas.segment_api import (
    AssignmentPublic,
    ExperimentCreate,
    ExperimentPage,
    ExperimentPublic,
    ExperimentUpdate,
    SplitPublic,
)
from serve_apps.backoffice.deps import BO, BrandKey, Operator, Require
from serve_apps.segments import service
from serve_apps.segments.routes_segments import Cursor, Limit

router = APIRouter(tags=["experiments"])
Key = Annotated[Slug, Path(description="The experiment key.")]




@router.post("/experiments", response_model=ExperimentPublic, status_code=201,
             summary="Create an A/B experiment on a segment (variants with weights, holdout in basis points)")
async def create(
    body: ExperimentCreate, response: Response, op: Annotated[Operator, Require("segment.write")], bo: BO
) -> ExperimentPublic:
    exp, created = await service.create_experiment(bo, op, body)
    if not created:
        response.status_code = 200
    return exp


@router.get("/experiments", response_model=ExperimentPage, summary="Experiments of the operator's brands")
async def list_experiments(
    op: Annotated[Operator, Require("segment.read")], bo: BO, cursor: Cursor = None, limit: Limit = 50
) -> ExperimentPage:
    items, nxt = await service.list_experiments(bo, op, cursor, limit)
    return ExperimentPage(items=items, next_cursor=nxt)


@router.get("/experiments/{experiment_key}", response_model=ExperimentPublic, summary="One experiment")
async def get(experiment_key: Key, op: Annotated[Operator, Require("segment.read")], bo: BO) -> ExperimentPublic:
    return await service.get_experiment(bo, op, experiment_key)


@router.patch("/experiments/{experiment_key}", response_model=ExperimentPublic,
              summary="Change weights, holdout or end (players already assigned keep their group); 409 if stale")
async def update(
    experiment_key: Key, body: ExperimentUpdate, op: Annotated[Operator, Require("segment.write")], bo: BO
) -> ExperimentPublic:
    return await service.update_experiment(bo, op, experiment_key, body)


@router.get("/experiments/{experiment_key}/assignments/{player_id}", response_model=AssignmentPublic,
            summary="A player's group: assigned and stored on first call, the same forever after")
async def assignment(
    experiment_key: Key, player_id: UUID, op: Annotated[Operator, Require("segment.read")], bo: BO
) -> AssignmentPublic:
    return await service.assignment(bo, experiment_key, player_id, brand=None, op=op)


@router.get("/experiments/{experiment_key}/split", response_model=SplitPublic,
            summary="Group sizes over the segment's current members")
async def split(experiment_key: Key, op: Annotated[Operator, Require("segment.read")], bo: BO) -> SplitPublic:
    return await service.split(bo, op, experiment_key)


@router.get("/service/experiments/{experiment_key}/assignments/{player_id}", response_model=AssignmentPublic,
            tags=["service"], summary="For the platform and campaigns (brand API key): a player's sticky group")
async def service_assignment(
    experiment_key: Key, player_id: UUID, brand: BrandKey, bo: BO
) -> AssignmentPublic:
    return await service.assignment(bo, experiment_key, player_id, brand=brand)
