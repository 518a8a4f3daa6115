"""The HTTP API, one router per resource: upstream's tool server (health, metrics, tools,
invocations, human requests) and the orchestration of agents, topologies and executions. Each
route is a thin adapter: parse, call one `qmcp.app` operation with the remote `Caller`, render."""

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from . import _agents, _evals, _executions, _human, _server, _tools, _topologies
from ._deps import PlainRoute, ServerState, caller

__all__ = ["ServerState", "caller", "plain_hot_reads", "router"]


def _operation_id(route: APIRoute) -> str:
    """An operation is named after its route's function (`get_execution`), which a generated client's
    functions and modules are named after (FastAPI's default appends the path and the method)."""
    return route.name


router = APIRouter(generate_unique_id_function=_operation_id)
for _resource in (_server, _tools, _human, _agents, _topologies, _executions, _evals):
    # The routes themselves, not `include_router`: each level of inclusion matches the request's path
    # against every route below it again (about a third of a `GET /v1/executions/{id}`). Included
    # without a prefix or dependencies, a resource's routes are complete as they are.
    for _route in _resource.router.routes:
        if isinstance(_route, APIRoute):
            _route.operation_id = _route.operation_id or _operation_id(_route)
        router.routes.append(_route)


_PLAIN = {_executions.get_execution: _executions.read_execution}
"""The hot reads served as `PlainRoute`s: their documented endpoint, and the one that serves it."""


def plain_hot_reads(routes: list[BaseRoute]) -> list[BaseRoute]:
    """`routes` with the hot reads' FastAPI routes swapped for their `PlainRoute`s."""
    return [
        PlainRoute(route, _PLAIN[route.endpoint])
        if isinstance(route, APIRoute) and route.endpoint in _PLAIN
        else route
        for route in routes
    ]
