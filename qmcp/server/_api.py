"""The HTTP API: upstream's tool server (health, metrics, tools, invocations, human requests) and the
orchestration of agents, topologies and executions, over the same database and runner code as the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from .. import app as define
from ..agentframework.errors import InvalidConfigError, NotFoundError
from ..agentframework.models import (
    AgentType,
    ExecutionStatus,
    HumanRequest,
    HumanRequestStatus,
    Topology,
)
from ..agentframework.runners import collect_teams
from ..agentframework.store import Database
from ..agentframework.topologies import topology_dag
from ..app import AgentSpec, Caller, Door, ExecutionOut, RunAccepted, RunRequest, StepOut, TopologySpec
from ._events import EventHub, execution_events
from ._runs import RunManager
from ._schemas import (
    AgentBody,
    HealthOut,
    HumanRequestIn,
    HumanRequestOut,
    HumanResponseIn,
    HumanResponseOut,
    RunBody,
    ToolDefinitionOut,
    ToolInvokeIn,
    ToolInvokeOut,
    TopologyBody,
    human_request_out,
    human_response_out,
)
from ._tools import invoke_tool, server_tools
from .metrics import HTTP, metrics_json, metrics_text

__all__ = ["ServerState", "caller", "router"]

router = APIRouter()


@dataclass
class ServerState:
    db_url: str
    hub: EventHub
    runs: RunManager
    version: str
    db: Database | None = None
    """Open for the server's life (requests share its connection pool); set by the lifespan."""
    api_token: str | None = None
    """The token clients must send (the console's sign-in checks it); None: the server is open."""


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.qmcp
    return state


def _db(request: Request) -> Database:
    db = _state(request).db
    assert db is not None, "the server's lifespan opens the database"
    return db


def caller(request: Request, door: Door = Door.HTTP) -> Caller:
    """Whoever sent `request`: a remote client (the middleware let it in; with a token if the server has one)."""
    return Caller.client(door, authenticated=_state(request).api_token is not None)


def _correlation(request: Request, given: str | None = None) -> str | None:
    return given or request.scope.get("state", {}).get("correlation_id")


Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0)]


# -- upstream: health, metrics, tools, invocations ------------------------------------------------


@router.get("/health", tags=["server"])
async def health(request: Request) -> HealthOut:
    return HealthOut(status="healthy", version=_state(request).version)


