"""Topologies: define (over `qmcp.app`'s operations), their DAG, and runs started under the caller policy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ...agentframework.errors import InvalidConfigError
from ...agentframework.models import AgentType, Topology
from ...app import (
    RunAccepted,
    RunRequest,
    TopologySpec,
    create_topology,
    delete_topology,
    list_topologies,
    put_topology,
    topology_graph,
)
from ..problems import problems
from ._deps import Db, FiniteJsonRoute, Remote, State, correlation
from ._schemas import DagOut, RunBody, TopologyBody, TopologyDefinitionOut, TopologyListOut, TopologyOut

router = APIRouter(tags=["topologies"], route_class=FiniteJsonRoute)

_NO_AGENT = "An agent (or a compound's topology) the definition names does not exist"


def _out(topology: Topology, agents: dict[str, AgentType]) -> dict[str, Any]:
    return topology.definition() | {"agents": {slot: agent.name for slot, agent in agents.items()}}


@router.get("/v1/topologies", response_model=TopologyListOut, responses=problems(503))
async def get_topologies(db: Db) -> dict[str, Any]:
    items = [_out(topology, agents) for topology, agents in await list_topologies(db)]
    return {"topologies": items, "count": len(items)}


@router.post(
    "/v1/topologies",
    status_code=201,
    response_model=TopologyDefinitionOut,
    responses=problems(400, 403, 409, 422, 503, described={404: _NO_AGENT}),
)
async def post_topology(body: TopologyBody, db: Db, caller: Remote) -> dict[str, Any]:
    return (await create_topology(db, TopologySpec(**body.model_dump()), caller)).definition()


@router.get("/v1/topologies/{name}", response_model=TopologyOut, responses=problems(404, 503))
async def get_topology(name: str, db: Db) -> dict[str, Any]:
    return _out(*await db.get_topology(name))


@router.put(
    "/v1/topologies/{name}",
    response_model=TopologyDefinitionOut,
    responses=problems(400, 403, 422, 503, described={404: _NO_AGENT}),
)
async def replace_topology(name: str, body: TopologyBody, db: Db, caller: Remote) -> dict[str, Any]:
    if body.name != name:
        raise InvalidConfigError(f"the body names topology {body.name!r}, the path {name!r}")
    return (await put_topology(db, TopologySpec(**body.model_dump()), caller)).definition()


@router.delete("/v1/topologies/{name}", status_code=204, responses=problems(400, 403, 404, 409, 422, 503))
async def remove_topology(name: str, db: Db, caller: Remote, force: bool = False) -> None:
    """`force`: delete it although executions ran it (they keep their snapshot of the team)."""
    await delete_topology(db, name, caller, force=force)


@router.get(
    "/v1/topologies/{name}/dag",
    response_model=DagOut,
    response_model_exclude_none=True,
    responses=problems(400, 404, 503),
)
async def topology_dag(name: str, db: Db) -> dict[str, Any]:
    return (await topology_graph(db, name)).to_dict()


@router.post(
    "/v1/topologies/{name}/run", status_code=202, responses=problems(400, 403, 404, 409, 422, 429, 503)
)
async def run_topology(
    name: str, body: RunBody, request: Request, state: State, caller: Remote
) -> RunAccepted:
    config = dict(body.config)
    if (given := correlation(request)) and "correlation_id" not in config:
        config["correlation_id"] = given
    execution = await state.runs.submit(
        RunRequest(name, body.input, body.runner, config), caller, trace=request.headers
    )
    return RunAccepted(execution_id=str(execution.id), status=str(execution.status))
