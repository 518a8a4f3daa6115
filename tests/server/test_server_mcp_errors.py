"""How MCP tools fail, with the official SDK's client over /mcp (in this process): a domain error is a
tool error in the sentence HTTP gives as `detail`, a bad argument one line naming it (enums checked
against their lists), an unknown tool a JSON-RPC error; none of them logs a traceback. They reached
clients as "Error executing tool run_topology", with the reason in tracebacks on stderr."""

from __future__ import annotations

import logging
import uuid
from typing import Any, get_args

import pytest
from mcp_sessions import error_text, in_process_session, payload
from team import make_team

from qmcp.agentframework.models import HumanRequestStatus
from qmcp.server._mcp import RequestStatus, Runner

UNKNOWN = str(uuid.UUID(int=0))


async def _http_detail(client: Any, method: str, url: str, body: Any = None) -> str:
    response = await client.request(method, url, json=body)
    assert 400 <= response.status_code < 500, response.text
    return str(response.json()["detail"])


@pytest.fixture
async def served(start_app, db_url, doubles):
    """The app with the server tests' team (an MCP session is opened by each test: the SDK's client
    lives in one task, and a fixture is set up and torn down in two)."""
    server = await start_app(db_url)
    await make_team(server.client)
    return server


async def test_every_domain_error_is_a_tool_error_in_the_sentence_http_gives(served, caplog):
    async with in_process_session(served.app) as session:
        await _domain_errors(served.client, session, caplog)


async def _domain_errors(client: Any, session: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    run = "/v1/topologies/{}/run"
    cases: list[tuple[str, dict[str, Any], str, str, Any]] = [
        ("run_topology", {"name": "nope", "input": {}}, "POST", run.format("nope"), {"input": {}}),
        (
            "run_topology",
            {"name": "plan-write", "input": {}, "config": {"bogus": 1}},
            "POST",
            run.format("plan-write"),
            {"input": {}, "config": {"bogus": 1}},
        ),
        (
            "run_topology",
            {"name": "plan-write", "input": {}, "config": {"model_override": "local:/etc/passwd"}},
            "POST",
            run.format("plan-write"),
            {"input": {}, "config": {"model_override": "local:/etc/passwd"}},
        ),
        (
            "run_topology",
            {"name": "plan-write", "input": {}, "config": {"output_dir": "/tmp/x"}},
            "POST",
            run.format("plan-write"),
            {"input": {}, "config": {"output_dir": "/tmp/x"}},
        ),
        ("get_execution", {"execution_id": "not-a-uuid"}, "GET", "/v1/executions/not-a-uuid", None),
        ("get_execution", {"execution_id": UNKNOWN}, "GET", f"/v1/executions/{UNKNOWN}", None),
        (
            "respond_to_human_request",
            {"request_id": "nope", "response": "yes"},
            "POST",
            "/v1/human/responses",
            {"request_id": "nope", "response": "yes"},
        ),
    ]
    for tool, arguments, method, url, body in cases:
        expected = await _http_detail(client, method, url, body)
        assert error_text(await session.call_tool(tool, arguments)) == expected, (tool, arguments)

    paused = payload(await session.call_tool("run_topology", {"name": "gated", "input": {"prompt": "Go"}}))
    assert paused["status"] == "paused"
    (request,) = payload(await session.call_tool("list_human_requests", {}))
    outside = {"request_id": request["id"], "response": "maybe"}
    expected = await _http_detail(client, "POST", "/v1/human/responses", outside)
    assert "approve" in expected and "maybe" in expected
    assert error_text(await session.call_tool("respond_to_human_request", outside)) == expected
    answer = {"request_id": request["id"], "response": "approve"}
    assert payload(await session.call_tool("respond_to_human_request", answer))["response"] == "approve"
    again = error_text(await session.call_tool("respond_to_human_request", answer))
    assert again == await _http_detail(client, "POST", "/v1/human/responses", answer)

    texts = [error_text(await session.call_tool(tool, arguments)) for tool, arguments, *_ in cases]
    assert not any("Error executing tool" in text or "\n" in text for text in texts), texts
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


async def test_a_runner_the_operator_does_not_offer_is_refused_as_over_http(
    start_app, sqlite_url, doubles, monkeypatch
):
    monkeypatch.setenv("QMCP_ALLOWED_RUNNERS", "local")
    server = await start_app(sqlite_url)
    await make_team(server.client)
    body = {"input": {}, "runner": "async"}
    expected = await _http_detail(server.client, "POST", "/v1/topologies/plan-write/run", body)
    async with in_process_session(server.app) as session:
        refused = await session.call_tool("run_topology", {"name": "plan-write", **body})
    assert error_text(refused) == expected and "async" in expected


BAD_ARGUMENTS = [
    ("list_human_requests", {"status": "bogus"}, "status: Input should be 'pending', 'responded', "),
    (
        "run_topology",
        {"name": "plan-write", "input": {}, "runner": "bogus"},
        "runner: Input should be 'local'",
    ),
    ("run_topology", {"name": "plan-write", "input": {}, "timeout_seconds": -1}, "timeout_seconds: "),
    ("run_topology", {"name": "plan-write", "input": {}, "timeout_seconds": 1e9}, "timeout_seconds: "),
    ("run_topology", {"name": "plan-write", "input": "text"}, "input: Input should be a valid dictionary"),
    ("run_topology", {"name": "plan-write"}, "input: Field required"),
    ("respond_to_human_request", {"request_id": "x"}, "response: Field required"),
]


async def test_a_bad_argument_is_one_line_naming_it(start_app, sqlite_url, doubles):
    server = await start_app(sqlite_url)
    await make_team(server.client)
    async with in_process_session(server.app) as session:
        for tool, arguments, named in BAD_ARGUMENTS:
            text = error_text(await session.call_tool(tool, arguments))
            assert text.startswith(named), (tool, arguments, text)
            assert "\n" not in text and "errors.pydantic.dev" not in text, text
        assert payload(await session.call_tool("list_topologies", {}))  # the session goes on
    assert (await server.client.get("/v1/executions")).json()["count"] == 0  # nothing ran


async def test_the_enum_arguments_list_their_values_in_the_tool_schemas(start_app, sqlite_url):
    async with in_process_session((await start_app(sqlite_url)).app) as session:
        tools = {tool.name: tool.input_schema for tool in (await session.list_tools()).tools}
    status = tools["list_human_requests"]["properties"]["status"]
    assert [set(option["enum"]) for option in status["anyOf"] if "enum" in option] == [
        {str(s) for s in HumanRequestStatus}
    ]
    assert set(get_args(RequestStatus)) == {str(s) for s in HumanRequestStatus}
    run = tools["run_topology"]["properties"]
    assert set(run["runner"]["enum"]) == set(get_args(Runner)) == {"local", "async", "metaflow"}
    assert run["timeout_seconds"]["minimum"] == 0 and run["timeout_seconds"]["maximum"] == 3600


async def test_an_unknown_tool_is_a_json_rpc_error(start_app, sqlite_url, caplog):
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_PARAMS

    caplog.set_level(logging.DEBUG)
    async with in_process_session((await start_app(sqlite_url)).app) as session:
        with pytest.raises(MCPError) as refused:
            await session.call_tool("no_such_tool", {})
        assert payload(await session.call_tool("list_topologies", {})) == []  # the session goes on
    assert refused.value.code == INVALID_PARAMS
    assert refused.value.message.startswith("Unknown tool: no_such_tool")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
