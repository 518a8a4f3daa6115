"""Executions: read (observed, never written by a read), their steps and live events; resume, cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ...app import ExecutionOut, ExecutionQuery, RunAccepted, StepOut, execution_steps, list_executions
from ..events import execution_events
from ._deps import Db, FiniteJsonRoute, Limit, Offset, Remote, State

router = APIRouter(tags=["executions"], route_class=FiniteJsonRoute)


@router.get("/v1/executions")
async def get_executions(
    db: Db, status: str | None = None, topology: str | None = None, limit: Limit = 50, offset: Offset = 0
) -> dict[str, Any]:
    page = await list_executions(db, ExecutionQuery(status, topology, limit, offset))
    return {
        "executions": [ExecutionOut.of(e).model_dump(mode="json") for e in page.executions],
        "count": len(page.executions),
        "total": page.total,
    }


@router.get("/v1/executions/{execution_id}")
async def get_execution(execution_id: str, db: Db) -> ExecutionOut:
    return ExecutionOut.of(await db.get_execution(execution_id), full=True)


@router.get("/v1/executions/{execution_id}/steps")
async def get_steps(execution_id: str, db: Db) -> dict[str, Any]:
    _, steps = await execution_steps(db, execution_id)
    return {"steps": [StepOut.of(step).model_dump(mode="json") for step in steps], "count": len(steps)}


@router.get("/v1/executions/{execution_id}/events")
async def stream_events(execution_id: str, db: Db, state: State) -> StreamingResponse:
    execution = await db.get_execution(execution_id)  # 404 before the stream starts
    return StreamingResponse(
        execution_events(db, state.hub, execution.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/v1/executions/{execution_id}/resume", status_code=202)
async def resume_execution(execution_id: str, request: Request, state: State, caller: Remote) -> RunAccepted:
    execution = await state.runs.resume(execution_id, caller, trace=request.headers)
    return RunAccepted(execution_id=str(execution.id), status=str(execution.status))


@router.post("/v1/executions/{execution_id}/cancel")
async def cancel_execution(execution_id: str, state: State) -> ExecutionOut:
    """Cancel at once what nobody runs; ask a running execution's owner to stop (the answer says
    `running` while it has not yet)."""
    return ExecutionOut.of(await state.runs.cancel(execution_id))
