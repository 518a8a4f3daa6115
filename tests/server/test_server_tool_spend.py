"""The server's tools spend within bounds: a plan's steps, a tool call's tokens and cost, and the tools'
model calls per minute for the whole server. A 3,000-step plan given to `executor` made 3,000 model
calls, each prompt carrying the whole plan, with no budget or rate limit."""

from __future__ import annotations

import json

import pytest
from team import PROBLEM

from qmcp.agentframework.errors import RateLimitedError
from qmcp.agentframework.llm import RateLimit, rate_limits
from qmcp.agentframework.models import ModelConfig, Models
from qmcp.server.tools import ToolLimits


def _plan(steps: int, size: int = 0) -> dict[str, object]:
    return {
        "goal": "ship it",
        "steps": [{"step": n, "action": f"do {n}", "description": "x" * size} for n in range(1, steps + 1)],
    }


async def _executor(client, plan: dict[str, object]):
    return await client.post("/v1/tools/executor", json={"input": {"plan": plan, "dry_run": False}})


async def _failed(client) -> list[dict[str, object]]:
    return (await client.get("/v1/invocations", params={"status": "failed"})).json()["invocations"]


async def test_a_plan_over_the_step_limit_is_refused_before_any_model_call(start_app, sqlite_url, scripted):
    model, scripted_model = scripted(replies=["done"])
    client = (await start_app(sqlite_url, model=model)).client

    refused = await _executor(client, _plan(3000))
    assert refused.status_code == 413 and refused.headers["content-type"] == PROBLEM
    assert (
        "3,000 steps" in refused.json()["detail"]
        and "at most 50 (QMCP_TOOL_MAX_PLAN_STEPS)" in (refused.json()["detail"])
    )
    assert scripted_model.calls == []
    [failed] = await _failed(client)
    assert failed["tool_name"] == "executor" and "QMCP_TOOL_MAX_PLAN_STEPS" in failed["error"]

    ran = await _executor(client, _plan(3))
    assert ran.status_code == 200 and ran.json()["error"] is None
    assert [r["status"] for r in ran.json()["result"]["results"]] == ["completed"] * 3
    assert len(scripted_model.calls) == 3


async def test_each_executor_prompt_carries_its_step_not_the_whole_plan(start_app, sqlite_url, scripted):
    model, scripted_model = scripted(replies=["done"])
    client = (await start_app(sqlite_url, model=model)).client

    assert (await _executor(client, _plan(20, size=1000))).status_code == 200
    prompts = [call.prompt for call in scripted_model.calls]
    assert len(prompts) == 20 and "do 7" in prompts[6] and "do 8" not in prompts[6]
    assert max(len(p) for p in prompts) < 2 * min(len(p) for p in prompts) < 4000


async def test_a_tool_calls_budget_stops_the_executor_mid_plan(start_app, sqlite_url, scripted, monkeypatch):
    model, scripted_model = scripted(replies=["done"])
    provider, name = model.split(":")
    Models.register(ModelConfig(provider=provider, name=name, max_output_tokens=100))
    monkeypatch.setenv("QMCP_TOOL_MAX_TOKENS", "1000")
    client = (await start_app(sqlite_url, model=model)).client

    refused = await _executor(client, _plan(40))
    assert refused.status_code == 422 and refused.headers["content-type"] == PROBLEM
    detail = refused.json()["detail"]
    assert "the tool call spent" in detail and "1,000 tokens" in detail and "QMCP_TOOL_MAX_TOKENS" in detail
    # each call uses 91 tokens (90 in, 1 out) and is estimated before at about 150 (its prompt and
    # 100 out): ten calls spend 910, and the eleventh would not fit; the plan had 40 steps
    assert len(scripted_model.calls) == 10 and 10 * 91 <= 1000
    [failed] = await _failed(client)
    assert (
        failed["error"].startswith("Tool call refused: budget exceeded")
        and "QMCP_TOOL_MAX_TOKENS" in (failed["error"])
    )


async def test_a_tool_calls_cost_budget_names_its_setting(start_app, sqlite_url, scripted, monkeypatch):
    model, scripted_model = scripted(replies=["done"])
    provider, name = model.split(":")
    Models.register(
        ModelConfig(
            provider=provider,
            name=name,
            max_output_tokens=100,
            input_price_per_mtok=1000,
            output_price_per_mtok=1000,
        )
    )
    monkeypatch.setenv("QMCP_TOOL_MAX_COST_USD", "0.5")  # a call costs about $0.12 at most
    client = (await start_app(sqlite_url, model=model)).client

    refused = await _executor(client, _plan(40))
    assert refused.status_code == 422 and "QMCP_TOOL_MAX_COST_USD" in refused.json()["detail"]
    assert 1 <= len(scripted_model.calls) < 40