@router.get("/metrics", tags=["server"], response_class=PlainTextResponse)
async def metrics() -> PlainTextResponse:
    return PlainTextResponse(metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/metrics/json", tags=["server"])
async def metrics_as_json() -> dict[str, Any]:
    return metrics_json()


@router.get("/v1/tools", tags=["tools"])
async def list_tools() -> dict[str, list[ToolDefinitionOut]]:
    return {
        "tools": [
            ToolDefinitionOut(name=t.name, description=t.description, input_schema=t.input_schema)
            for t in server_tools().values()
        ]
    }


@router.post("/v1/tools/{tool_name}", tags=["tools"])
async def call_tool(tool_name: str, body: ToolInvokeIn, request: Request) -> ToolInvokeOut:
    tool = server_tools().get(tool_name)
    if tool is None:
        raise NotFoundError(f"tool {tool_name!r} not found; list them at GET /v1/tools")
    db = _db(request)
    invocation = await invoke_tool(
        db,
        tool,
        body.input,
        _correlation(request, body.correlation_id),
        model_override=_state(request).runs.policy.pinned_model,
    )
    return ToolInvokeOut(result=invocation.result, error=invocation.error, invocation_id=invocation.id)


@router.get("/v1/invocations", tags=["tools"])
async def list_invocations(
    request: Request,
    tool_name: str | None = None,
    status: Annotated[str | None, Query(pattern="^(pending|success|failed)$")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    db = _db(request)
    rows = await db.list_tool_invocations(tool_name=tool_name, status=status, limit=limit, offset=offset)
    return {"invocations": [row.model_dump(mode="json") for row in rows], "count": len(rows)}


@router.get("/v1/invocations/{invocation_id}", tags=["tools"])
async def get_invocation(invocation_id: str, request: Request) -> dict[str, Any]:
    db = _db(request)
    return (await db.get_tool_invocation(invocation_id)).model_dump(mode="json")


# -- upstream: human requests -----------------------------------------------------------------------


@router.post("/v1/human/requests", status_code=201, tags=["human"])
async def create_human_request(body: HumanRequestIn, request: Request) -> HumanRequestOut:
    human = HumanRequest(
        id=body.id,
        request_type=body.request_type,
        prompt=body.prompt,
        options=body.options,
        context=body.context,
        timeout_seconds=body.timeout_seconds,
        correlation_id=_correlation(request, body.correlation_id),
    )
    db = _db(request)
    await db.create_human_request(human)
    HTTP.hitl.labels(body.request_type, "created").inc()
    return human_request_out(human)


@router.get("/v1/human/requests", tags=["human"])
async def list_human_requests(
    request: Request,
    status: Annotated[str | None, Query(pattern="^(pending|responded|expired|cancelled)$")] = None,
    request_type: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    db = _db(request)
    rows = await db.list_human_requests(status=status, request_type=request_type, limit=limit, offset=offset)
    return {"requests": [row.model_dump(mode="json") for row in rows], "count": len(rows)}


@router.get("/v1/human/requests/{request_id:path}", tags=["human"])
async def get_human_request(request_id: str, request: Request) -> dict[str, Any]:
    db = _db(request)
    human = await db.get_human_request(request_id)
    if human.status == HumanRequestStatus.PENDING and human.expired():
        await db.expire_due_human_requests()
        human = await db.get_human_request(request_id)
    answer = await db.get_human_response(request_id)
    return {
        "request": human.model_dump(mode="json"),
        "response": answer.model_dump(mode="json") if answer else None,
    }


@router.post("/v1/human/responses", status_code=201, tags=["human"])
async def submit_human_response(body: HumanResponseIn, request: Request) -> HumanResponseOut:
    state = _state(request)
    db = _db(request)
    human, answer = await db.answer_human_request(
        body.request_id, body.response, responded_by=body.responded_by, metadata=body.response_metadata
    )
    HTTP.hitl.labels(human.request_type, "responded").inc()
    await state.runs.answered(human)  # a run's gate: the paused run goes on here
    return human_response_out(answer)


# -- agents -----------------------------------------------------------------------------------------


@router.get("/v1/agents", tags=["agents"])
async def list_agents(request: Request) -> dict[str, Any]:
    db = _db(request)
    agents = await db.list_agents()
    return {"agents": [a.definition() for a in agents], "count": len(agents)}


@router.post("/v1/agents", status_code=201, tags=["agents"])
async def create_agent(body: AgentBody, request: Request) -> dict[str, Any]:
    defined = await define.create_agent(_db(request), AgentSpec(**body.model_dump()), caller(request))
    return defined.agent.definition()


@router.get("/v1/agents/{name}", tags=["agents"])
async def get_agent(name: str, request: Request) -> dict[str, Any]:
    db = _db(request)
    return (await db.get_agent(name)).definition()


@router.put("/v1/agents/{name}", tags=["agents"])
async def put_agent(name: str, body: AgentBody, request: Request) -> dict[str, Any]:
    if body.name != name:
        raise InvalidConfigError(f"the body names agent {body.name!r}, the path {name!r}")
    defined = await define.put_agent(_db(request), AgentSpec(**body.model_dump()), caller(request))
    return defined.agent.definition()


@router.delete("/v1/agents/{name}", status_code=204, tags=["agents"])
async def delete_agent(name: str, request: Request) -> None:
    await define.delete_agent(_db(request), name, caller(request))


# -- topologies -------------------------------------------------------------------------------------


async def _topology_out(db: Database, topology: Topology, agents: dict[str, AgentType]) -> dict[str, Any]:
    return topology.definition() | {"agents": {slot: agent.name for slot, agent in agents.items()}}


@router.get("/v1/topologies", tags=["topologies"])
async def list_topologies(request: Request) -> dict[str, Any]:
    db = _db(request)
    found = [await db.get_topology(t.name) for t, _ in await db.list_topologies()]
    items = [await _topology_out(db, topology, agents) for topology, agents in found]
    return {"topologies": items, "count": len(items)}


@router.post("/v1/topologies", status_code=201, tags=["topologies"])
async def create_topology(body: TopologyBody, request: Request) -> dict[str, Any]:
    defined = await define.create_topology(_db(request), TopologySpec(**body.model_dump()), caller(request))
    return defined.definition()


@router.get("/v1/topologies/{name}", tags=["topologies"])
async def get_topology(name: str, request: Request) -> dict[str, Any]:
    db = _db(request)
    topology, agents = await db.get_topology(name)
    return await _topology_out(db, topology, agents)


@router.put("/v1/topologies/{name}", tags=["topologies"])
async def put_topology(name: str, body: TopologyBody, request: Request) -> dict[str, Any]:
    if body.name != name:
        raise InvalidConfigError(f"the body names topology {body.name!r}, the path {name!r}")
    defined = await define.put_topology(_db(request), TopologySpec(**body.model_dump()), caller(request))
    return defined.definition()


@router.delete("/v1/topologies/{name}", status_code=204, tags=["topologies"])
async def delete_topology(name: str, request: Request, force: bool = False) -> None:
    """`force`: delete it although executions ran it (they keep their snapshot of the team)."""
    await define.delete_topology(_db(request), name, caller(request), force=force)


@router.get("/v1/topologies/{name}/dag", tags=["topologies"])
async def topology_graph(name: str, request: Request) -> dict[str, Any]:
    db = _db(request)
    topology, agents = await db.get_topology(name)
    teams = await collect_teams(db, topology)
    return topology_dag(topology, agents, teams).to_dict()


@router.post("/v1/topologies/{name}/run", status_code=202, tags=["topologies"])
async def run_topology(name: str, body: RunBody, request: Request) -> RunAccepted:
    config = dict(body.config)
    if (correlation := _correlation(request)) and "correlation_id" not in config:
        config["correlation_id"] = correlation
    execution = await _state(request).runs.submit(
        RunRequest(name, body.input, body.runner, config), caller(request), trace=request.headers
    )
    return RunAccepted(execution_id=str(execution.id), status=str(execution.status))


# -- executions -------------------------------------------------------------------------------------


@router.get("/v1/executions", tags=["executions"])
async def list_executions(
    request: Request,
    status: str | None = None,
    topology: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    try:
        wanted = ExecutionStatus(status) if status else None
    except ValueError:
        raise InvalidConfigError(
            f"unknown status {status!r}; choose one of: {', '.join(s.value for s in ExecutionStatus)}"
        ) from None
    db = _db(request)
    rows = await db.list_executions(status=wanted, topology_name=topology, limit=limit, offset=offset)
    total = await db.count_executions(status=wanted, topology_name=topology)
    return {
        "executions": [ExecutionOut.of(e).model_dump(mode="json") for e in rows],
        "count": len(rows),
        "total": total,
    }


@router.get("/v1/executions/{execution_id}", tags=["executions"])
async def get_execution(execution_id: str, request: Request) -> ExecutionOut:
    db = _db(request)
    execution = await db.get_execution(execution_id)
    return ExecutionOut.of(execution, full=True)


@router.get("/v1/executions/{execution_id}/steps", tags=["executions"])
async def get_steps(execution_id: str, request: Request) -> dict[str, Any]:
    db = _db(request)
    execution = await db.get_execution(execution_id)
    steps = await db.list_steps(execution.id)
    return {"steps": [StepOut.of(step).model_dump(mode="json") for step in steps], "count": len(steps)}


@router.get("/v1/executions/{execution_id}/events", tags=["executions"])
async def stream_events(execution_id: str, request: Request) -> StreamingResponse:
    state = _state(request)
    db = _db(request)
    execution = await db.get_execution(execution_id)  # 404 before the stream starts
    return StreamingResponse(
        execution_events(_db(request), state.hub, execution.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/v1/executions/{execution_id}/resume", status_code=202, tags=["executions"])
async def resume_execution(execution_id: str, request: Request) -> RunAccepted:
    execution = await _state(request).runs.resume(execution_id, caller(request), trace=request.headers)
    return RunAccepted(execution_id=str(execution.id), status=str(execution.status))


@router.post("/v1/executions/{execution_id}/cancel", tags=["executions"])
async def cancel_execution(execution_id: str, request: Request) -> ExecutionOut:
    """Cancel at once what nobody runs; ask a running execution's owner to stop (the answer says
    `running` while it has not yet)."""
    return ExecutionOut.of(await _state(request).runs.cancel(execution_id))
