"""The server in-process (its lifespan entered, requests through httpx's ASGI transport) over a
database holding one small team."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from qmcp.agentframework.models import AgentRole, AgentType, Topology, TopologyType
from qmcp.agentframework.store import Database
from qmcp.server import ServerOptions, create_app


@pytest.fixture
def store_team() -> Callable[..., Any]:
    """`await store_team(db_url, model=..., name=...)`: a two-stage pipeline whose agents run on `model`."""
    return _store_team


async def _store_team(db_url: str, *, model: str = "test", name: str = "review") -> None:
    agents = {
        "plan": AgentType(name="planner", role=AgentRole.PLANNER, config={"model": model}),
        "write": AgentType(name="writer", role=AgentRole.SPECIALIST, config={"model": model}),
    }
    async with Database(db_url) as db:
        await db.save_team(Topology(name=name, topology_type=TopologyType.PIPELINE, config={}), agents)


Served = tuple[Any, httpx.AsyncClient]


@pytest.fixture
def serve() -> Callable[..., contextlib.AbstractAsyncContextManager[Served]]:
    """`async with serve(db_url, **ServerOptions fields) as (app, client)`."""

    @contextlib.asynccontextmanager
    async def serving(db_url: str, **options: Any) -> AsyncIterator[Served]:
        app = create_app(ServerOptions.from_settings(db_url=db_url, resume_interrupted=False, **options))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:3333", timeout=30
            ) as client,
        ):
            yield app, client

    return serving
