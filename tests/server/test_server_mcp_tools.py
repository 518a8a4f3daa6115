"""Upstream's tools (echo, planner, executor, reviewer) and the registered Python tools over MCP, with
the official SDK's client (in this process): the tools of `/v1/tools`, called as `POST /v1/tools/{name}`
calls them, recorded as invocations and bound by the same limits (one per-minute cap for both doors)."""

from __future__ import annotations

import json
from typing import Any

from mcp_sessions import error_text, in_process_session, payload

UPSTREAM = ["echo", "planner", "executor", "reviewer"]


def _plan(steps: int) -> dict[str, Any]:
    return {"goal": "ship it", "steps": [{"step": n, "action": f"do {n}"} for n in range(1, steps + 1)]}


async def test_the_tools_of_v1_tools_are_mcp_tools_with_the_same_schemas(start_app, db_url, doubles):
    server = await start_app(db_url)
    offered = {t["name"]: t for t in (await server.client.get("/v1/tools")).json()["tools"]}
    async with in_process_session(server.app, headers={"X-Correlation-ID": "trace-7"}) as session:
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}
        echoed = await session.call_tool("echo", {"message": "hello"})
    assert set(UPSTREAM) <= set(offered) <= set(listed)
    for name, tool in offered.items():
        assert listed[name].input_schema == tool["input_schema"], name
        assert listed[name].description == tool["description"], name
    assert {"run_topology", "list_human_requests"} <= set(listed)

    assert payload(echoed) == "hello"
    [invocation] = (await server.client.get("/v1/invocations")).json()["invocations"]
    assert invocation["tool_name"] == "echo" and invocation["status"] == "success"
    assert invocation["id"] == echoed.meta["invocation_id"] and invocation["correlation_id"] == "trace-7"


async def test_planner_executor_and_reviewer_run_their_agents(start_app, sqlite_url, scripted):
    steps = [{"action": "write", "description": "the draft"}, {"action": "check", "description": "it"}]
    verdict = {"checks": {"completeness": {"passed": True, "notes": "ok"}}, "recommendation": "ship"}
    model, scripted_model = scripted(
        replies=[json.dumps({"steps": steps}), "done", "done", json.dumps(verdict)]
    )
    server = await start_app(sqlite_url, model=model)
    async with in_process_session(server.app) as session:
        plan = payload(await session.call_tool("planner", {"goal": "publish a post"}))
        ran = payload(await session.call_tool("executor", {"plan": plan, "dry_run": False}))
        review = payload(await session.call_tool("reviewer", {"result": ran, "criteria": ["completeness"]}))
    assert [s["action"] for s in plan["steps"]] == ["write", "check"]
    assert [r["status"] for r in ran["results"]] == ["completed", "completed"]
    assert review["overall_status"] == "approved" and review["recommendation"] == "ship"
    assert len(scripted_model.calls) == 4 and "publish a post" in scripted_model.calls[0].prompt


async def test_a_failed_tool_call_is_an_error_result_with_the_error_http_records(start_app, sqlite_url):
    server = await start_app(sqlite_url)
    bad = {"plan": "not a plan"}  # refused by upstream's executor too
    over_http = (await server.client.post("/v1/tools/executor", json={"input": bad})).json()
    assert over_http["error"]
    deep: Any = "x"
    for _ in range(120):
        deep = [deep]
    async with in_process_session(server.app) as session:
        failed = await session.call_tool("executor", bad)
        nested = await session.call_tool("echo", {"message": deep})
    assert error_text(failed) == over_http["error"]
    assert failed.meta["invocation_id"] != over_http["invocation_id"]
    assert (
        error_text(nested)
        == "invalid input for echo: a value that is nested deeper than 100 levels; flatten it"
    )
    invocations = (await server.client.get("/v1/invocations")).json()["invocations"]
    assert [i["status"] for i in invocations] == ["failed", "failed"]  # the nested one was not stored


async def test_a_plan_over_the_step_limit_is_refused_in_the_sentence_of_http(start_app, sqlite_url, scripted):
    model, scripted_model = scripted(replies=["done"])
    server = await start_app(sqlite_url, model=model)
    body = {"input": {"plan": _plan(60), "dry_run": False}}
    refused = await server.client.post("/v1/tools/executor", json=body)
    assert refused.status_code == 413
    async with in_process_session(server.app) as session:
        text = error_text(await session.call_tool("executor", body["input"]))
    assert text == refused.json()["detail"] and "QMCP_TOOL_MAX_PLAN_STEPS" in text
    assert scripted_model.calls == []


async def test_a_tool_calls_budget_holds_over_mcp(start_app, sqlite_url, scripted, monkeypatch):
    model, scripted_model = scripted(replies=["done"])
    monkeypatch.setenv("QMCP_TOOL_MAX_TOKENS", "300")
    server = await start_app(sqlite_url, model=model)
    async with in_process_session(server.app) as session:
        text = error_text(await session.call_tool("executor", {"plan": _plan(40), "dry_run": False}))
    assert "budget exceeded" in text and "QMCP_TOOL_MAX_TOKENS" in text
    assert len(scripted_model.calls) < 40


async def test_http_and_mcp_share_the_servers_per_minute_cap(start_app, sqlite_url, scripted, monkeypatch):
    model, scripted_model = scripted(replies=["done"])
    monkeypatch.setenv("QMCP_TOOL_MODEL_CALLS_PER_MINUTE", "4")
    server = await start_app(sqlite_url, model=model)
    body = {"plan": _plan(3), "dry_run": False}
    assert (await server.client.post("/v1/tools/executor", json={"input": body})).status_code == 200
    async with in_process_session(server.app) as session:
        refused = error_text(await session.call_tool("executor", body))  # the minute's fifth call
        echoed = payload(await session.call_tool("echo", {"message": "still here"}))
    assert "at most 4 a minute (QMCP_TOOL_MODEL_CALLS_PER_MINUTE)" in refused
    assert len(scripted_model.calls) == 4 and echoed == "still here"
    over_http = await server.client.post("/v1/tools/planner", json={"input": {"goal": "g"}})
    assert over_http.status_code == 429 and len(scripted_model.calls) == 4


async def test_a_server_pinned_to_a_model_runs_the_tools_on_it(start_app, sqlite_url, scripted):
    model, scripted_model = scripted(replies=[json.dumps({"steps": [{"action": "a", "description": "b"}]})])
    server = await start_app(sqlite_url, model=model)  # `qmcp serve --model M`: the operator's pin
    async with in_process_session(server.app) as session:
        plan = payload(await session.call_tool("planner", {"goal": "g"}))
    assert plan["estimated_steps"] == 1 and len(scripted_model.calls) == 1


async def test_a_crash_under_a_server_tool_tells_the_client_nothing_of_it(start_app, sqlite_url, monkeypatch):
    from qmcp.server import _mcp_protocol

    async def crash(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("connection to 10.0.0.5 refused")

    server = await start_app(sqlite_url)
    monkeypatch.setattr(_mcp_protocol, "invoke_tool", crash)
    async with in_process_session(server.app) as session:
        text = error_text(await session.call_tool("echo", {"message": "hi"}))
    assert text == "Error executing tool echo"  # the SDK's answer to a crash of its own tools
