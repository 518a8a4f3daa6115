"""Executions: read (observed, never written by a read), their steps and live events; resume, cancel;
prune old ones (only when the operator allows clients to)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ...app import (
    ExecutionDiff,
    ExecutionOut,
    ExecutionQuery,
    ForkRequest,
    Lineage,
    PruneReport,
    PruneRequest,
    RunAccepted,
    StepOut,
    diff_executions,
    execution_steps,
    lineage,
    list_executions,
)
from ...app import prune_executions as prune
from ..events import StreamLimits, execution_events, has_everything
from ..problems import problem, problems
from ._deps import Db, FiniteJsonRoute, Limit, Offset, Remote, State, correlation, open_database
from ._schemas import ExecutionListOut, ForkBody, StepListOut

router = APIRouter(tags=["executions"], route_class=FiniteJsonRoute)


@router.get("/v1/executions", response_model=ExecutionListOut, responses=problems(400, 422, 503))
async def get_executions(
    db: Db,
    status: str | None = None,
    topology: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
    eval_id: Annotated[str | None, Query(max_length=64, description="only this eval's cells")] = None,
) -> dict[str, Any]:
    page = await list_executions(db, ExecutionQuery(status, topology, limit, offset, eval_id))
    return {
        "executions": [ExecutionOut.of(e).model_dump(mode="json") for e in page.executions],
        "count": len(page.executions),
        "total": page.total,
    }


@router.post(
    "/v1/executions/prune",
    responses=problems(
        400,
        503,
        described={
            403: "This server's operator has not allowed clients to prune (qmcp serve --allow-remote-prune)"
        },
    ),
)
async def prune_executions(body: PruneRequest, db: Db, state: State, caller: Remote) -> PruneReport:
    """Delete old finished executions with their steps, usage and human requests (`dry_run`: count them).
    Running, paused and pending executions and the parents of kept forks always stay."""
    return await prune(db, body, caller, policy=state.runs.policy)


@router.get("/v1/executions/{execution_id}", response_model=ExecutionOut, responses=problems(404, 503))
async def get_execution(execution_id: str, db: Db) -> Response:
    # The hottest read (clients poll it): serialised once here. Returned as the model, FastAPI would
    # validate it again against `response_model` and then serialise it (about 20 µs a request).
    # Its team snapshots are not shown: unread (a wide team's are megabytes of JSON, at every poll).
    execution = ExecutionOut.of(await db.get_execution(execution_id, snapshots=False), full=True)
    return Response(execution.model_dump_json(), media_type="application/json")


async def read_execution(request: Request) -> Response:
    """`get_execution` as the server serves it (a `PlainRoute`: no FastAPI parameter solving)."""
    return await get_execution(request.path_params["execution_id"], open_database(request))


@router.get("/v1/executions/{execution_id}/steps", response_model=StepListOut, responses=problems(404, 503))
async def get_steps(execution_id: str, db: Db) -> dict[str, Any]:
    _, steps = await execution_steps(db, execution_id)
    return {"steps": [StepOut.of(step).model_dump(mode="json") for step in steps], "count": len(steps)}


_SSE_EVENT = {
    "title": "ServerSentEvent",
    "description": "One event of the stream: its `data` is one JSON object whose `event` repeats the event's "
    "name. (The body is text; OpenAPI 3.1 has no keyword for one event of a stream, 3.2's `itemSchema`, "
    "and tools read a stream's `schema` either way: as the body, or as each event.)",
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "description": "status, step, delta, end, reset"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}

_STREAM_RETRY_SECONDS = 5
"""What a client refused a stream is told to wait before trying again."""


class _CountedStream(StreamingResponse):
    """A stream that holds one of `limits`' places for `client` until it ends, however it ends."""

    def __init__(self, content: Any, limits: StreamLimits, client: str, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._limits, self._client = limits, client
        limits.opened(client)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._limits.closed(self._client)


@router.get(
    "/v1/executions/{execution_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: the execution's status and recorded steps, then what happens "
            "live (`step`, `delta`, `status`), until an `end` event when the run stops",
            "content": {"text/event-stream": {"schema": {"anyOf": [{"type": "string"}, _SSE_EVENT]}}},
        },
        204: {
            "description": "The `Last-Event-ID` sent is the run's `end` and nothing changed since: "
            "nothing more to send (an EventSource stops reconnecting)"
        },
        **problems(
            404, 503, described={429: "Too many event streams are open (the server's or this client's cap)"}
        ),
    },
)
async def stream_events(execution_id: str, request: Request, db: Db, state: State) -> Response:
    execution = await db.get_execution(execution_id)  # 404 before the stream starts
    last_event_id = request.headers.get("last-event-id")  # a reconnect: resume after it (events.py)
    if has_everything(execution, last_event_id):
        return Response(status_code=204)  # it has the run's end: an EventSource stops reconnecting
    client = request.client.host if request.client else "unknown"
    refusal = state.streams.refusal(client)
    if refusal is not None:
        refused = problem(429, refusal, kind="too-many-streams")
        refused.headers["Retry-After"] = str(_STREAM_RETRY_SECONDS)
        return refused
    return _CountedStream(
        execution_events(db, state.hub, execution.id, last_event_id),
        state.streams,
        client,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/v1/executions/{execution_id}/resume", status_code=202, responses=problems(400, 403, 404, 409, 429, 503)
)
async def resume_execution(execution_id: str, request: Request, state: State, caller: Remote) -> RunAccepted:
    execution = await state.runs.resume(execution_id, caller, trace=request.headers)
    return RunAccepted(execution_id=str(execution.id), status=str(execution.status))


@router.post("/v1/executions/{execution_id}/cancel", responses=problems(400, 404, 409, 503))
async def cancel_execution(execution_id: str, state: State) -> ExecutionOut:
    """Cancel at once what nobody runs; ask a running execution's owner to stop (the answer says
    `running` while it has not yet)."""
    return ExecutionOut.of(await state.runs.cancel(execution_id))


@router.post(
    "/v1/executions/{execution_id}/fork", status_code=202, responses=problems(400, 403, 404, 422, 503)
)
async def fork_execution(
    execution_id: str, body: ForkBody, request: Request, state: State, caller: Remote
) -> RunAccepted:
    """Fork the execution at step `at`: a new execution that inherits the steps started before it
    (not paid again) and runs the rest, queued for the server's workers."""
    fork = ForkRequest(
        execution_id, body.at, body.model, body.agents, body.input, body.set_output, correlation(request)
    )
    execution = await state.runs.fork(fork, caller, trace=request.headers)
    return RunAccepted(execution_id=str(execution.id), status=str(execution.status))


@router.get("/v1/executions/{execution_id}/lineage", responses=problems(404, 503))
async def get_lineage(execution_id: str, db: Db) -> Lineage:
    """The executions this one was forked from (its parent first), and its forks."""
    return await lineage(db, execution_id)


@router.get("/v1/executions/{a}/diff/{b}", responses=problems(404, 503))
async def get_diff(a: str, b: str, db: Db) -> ExecutionDiff:
    """Two executions compared step by step: changed replies, tokens and cost of each."""
    return await diff_executions(db, a, b)
