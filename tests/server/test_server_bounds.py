"""Everything the server stores is bounded, and no input gives a 500 (issue 22): JSON depth, size and
non-finite numbers at every store door, paging ranges, NUL in ids, and rows stored before the bound."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from serving import BASE_URL, App
from team import finished, make_team, run

from qmcp.agentframework.errors import InvalidConfigError
from qmcp.agentframework.models import MAX_JSON_BYTES, AgentType, HumanRequest, ToolInvocation
from qmcp.agentframework.store import Database

HUGE = "99999999999999999999"


def nested(levels: int) -> dict[str, Any]:
    """A dict nested `levels` deep."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.fixture
async def server(start_app, db_url) -> App:
    return await start_app(db_url, model="test")


def _refused(response: Any, *words: str) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert all(word in response.text for word in words), response.text


async def test_json_nested_too_deep_is_refused_at_every_store_door(server):
    client = server.client
    request = {"id": "deep", "request_type": "input", "prompt": "p"}
    _refused(
        await client.post("/v1/human/requests", json=request | {"context": nested(300)}),
        "context",
        "nested deeper than 100",
    )
    assert (
        await client.post("/v1/human/requests", json=request | {"context": nested(100)})
    ).status_code == 201
    answer = {"request_id": "deep", "response": "ok", "response_metadata": nested(300)}
    _refused(await client.post("/v1/human/responses", json=answer), "response_metadata")
    _refused(
        await client.post("/v1/tools/echo", json={"input": {"message": "x", "extra": nested(300)}}), "input"
    )
    agent = {"name": "deep", "config": {"model": "test", "output_schema": nested(150)}}
    _refused(await client.post("/v1/agents", json=agent), "agent 'deep': config is nested deeper than 100")
    for path in ("/v1/human/requests", "/v1/human/requests/deep", "/v1/invocations", "/v1/agents"):
        assert (await client.get(path)).status_code == 200, path


async def test_nan_and_infinity_are_refused_on_both_databases(server):
    client = server.client
    headers = {"Content-Type": "application/json"}
    bodies = {
        "/v1/human/requests": '{"id": "n", "request_type": "input", "prompt": "p", "context": {"x": NaN}}',
        "/v1/tools/echo": '{"input": {"message": "x", "extra": Infinity}}',
        "/v1/agents": '{"name": "nan", "config": {"model": "test", "output_schema": {"x": -Infinity}}}',
    }
    for path, body in bodies.items():
        _refused(await client.post(path, content=body, headers=headers), "NaN or Infinity")
    created = await client.post(
        "/v1/human/requests", json={"id": "m", "request_type": "input", "prompt": "p"}
    )
    assert created.status_code == 201
    answer = '{"request_id": "m", "response": "ok", "response_metadata": {"x": NaN}}'
    _refused(await client.post("/v1/human/responses", content=answer, headers=headers), "NaN or Infinity")
    for path in ("/v1/human/requests", "/v1/invocations", "/v1/agents"):
        assert (await client.get(path)).status_code == 200, path


async def test_the_store_refuses_json_it_cannot_keep_naming_the_field(db_url):
    """The same bounds for every door that is not HTTP (the CLI, MCP, the Python API)."""
    nan = float("nan")
    async with Database(db_url) as db:
        refusals = {
            "context holds NaN or Infinity": db.create_human_request(
                HumanRequest(id="r", prompt="p", context={"x": nan})
            ),
            "context is nested deeper than 100": db.create_human_request(
                HumanRequest(id="r", prompt="p", context=nested(101))
            ),
            "input holds NaN": db.add_tool_invocation(
                ToolInvocation(tool_name="echo", input_params={"x": nan})
            ),
            "agent 'a': config holds NaN": db.save_agent(AgentType(name="a", config={"temperature": nan})),
            "context is .* bytes as JSON, over the limit of": db.create_human_request(
                HumanRequest(id="r", prompt="p", context={"x": "y" * (MAX_JSON_BYTES + 1)})
            ),
        }
        for words, write in refusals.items():
            with pytest.raises(InvalidConfigError, match=words):
                await write
        await db.create_human_request(HumanRequest(id="ok", prompt="p"))
        with pytest.raises(InvalidConfigError, match="response_metadata holds NaN"):
            await db.answer_human_request("ok", "yes", metadata={"x": float("inf")})
        assert await db.list_human_requests() == [await db.get_human_request("ok")]


async def test_rows_stored_before_the_bound_do_not_break_any_list(server, db_url):
    async with Database(db_url) as db:
        await db.add(HumanRequest(id="old", prompt="p", context=nested(300), options=["a"]))
        await db.add(ToolInvocation(tool_name="echo", input_params=nested(300)))  # type: ignore[arg-type]
    client = server.client
    listed = await client.get("/v1/human/requests")
    assert listed.status_code == 200
    (row,) = listed.json()["requests"]
    assert row["id"] == "old" and row["options"] == ["a"]
    assert row["context"].startswith("(not shown: this value is nested deeper than 100 levels")
    one = await client.get("/v1/human/requests/old")
    assert one.status_code == 200 and one.json()["request"]["context"].startswith("(not shown")
    invocations = await client.get("/v1/invocations")
    assert invocations.status_code == 200
    (invocation,) = invocations.json()["invocations"]
    assert invocation["input_params"].startswith("(not shown")
    got = await client.get(f"/v1/invocations/{invocation['id']}")
    assert got.status_code == 200

    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=server.app), base_url=BASE_URL) as http,
        streamable_http_client(f"{BASE_URL}/mcp", http_client=http) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        result = await session.call_tool("list_human_requests", {"status": "pending"})
        assert not result.is_error, result
        shown = result.structured_content or json.loads(result.content[0].text)
        (request,) = shown.get("result", shown) if isinstance(shown, dict) else shown
        assert request["id"] == "old" and request["context"].startswith("(not shown")


