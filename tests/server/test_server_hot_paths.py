"""What the hot requests skip stays invisible: the routes clients poll are matched first with the same
answers, the OpenAPI document keeps its declared order, and the execution read is the model's JSON
(issue 24)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from _eventually import eventually_async
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from qmcp.agentframework.store import Database
from qmcp.app import ExecutionOut
from qmcp.server import ServerOptions, create_app
from qmcp.server._app import HOT_PREFIXES, hot_first
from qmcp.server.api._deps import PlainRoute


async def _ok() -> None:
    return None


def _paths(routes: list) -> list[str]:
    return [route.path for route in routes]


def test_hot_routes_are_tried_first_and_the_document_keeps_its_order(tmp_path):
    app = create_app(ServerOptions.from_settings(db_url=f"sqlite+aiosqlite:///{tmp_path / 'q.db'}"))
    paths = [getattr(route, "path", "") for route in app.router.routes]
    assert paths.index("/v1/executions/{execution_id}") < 5
    assert paths.index("/v1/topologies/{name}/run") < paths.index("/health")
    documented = list(app.openapi()["paths"])
    assert documented.index("/health") < documented.index("/v1/topologies/{name}/run")
    assert documented.index("/v1/topologies/{name}/run") < documented.index("/v1/executions/{execution_id}")
    assert set(HOT_PREFIXES) == {"/v1/executions", "/v1/topologies"}


def test_a_group_never_jumps_a_route_that_could_match_its_paths():
    early = Route("/v1/{anything}", _ok)  # could match /v1/executions
    hot = Route("/v1/executions/{id}", _ok)
    routes = [Route("/health", _ok), early, hot, Route("/v1/other", _ok)]
    assert hot_first(routes, ("/v1/executions",)) == routes  # left where it was
    mounted = Mount("/", routes=[])  # a mount or a router before the group: any path
    assert hot_first([mounted, hot], ("/v1/executions",)) == [mounted, hot]
    free = [Route("/health", _ok), Route("/v1/tools", _ok), hot, Route("/v1/executions", _ok)]
    assert _paths(hot_first(free, ("/v1/executions",))) == [
        "/v1/executions/{id}",
        "/v1/executions",
        "/health",
        "/v1/tools",
    ]


async def test_an_execution_reads_as_its_model_serialises_it(start_app, db_url):
    server = await start_app(db_url, model="test")
    client = server.client
    assert (await client.post("/v1/agents", json={"name": "w", "role": "writer"})).status_code < 300
    assert (
        await client.post("/v1/topologies", json={"name": "p", "type": "pipeline", "agents": {"a": "w"}})
    ).status_code < 300
    started = await client.post("/v1/topologies/p/run", json={"input": {"prompt": "x"}})
    assert started.status_code == 202, started.text
    answer = await client.get(f"/v1/executions/{started.json()['execution_id']}")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    shown = ExecutionOut.model_validate_json(answer.content)
    assert answer.content == shown.model_dump_json().encode()
    missing = await client.get(f"/v1/executions/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


async def test_the_execution_read_is_a_plain_route_that_answers_as_the_documented_one(start_app, db_url):
    """`GET /v1/executions/{id}` is served without FastAPI's parameter solving (`PlainRoute`), and
    answers as its documented FastAPI route: the middleware's refusals, the metrics' label, its methods."""
    token = "t" * 40
    server = await start_app(db_url, model="test", token=token)
    app, client = server.app, server.client
    (served,) = [r for r in app.router.routes if getattr(r, "path", "") == "/v1/executions/{execution_id}"]
    assert isinstance(served, PlainRoute) and isinstance(served.documented, APIRoute)
    assert served.name == "get_execution" and served.methods == {"GET"}
    schema = app.openapi()["paths"]["/v1/executions/{execution_id}"]["get"]["responses"]["200"]
    assert schema["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ExecutionOut"}
    assert (await client.post("/v1/agents", json={"name": "w", "role": "writer"})).status_code < 300
    topology = {"name": "p", "type": "pipeline", "agents": {"a": "w"}}
    assert (await client.post("/v1/topologies", json=topology)).status_code < 300
    started = await client.post("/v1/topologies/p/run", json={"input": {"prompt": "x"}})
    path = f"/v1/executions/{started.json()['execution_id']}"

    async def ended() -> bool:
        return (await client.get(path)).json()["status"] == "completed"

    await eventually_async(ended, "the run to end")
    documented = await served.documented.endpoint(started.json()["execution_id"], app.state.qmcp.db)
    answer = await client.get(path, headers={"X-Correlation-ID": "c-1"})
    assert answer.status_code == 200 and answer.content == documented.body
    assert answer.headers["x-correlation-id"] == "c-1" and len(answer.headers["x-request-id"]) == 32
    assert (await client.get(path, headers={"Authorization": ""})).status_code == 401
    assert (await client.get(path, headers={"Host": "evil.example"})).status_code == 421
    head = await client.head(path)
    assert (head.status_code, head.headers.get("allow")) == (405, "GET")
    missing = await client.get(f"/v1/executions/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    metrics = (await client.get("/metrics")).text
    assert (
        'qmcp_http_requests_total{method="GET",path="/v1/executions/{execution_id}",status="200"}' in metrics
    )


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("PUT", "/v1/executions/prune", 405, "GET, POST"),
        ("DELETE", "/v1/executions/abc", 405, "GET"),
        ("PATCH", "/v1/topologies/x/run", 405, "POST"),
        ("GET", "/v1/nothing", 404, None),
    ],
)
async def test_unmatched_requests_are_answered_as_before_the_reordering(
    start_app, db_url, method, path, status, allow
):
    server = await start_app(db_url, model="test")
    answer = await server.client.request(method, path)
    assert (answer.status_code, answer.headers.get("allow")) == (status, allow)


async def test_the_execution_read_leaves_the_team_snapshots_unread(start_app, db_url, monkeypatch):
    """`GET /v1/executions/{id}` shows no snapshot, so it does not decode them at every poll."""
    asked: list[bool] = []
    read = Database.get_execution

    async def spy(self: Database, execution_id: Any, *, snapshots: bool = True) -> Any:
        asked.append(snapshots)
        return await read(self, execution_id, snapshots=snapshots)

    server = await start_app(db_url, model="test")
    client = server.client
    assert (await client.post("/v1/agents", json={"name": "w", "role": "writer"})).status_code < 300
    topology = {"name": "p", "type": "pipeline", "agents": {"a": "w"}}
    assert (await client.post("/v1/topologies", json=topology)).status_code < 300
    started = await client.post("/v1/topologies/p/run", json={"input": {"prompt": "x"}})
    path = f"/v1/executions/{started.json()['execution_id']}"

    async def ended() -> bool:  # the run's own reads are over
        return (await client.get(path)).json()["status"] == "completed"

    await eventually_async(ended, "the run to end")
    monkeypatch.setattr(Database, "get_execution", spy)
    answer = await client.get(path)
    assert answer.status_code == 200 and answer.json()["id"] == started.json()["execution_id"]
    assert asked == [False]
