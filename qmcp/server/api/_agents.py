"""Agents: thin adapters over `qmcp.app`'s define operations (the CLI's and `apply`'s checks)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ...agentframework.errors import InvalidConfigError
from ...app import AgentSpec, create_agent, delete_agent, put_agent
from ..problems import problems
from ._deps import Db, FiniteJsonRoute, Remote
from ._schemas import AgentBody, AgentListOut, AgentOut

router = APIRouter(tags=["agents"], route_class=FiniteJsonRoute)


@router.get("/v1/agents", response_model=AgentListOut, responses=problems(503))
async def list_agents(db: Db) -> dict[str, Any]:
    agents = await db.list_agents()
    return {"agents": [a.definition() for a in agents], "count": len(agents)}


@router.post(
    "/v1/agents", status_code=201, response_model=AgentOut, responses=problems(400, 403, 409, 422, 503)
)
async def post_agent(body: AgentBody, db: Db, caller: Remote) -> dict[str, Any]:
    return (await create_agent(db, AgentSpec(**body.model_dump()), caller)).agent.definition()


@router.get("/v1/agents/{name}", response_model=AgentOut, responses=problems(404, 503))
async def get_agent(name: str, db: Db) -> dict[str, Any]:
    return (await db.get_agent(name)).definition()


@router.put("/v1/agents/{name}", response_model=AgentOut, responses=problems(400, 403, 422, 503))
async def replace_agent(name: str, body: AgentBody, db: Db, caller: Remote) -> dict[str, Any]:
    if body.name != name:
        raise InvalidConfigError(f"the body names agent {body.name!r}, the path {name!r}")
    return (await put_agent(db, AgentSpec(**body.model_dump()), caller)).agent.definition()


@router.delete("/v1/agents/{name}", status_code=204, responses=problems(400, 403, 404, 409, 503))
async def remove_agent(name: str, db: Db, caller: Remote) -> None:
    await delete_agent(db, name, caller)
