"""What every route depends on, as FastAPI dependencies: the server's state, its open database and the
caller. Tests swap them with `app.dependency_overrides`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Query, Request

from ...agentframework.store import Database
from ...app import Caller, Door
from ..events import EventHub, StreamLimits
from ..runs import RunManager

__all__ = ["Db", "Limit", "Offset", "Remote", "ServerState", "State", "caller", "correlation"]


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


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.qmcp
    return state


def database(request: Request) -> Database:
    db = server_state(request).db
    assert db is not None, "the server's lifespan opens the database"
    return db


def caller(request: Request, door: Door = Door.HTTP) -> Caller:
    """Whoever sent `request`: a remote client (the middleware let it in; with the token if the server
    has one). Never the operator."""
    return Caller.client(door, authenticated=server_state(request).api_token is not None)


def correlation(request: Request, given: str | None = None) -> str | None:
    """The request's correlation id: the body's, else the `X-Correlation-ID` header's."""
    return given or request.scope.get("state", {}).get("correlation_id")


State = Annotated[ServerState, Depends(server_state)]
Db = Annotated[Database, Depends(database)]
Remote = Annotated[Caller, Depends(caller)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0)]