async def test_the_servers_per_minute_cap_answers_429_with_retry_after(
    start_app, sqlite_url, scripted, monkeypatch
):
    model, scripted_model = scripted(replies=["done"])
    monkeypatch.setenv("QMCP_TOOL_MODEL_CALLS_PER_MINUTE", "5")
    client = (await start_app(sqlite_url, model=model)).client

    assert (await _executor(client, _plan(3))).status_code == 200
    refused = await _executor(client, _plan(3))  # its third call would be the minute's sixth
    assert refused.status_code == 429 and refused.headers["content-type"] == PROBLEM
    assert "at most 5 a minute (QMCP_TOOL_MODEL_CALLS_PER_MINUTE)" in refused.json()["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(scripted_model.calls) == 5
    planner = await client.post("/v1/tools/planner", json={"input": {"goal": "anything"}})
    assert planner.status_code == 429 and len(scripted_model.calls) == 5  # for every tool of the server
    assert (await client.post("/v1/tools/echo", json={"input": {"message": "hi"}})).status_code == 200
    failed = await _failed(client)
    assert len(failed) == 2 and all("QMCP_TOOL_MODEL_CALLS_PER_MINUTE" in f["error"] for f in failed)


def test_the_per_minute_caps_free_their_room_a_minute_later():
    calls = ToolLimits(50, 1000, 1.0, calls_per_minute=2, tokens_per_minute=10_000)
    calls.admit(1, now=0.0)
    calls.admit(1, now=10.0)
    with pytest.raises(RateLimitedError, match="QMCP_TOOL_MODEL_CALLS_PER_MINUTE") as refused:
        calls.admit(1, now=20.0)
    assert refused.value.retry_after == 40.0
    calls.admit(1, now=60.0)  # the first call's minute is over

    tokens = ToolLimits(50, 1000, 1.0, calls_per_minute=10, tokens_per_minute=1000)
    for when, used in ((0.0, 400), (10.0, 400), (15.0, 100)):
        tokens.admit(used, now=when)
    with pytest.raises(RateLimitedError, match="QMCP_TOOL_TOKENS_PER_MINUTE") as refused:
        tokens.admit(600, now=20.0)  # 900 held: room once the calls at 0s and 10s are a minute old
    assert refused.value.retry_after == 50.0
    tokens.admit(600, now=70.0)


async def test_tool_model_calls_wait_their_turn_at_the_process_rate_limits(start_app, sqlite_url, scripted):
    model, scripted_model = scripted(replies=["done"])
    rate_limits().configure(model, RateLimit(rpm=60_000))
    try:
        client = (await start_app(sqlite_url, model=model)).client
        assert (await _executor(client, _plan(3))).status_code == 200
        limiter = rate_limits().limiter(model)
        assert limiter is not None and limiter.requests == len(scripted_model.calls) == 3
    finally:
        rate_limits().configure(model, None)


async def test_a_planners_plan_keeps_at_most_the_step_limit(start_app, sqlite_url, scripted, monkeypatch):
    steps = [{"action": f"do {n}", "description": "d"} for n in range(80)]
    model, scripted_model = scripted(replies=[json.dumps({"steps": steps})])
    monkeypatch.setenv("QMCP_TOOL_MAX_PLAN_STEPS", "5")
    client = (await start_app(sqlite_url, model=model)).client

    answer = (await client.post("/v1/tools/planner", json={"input": {"goal": "g"}})).json()
    assert answer["error"] is None, answer
    plan = answer["result"]
    assert [s["step"] for s in plan["steps"]] == [1, 2, 3, 4, 5] and plan["estimated_steps"] == 5
    assert "at most 5" in scripted_model.calls[0].prompt
    assert (await _executor(client, plan)).status_code == 200  # what the planner gives, the executor takes
    assert (await _executor(client, _plan(6))).status_code == 413


async def test_a_tool_call_is_budgeted_at_a_bounded_reply_not_the_models_whole_output_window(
    start_app, sqlite_url, scripted
):
    model, scripted_model = scripted(replies=["done"])
    provider, name = model.split(":")
    Models.register(  # estimated at its whole window, one call ($1.02) would not fit the default $1
        ModelConfig(provider=provider, name=name, max_output_tokens=64_000, output_price_per_mtok=16)
    )
    client = (await start_app(sqlite_url, model=model)).client

    assert (await _executor(client, _plan(3))).status_code == 200
    assert len(scripted_model.calls) == 3
