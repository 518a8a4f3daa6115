"""`/openapi.json` tells the truth: every error a route can answer is a `Problem` (problem+json), every
2xx has a schema, the event stream is Server-Sent Events, and the shapes cannot drift from the rows
they show. (test_openapi_fuzz.py checks the answers against it; test_openapi_client.py generates a
client from it.)"""

from __future__ import annotations

from typing import Any

import pytest
from team import PROBLEM, make_team

from qmcp.agentframework.models import HumanRequest, HumanResponse, ToolInvocation
from qmcp.server.api._schemas import HumanRequestRowOut, HumanResponseRowOut, InvocationOut

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture
async def document(start_app, sqlite_url) -> dict[str, Any]:
    server = await start_app(sqlite_url)
    answer = await server.client.get("/openapi.json")
    assert answer.status_code == 200
    return dict(answer.json())


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()]


async def test_every_error_is_documented_as_a_problem(document):
    assert "HTTPValidationError" not in document["components"]["schemas"]
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    for path, method, operation in _operations(document):
        errors = {status: r for status, r in operation["responses"].items() if int(status) >= 400}
        for status, response in errors.items():
            assert response["content"] == {PROBLEM: {"schema": PROBLEM_REF}}, (method, path, status)
        # What every request can meet, from the middleware and the error handlers:
        assert {"421", "500"} <= set(errors), (method, path)
        assert ("401" in errors) == (path != "/health"), (method, path)
        assert ("403" in errors) >= (method in ("post", "put", "delete")), (method, path)
        assert ("413" in errors) == ("requestBody" in operation), (method, path)
        if operation.get("parameters") or "requestBody" in operation:
            assert "422" in errors, (method, path)
        if "{" in path and method != "put":  # a PUT creates what it does not find
            assert "404" in errors, (method, path)


async def test_every_success_has_a_schema(document):
    for path, method, operation in _operations(document):
        ok = {status: r for status, r in operation["responses"].items() if status.startswith("2")}
        if path == "/v1/executions/{execution_id}/events":  # a reconnect that has the end gets a 204
            assert set(ok) == {"200", "204"} and "content" not in ok.pop("204"), ok
        assert len(ok) == 1, (method, path)
        ((status, response),) = ok.items()
        if status == "204":
            assert "content" not in response, (method, path)
            continue
        ((media_type, content),) = response["content"].items()
        assert content["schema"] not in (
            {},
            {"type": "object"},
            {"additionalProperties": True, "type": "object"},
        ) or (path == "/metrics/json"), (method, path, content)
        expected = {"/metrics": "text/plain", "/v1/executions/{execution_id}/events": "text/event-stream"}
        assert media_type == expected.get(path, "application/json"), (method, path)


async def test_the_event_stream_is_documented_as_server_sent_events(document):
    responses = document["paths"]["/v1/executions/{execution_id}/events"]["get"]["responses"]
    stream = responses["200"]["content"]["text/event-stream"]
    text, event = stream["schema"]["anyOf"]  # the body (text), or each of its events, as tools read it
    assert text == {"type": "string"} and set(event["properties"]) == {"event", "data", "id", "retry"}
    assert "429" in responses


async def test_operations_are_named_after_their_routes(document):
    names = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(set(names)) == len(names)
    assert {"get_execution", "run_topology", "stream_events", "post_agent", "submit_human_response"} <= set(
        names
    )


async def test_no_operation_takes_the_callers_door_from_the_query(document):
    """The door a request came through is the server's to say: it was a query parameter of every route
    that depends on the caller, so `?door=cli` recorded a server run as the CLI's."""
    for path, method, operation in _operations(document):
        assert "door" not in {p["name"] for p in operation.get("parameters", [])}, (method, path)


async def test_a_run_asked_as_another_door_is_the_servers(start_app, db_url):
    server = await start_app(db_url)
    await make_team(server.client)
    started = await server.client.post(
        "/v1/topologies/plan-write/run", params={"door": "cli"}, json={"input": {"prompt": "hi"}}
    )
    assert started.status_code == 202, started.text
    execution = (await server.client.get(f"/v1/executions/{started.json()['execution_id']}")).json()
    assert execution["origin"] == "server"


@pytest.mark.parametrize(
    ("shape", "row"),
    [
        (HumanRequestRowOut, HumanRequest),
        (HumanResponseRowOut, HumanResponse),
        (InvocationOut, ToolInvocation),
    ],
)
def test_row_shapes_name_every_field_of_their_row(shape, row):
    """A response model drops the fields it does not name: the row's shape names them all."""
    assert set(shape.model_fields) == set(row.model_fields)


async def test_a_topology_naming_an_unknown_agent_is_a_documented_404(start_app, db_url):
    """Schemathesis found it: a 404 the document did not list (the generated client returned None)."""
    server = await start_app(db_url)
    team = {"name": "lost", "type": "pipeline", "agents": {"plan": "nobody"}}
    for answer in (
        await server.client.post("/v1/topologies", json=team),
        await server.client.put("/v1/topologies/lost", json=team),
    ):
        assert answer.status_code == 404 and answer.headers["content-type"] == PROBLEM, answer.text
        assert "'nobody' not found" in answer.json()["detail"]
    paths = (await server.client.get("/openapi.json")).json()["paths"]
    assert "404" in paths["/v1/topologies"]["post"]["responses"]
    assert "404" in paths["/v1/topologies/{name}"]["put"]["responses"]


async def test_a_method_not_allowed_names_the_allowed_ones(start_app, sqlite_url):
    """Schemathesis found it: a 405 without the `Allow` header HTTP requires (the problem handler dropped it)."""
    server = await start_app(sqlite_url)
    answer = await server.client.patch("/v1/agents")
    assert answer.status_code == 405 and answer.headers["content-type"] == PROBLEM
    assert set(answer.headers["allow"].split(", ")) == {"GET", "POST"}
