"""Upstream's human-in-the-loop requests and answers; an answer to a run's gate resumes the run here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ...agentframework.models import HumanRequest, HumanRequestStatus
from ...app import answer_request, row_json
from ..problems import problems
from ._deps import Db, FiniteJsonRoute, Limit, Offset, Remote, State, correlation
from ._schemas import (
    HumanRequestDetailOut,
    HumanRequestIn,
    HumanRequestListOut,
    HumanRequestOut,
    HumanResponseIn,
    HumanResponseOut,
    human_request_out,
    human_response_out,
)

router = APIRouter(tags=["human"], route_class=FiniteJsonRoute)


@router.post("/v1/human/requests", status_code=201, responses=problems(400, 403, 409, 422, 503))
async def create_human_request(body: HumanRequestIn, request: Request, db: Db) -> HumanRequestOut:
    human = HumanRequest(
        id=body.id,
        request_type=body.request_type,
        prompt=body.prompt,
        options=body.options,
        context=body.context,
        timeout_seconds=body.timeout_seconds,
        correlation_id=correlation(request, body.correlation_id),
    )
    await db.create_human_request(human, run_token=body.run_token)  # counted in qmcp_hitl_requests_total
    return human_request_out(human)


@router.get("/v1/human/requests", response_model=HumanRequestListOut, responses=problems(422, 503))
async def list_human_requests(
    db: Db,
    status: Annotated[str | None, Query(pattern="^(pending|responded|expired|cancelled)$")] = None,
    request_type: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    rows = await db.list_human_requests(status=status, request_type=request_type, limit=limit, offset=offset)
    return {"requests": [row_json(row) for row in rows], "count": len(rows)}


@router.get(
    "/v1/human/requests/{request_id:path}",
    response_model=HumanRequestDetailOut,
    responses=problems(404, 503),
)
async def get_human_request(request_id: str, db: Db) -> dict[str, Any]:
    human = await db.get_human_request(request_id)
    if human.status == HumanRequestStatus.PENDING and human.expired():
        await db.expire_due_human_requests()
        human = await db.get_human_request(request_id)
    answer = await db.get_human_response(human.id)  # a gate's id may have come in its other form
    return {
        "request": row_json(human),
        "response": row_json(answer) if answer else None,
    }


@router.post("/v1/human/responses", status_code=201, responses=problems(400, 403, 404, 409, 410, 422, 503))
async def submit_human_response(
    body: HumanResponseIn, db: Db, state: State, caller: Remote
) -> HumanResponseOut:
    human, answer = await answer_request(
        db,
        body.request_id,
        body.response,
        caller,
        responded_by=body.responded_by,
        metadata=body.response_metadata,
    )
    await state.runs.answered(human)  # a run's gate: the paused run goes on here
    return human_response_out(answer)
