"""What every route depends on, as FastAPI dependencies: the server's state, its open database and the
caller. Tests swap them with `app.dependency_overrides`."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import Match, Route
from starlette.types import Scope

from ...agentframework.store import MAX_OFFSET, Database
from ...app import Caller, Door
from ..events import EventHub, StreamLimits
from ..runs import RunManager

__all__ = [
    "Db",
    "FiniteJsonRoute",
    "Limit",
    "Offset",
    "PlainRoute",
    "Remote",
    "ServerState",
    "State",
    "caller",
    "correlation",
]


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
    streams: StreamLimits = field(default_factory=StreamLimits)
    """The event streams open now, against their caps."""


# The dependencies are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a
# round trip to a worker thread on every request (a third of a `GET /v1/executions/{id}`).


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.qmcp
    return state


async def server_state(request: Request) -> ServerState:
    return _state(request)


async def database(request: Request) -> Database:
    return open_database(request)


def open_database(request: Request) -> Database:
    """The server's open database (`Db` without FastAPI: `PlainRoute`'s endpoints)."""
    db = _state(request).db
    assert db is not None, "the server's lifespan opens the database"
    return db


def caller(request: Request, door: Door = Door.HTTP) -> Caller:
    """Whoever sent `request`: a remote client (the middleware let it in; with the token if the server
    has one). Never the operator."""
    return Caller.client(door, authenticated=_state(request).api_token is not None)


async def remote(request: Request) -> Caller:
    """`caller` as a dependency of the API's routes: the door is the API's (were it `caller`'s parameter,
    FastAPI would read it from the query, and a client could name itself another door)."""
    return caller(request)


def correlation(request: Request, given: str | None = None) -> str | None:
    """The request's correlation id: the body's, else the `X-Correlation-ID` header's."""
    return given or request.scope.get("state", {}).get("correlation_id")


State = Annotated[ServerState, Depends(server_state)]
Db = Annotated[Database, Depends(database)]
Remote = Annotated[Caller, Depends(remote)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def _not_json(constant: str) -> Any:
    raise ValueError(constant)


class _FiniteJsonRequest(Request):
    """A request whose JSON body may not hold NaN, Infinity or -Infinity (Python's parser takes them)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body, parse_constant=_not_json)
            except json.JSONDecodeError:
                raise
            except UnicodeDecodeError as error:
                raise json.JSONDecodeError(str(error), body.decode(errors="replace"), 0) from None
            except ValueError as error:  # `_not_json`
                raise json.JSONDecodeError(
                    f"{error} is not JSON (NaN or Infinity); send null or a string",
                    body.decode(errors="replace"),
                    0,
                ) from None
        return self._json


class FiniteJsonRoute(APIRoute):
    """Every API route parses bodies as strict JSON: NaN and Infinity are a 422 on every database
    (PostgreSQL refuses them, SQLite would store them), before any field sees them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_FiniteJsonRequest(request.scope, request.receive))

        return strict


class PlainRoute(Route):
    """`documented`, served by Starlette alone: `endpoint(request)` answers, without FastAPI's request
    handling (solving the parameters and dependencies, about 100 µs of a 250 µs
    `GET /v1/executions/{id}`). For a hot read whose only parameter is its path's.

    The route answers as `documented` does: the same path, methods (no HEAD added) and name; the app's
    middleware and exception handlers; `scope["route"]` set, which the metrics label requests by. The
    OpenAPI document keeps `documented` (`install_openapi` takes the routes before they are swapped).
    `app.dependency_overrides` do not reach it."""

    def __init__(
        self, documented: APIRoute, endpoint: Callable[[Request], Coroutine[Any, Any, Response]]
    ) -> None:
        methods = set(documented.methods or ())
        super().__init__(documented.path, endpoint, methods=sorted(methods), name=documented.name)
        self.methods = methods  # Starlette adds HEAD to GET; FastAPI's route has none
        self.documented = documented

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self  # as FastAPI's routes do: the metrics' label (`path_format`)
        return match, child_scope
