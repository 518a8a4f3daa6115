"""What the hot requests skip stays invisible: the routes clients poll are matched first with the same
answers, the OpenAPI document keeps its declared order, and the execution read is the model's JSON
(issue 24)."""

from __future__ import annotations

import uuid

import pytest
from starlette.routing import Mount, Route

from qmcp.app import ExecutionOut
from qmcp.server import ServerOptions, create_app
from qmcp.server._app import HOT_PREFIXES, hot_first


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
