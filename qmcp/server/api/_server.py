"""Upstream's health and metrics endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..metrics import metrics_json, metrics_text
from ._deps import FiniteJsonRoute, State
from ._schemas import HealthOut

router = APIRouter(tags=["server"], route_class=FiniteJsonRoute)


@router.get("/health")
async def health(state: State) -> HealthOut:
    return HealthOut(status="healthy", version=state.version)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics() -> PlainTextResponse:
    return PlainTextResponse(metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/metrics/json")
async def metrics_as_json() -> dict[str, Any]:
    return metrics_json()
