"""Help desk: templates routes (`/helpdesk/v1`)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