async def test_paging_out_of_range_is_a_4xx(server, db_url):
    client = server.client
    for path in ("/v1/executions", "/v1/human/requests", "/v1/invocations"):
        for offset in (HUGE, "-1"):
            response = await client.get(path, params={"offset": offset})
            assert response.status_code == 422, (path, offset, response.text)
        assert (await client.get(path, params={"offset": "1000"})).status_code == 200
    page = await client.get("/", params={"page": HUGE})
    assert 400 <= page.status_code < 500, page.text
    assert (await client.get("/", params={"page": "-5"})).status_code == 200
    async with Database(db_url) as db:
        for listing in (db.list_executions, db.list_human_requests, db.list_tool_invocations):
            with pytest.raises(InvalidConfigError, match="offset must be between 0 and"):
                await listing(offset=int(HUGE))


async def test_nul_is_refused_in_every_id(server, db_url):
    client = server.client
    request = {"id": "ok", "request_type": "input", "prompt": "p"}
    _refused(await client.post("/v1/human/requests", json=request | {"id": "a\x00b"}), "NUL")
    _refused(await client.post("/v1/human/requests", json=request | {"correlation_id": "c\x00"}), "NUL")
    _refused(await client.get("/v1/human/requests/a%00b"), "NUL")
    _refused(await client.post("/v1/human/responses", json={"request_id": "a\x00b", "response": "x"}), "NUL")
    _refused(await client.post("/v1/tools/echo", json={"input": {"message": "x"}, "correlation_id": "c\x00"}))
    _refused(await client.post("/v1/tools/ec%00ho", json={"input": {"message": "x"}}))
    _refused(await client.get("/v1/invocations/a%00b"), "NUL")
    _refused(await client.get("/v1/executions/a%00b"))
    assert (await client.get("/v1/human/requests")).json()["requests"] == []
    async with Database(db_url) as db:
        with pytest.raises(InvalidConfigError, match="NUL"):
            await db.add_tool_invocation(ToolInvocation(tool_name="ec\x00ho"))


async def test_a_runs_gate_id_is_reserved_for_its_gate(server, db_url):
    """A client that made `{execution}:{step}#human-after` first and answered it would let the run
    pass its gate unasked: ids of that form naming an execution here are the gates' only."""
    client = server.client
    await make_team(client)
    execution_id = await run(client, "plan-write")
    await finished(client, execution_id)
    body = {"request_type": "approval", "prompt": "Approve?", "options": ["approve", "reject"]}
    for request_id in (f"{execution_id}:pipeline/1:publish#human-after", f"{execution_id.upper()}:x"):
        refused = await client.post("/v1/human/requests", json=body | {"id": request_id})
        assert refused.status_code == 403, refused.text
        assert "reserved for the gates of runs" in refused.json()["detail"]
        guessed = await client.post("/v1/human/requests", json=body | {"id": request_id, "run_token": "x"})
        assert guessed.status_code == 403
    assert (await client.get("/v1/human/requests")).json()["requests"] == []
    elsewhere = f"{uuid.uuid4()}:pipeline/1:publish#human-after"  # a run with a database of its own
    assert (await client.post("/v1/human/requests", json=body | {"id": elsewhere})).status_code == 201

    async with Database(db_url) as db:  # a run's gate on a server sharing its database: its owner token
        await db.execute_update(uuid.UUID(execution_id), {"owner_token": "the-runs-token"})
    gate_id = f"{execution_id}:pipeline/1:publish#human-after"
    made = await client.post("/v1/human/requests", json=body | {"id": gate_id, "run_token": "the-runs-token"})
    assert made.status_code == 201, made.text
    async with Database(db_url) as db:
        stored = await db.get_human_request(gate_id)
    assert stored.execution_id == uuid.UUID(execution_id) and stored.key == "pipeline/1:publish#human-after"


async def test_a_tool_result_past_the_bounds_fails_that_invocation(server):
    from qmcp.agentframework.mixins import register_tool, unregister_tool

    def deep_result(levels: int) -> dict[str, Any]:
        """A result nested `levels` deep."""
        return nested(levels)

    register_tool("deep_result", deep_result)
    try:
        called = await server.client.post("/v1/tools/deep_result", json={"input": {"levels": 150}})
    finally:
        unregister_tool("deep_result")
    assert called.status_code == 200
    assert (
        called.json()["error"]
        == "Tool execution failed: the result is nested deeper than 100 levels; flatten it"
    )
    listed = await server.client.get("/v1/invocations")
    assert listed.status_code == 200 and listed.json()["invocations"][0]["status"] == "failed"
