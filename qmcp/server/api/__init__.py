"""The HTTP API, one router per resource: upstream's tool server (health, metrics, tools,
invocations, human requests) and the orchestration of agents, topologies and executions. Each
route is a thin adapter: parse, call one `qmcp.app` operation with the remote `Caller`, render."""

from fastapi import APIRouter

from . import _agents, _executions, _human, _server, _tools, _topologies
from ._deps import ServerState, caller

__all__ = ["ServerState", "caller", "router"]

router = APIRouter()
for _resource in (_server, _tools, _human, _agents, _topologies, _executions):
    # The routes themselves, not `include_router`: each level of inclusion matches the request's path
    # against every route below it again (about a third of a `GET /v1/executions/{id}`). Included
    # without a prefix or dependencies, a resource's routes are complete as they are.
    router.routes.extend(_resource.router.routes)
