"""The LLM layer: model strings, typed errors, retries, usage and cost, the offline models."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from pydantic_ai.exceptions import ModelHTTPError, ModelRateLimitError

from qmcp.agentframework.errors import (
    MissingAPIKeyError,
    ModelNotInstalledError,
    PermanentModelError,
    TransientModelError,
    UnknownModelError,
)
from qmcp.agentframework.llm import (
    FAILURE_KINDS,
    ModelChoice,
    ScriptedModel,
    call_model,
    classify_error,
    effective_model,
    json_instruction,
    make_test_model,
    normalize_model_string,
    register_model,
    resolve_model,
    retry_transient,
    run_override,
    unregister_model,
)
from qmcp.agentframework.models import AgentConfig, ModelConfig, Models
from qmcp.agentframework.topologies import VALIDATION_SCHEMA, validate_json


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("claude-sonnet-4-20250514", "anthropic:claude-sonnet-4-20250514"),
        ("gpt-4.1", "openai:gpt-4.1"),
        ("gemini-2.5-pro", "google:gemini-2.5-pro"),
        ("openai:gpt-4o", "openai:gpt-4o"),
        ("test", "test"),
    ],
)
def test_bare_names_resolve_to_their_provider(given, expected):
    assert normalize_model_string(given) == expected


@pytest.mark.parametrize(
    ("model", "error", "message"),
    [
        (
            "anthropic:claude-sonnet-4-20250514",
            MissingAPIKeyError,
            "needs ANTHROPIC_API_KEY: set it, or run offline",
        ),
        ("openai:gpt-4.1", MissingAPIKeyError, "QMCP_MODEL_OVERRIDE=test"),
        ("nosuch:model", UnknownModelError, "unknown model 'nosuch:model'"),
        ("justaname", UnknownModelError, "use 'provider:name'"),
        ("local:/no/such/file.gguf", ModelNotInstalledError, "GGUF file not found"),
    ],
)
def test_resolution_errors_say_what_to_do(model, error, message):
    with pytest.raises(error, match=message):
        resolve_model(model)


def test_openai_compatible_endpoints_need_no_key():
    from pydantic_ai.models.openai import OpenAIChatModel

    ollama = resolve_model("ollama:llama3.2")
    assert isinstance(ollama, OpenAIChatModel) and "11434" in str(ollama.client.base_url)
    vllm = resolve_model("openai-compatible:qwen", base_url="http://127.0.0.1:8000/v1")
    assert "127.0.0.1:8000" in str(vllm.client.base_url)
    with pytest.raises(MissingAPIKeyError, match="needs an endpoint"):
        resolve_model("openai-compatible:qwen")


def test_models_registry():
    assert Models.CLAUDE_SONNET_4.model_string == "anthropic:claude-sonnet-4-20250514"
    assert Models.CLAUDE_SONNET_4.context_window == 200_000
    assert Models.get("anthropic:claude-sonnet-4-20250514") is Models.CLAUDE_SONNET_4
    assert Models.get("claude-sonnet-4-20250514") is Models.CLAUDE_SONNET_4
    assert (
        Models.SMOLLM2_135M.model_string == "local:smollm2" and Models.SMOLLM2_135M.input_price_per_mtok == 0
    )
    assert Models.TEST.model_string == "test"
    assert {m.provider for m in Models.all()} >= {"anthropic", "openai", "google", "local", "ollama"}
    assert Models.CLAUDE_SONNET_4.cost(1_000_000, 1_000_000) == pytest.approx(18.0)


@pytest.mark.parametrize("kind", FAILURE_KINDS)
async def test_failures_are_classified(kind):
    script = ScriptedModel(failures={0: kind})
    with pytest.raises((TransientModelError, PermanentModelError)) as caught:
        await call_model(
            script.model, "scripted", system=None, messages=[{"role": "user", "content": "x"}], settings={}
        )
    transient = kind in ("rate_limit", "overloaded", "server_error", "timeout", "disconnect")
    assert isinstance(caught.value, TransientModelError if transient else PermanentModelError)


def test_http_statuses_are_classified():
    assert isinstance(classify_error(ModelHTTPError(502, "m"), "m"), TransientModelError)
    assert isinstance(classify_error(ModelHTTPError(404, "m"), "m"), PermanentModelError)
    limited = ModelHTTPError.for_category(
        ModelRateLimitError, status_code=429, model_name="m", retry_after=2.5
    )
    error = classify_error(limited, "m")
    assert isinstance(error, TransientModelError) and error.retry_after == 2.5
    assert isinstance(classify_error(TimeoutError(), "m"), TransientModelError)


async def test_per_call_timeout_is_transient():
    script = ScriptedModel(latency=1.0)
    with pytest.raises(TransientModelError):
        await call_model(
            script.model,
            "s",
            system=None,
            messages=[{"role": "user", "content": "x"}],
            settings={},
            timeout_seconds=0.05,
        )


async def test_retry_backoff_is_exponential_and_honours_retry_after():
    attempts: list[float] = []

    async def flaky() -> str:
        attempts.append(time.perf_counter())
        if len(attempts) < 3:
            raise TransientModelError("busy", retry_after=0.05 if len(attempts) == 1 else None)
        return "ok"

    result, count = await retry_transient(flaky, max_retries=3, base_delay=0.001)
    assert (result, count) == ("ok", 3)
    assert attempts[1] - attempts[0] >= 0.05  # retry_after wins over the tiny backoff

    async def always() -> str:
        raise TransientModelError("busy")

    with pytest.raises(TransientModelError) as caught:
        await retry_transient(always, max_retries=2, base_delay=0.001)
    assert caught.value.attempts == 3


async def test_usage_and_cost_come_from_the_registry():
    priced = Models.register(
        ModelConfig(provider="scripted", name="priced", input_price_per_mtok=1e6, output_price_per_mtok=2e6)
    )
    script = ScriptedModel(name=priced.model_string, replies=["four words of reply"])
    reply = await call_model(
        script.model,
        priced.model_string,
        system="sys",
        messages=[{"role": "user", "content": "hi"}],
        settings={},
    )
    assert reply.text == "four words of reply" and reply.output_tokens == 4
    assert reply.cost_usd == pytest.approx(reply.input_tokens * 1 + reply.output_tokens * 2)


async def test_settings_and_system_prompt_reach_the_model():
    seen = {}

    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.models.function import FunctionModel

    def spy(messages, info):
        seen["settings"] = info.model_settings
        seen["system"] = messages[0].parts[0].content
        return ModelResponse(parts=[TextPart("ok")])

    await call_model(
        FunctionModel(spy),
        "spy",
        system="be brief",
        messages=[{"role": "user", "content": "hi"}],
        settings={"temperature": 0.2, "max_tokens": 7},
    )
    assert seen == {"settings": {"temperature": 0.2, "max_tokens": 7}, "system": "be brief"}


async def _ask(model, prompt: str) -> str:
    reply = await call_model(
        model, "test", system=None, messages=[{"role": "user", "content": prompt}], settings={}
    )
    return reply.text


async def test_test_model_is_deterministic_and_role_aware():
    planner, critic = make_test_model("planner"), make_test_model("critic")
    first, again = (
        await _ask(planner, "Plan a picnic"),
        await _ask(make_test_model("planner"), "Plan a picnic"),
    )
    assert first == again and first.startswith("Plan: Plan a picnic [")
    assert (await _ask(critic, "Plan a picnic")).startswith("Critique: ")
    assert await _ask(planner, "Plan a party") != first


async def test_test_model_answers_json_schemas_with_valid_json():
    checker = make_test_model("checker")
    verdicts = [
        validate_json(
            await _ask(checker, f"Check answer {i}\n\n{json_instruction(VALIDATION_SCHEMA)}"),
            VALIDATION_SCHEMA,
        )
        for i in range(12)
    ]
    assert all(isinstance(v["approved"], bool) and 0 <= v["confidence"] <= 1 for v in verdicts)
    assert {v["approved"] for v in verdicts} == {True, False}  # deterministic, but not constant
    plan_schema = {
        "type": "object",
        "properties": {
            "subtasks": {
                "type": "array",
                "items": {"type": "object", "properties": {"task": {"type": "string"}}},
            }
        },
    }
    plan = json.loads(await _ask(make_test_model("commander"), f"Plan\n\n{json_instruction(plan_schema)}"))
    assert len(plan["subtasks"]) == 2 and all(isinstance(s["task"], str) for s in plan["subtasks"])


async def test_the_test_models_verdicts_are_ones_the_topologies_read():
    """A judge's verdict parses as the crosscheck reads it; an approval lists no issues; strings are words."""
    from qmcp.agentframework.topologies import parse_verdict

    judge = make_test_model("judge")
    for i in range(8):
        reply = await _ask(judge, f"Task: Is {i} even?\n\n{json_instruction(VALIDATION_SCHEMA)}")
        verdict = parse_verdict(reply)
        assert verdict["parsed"] is True
        if verdict["approved"]:
            assert verdict["issues"] == []
        else:
            assert verdict["issues"] and all(
                issue.startswith(f"Judgement on Is {i} even?") for issue in verdict["issues"]
            )


async def test_scripted_model_records_concurrency_and_latency():
    script = ScriptedModel(latency=0.05)
    messages = [{"role": "user", "content": "x"}]
    started = time.perf_counter()
    await asyncio.gather(
        *[call_model(script.model, "s", system=None, messages=messages, settings={}) for _ in range(4)]
    )
    assert time.perf_counter() - started < 0.2 and script.max_in_flight == 4 and len(script.calls) == 4


def test_registered_models_win():
    script = ScriptedModel()
    register_model("mine", script.model)
    try:
        assert resolve_model("mine") is script.model
    finally:
        unregister_model("mine")


def test_the_effective_model_of_an_agent(monkeypatch):
    """One rule: the override wins; the agent's endpoint and key variable go only with its own model."""
    monkeypatch.setenv("QMCP_DEFAULT_MODEL", "test")
    keyed = AgentConfig(model="gpt-4.1", base_url="http://127.0.0.1:9/v1", api_key_env="TEAM_A_KEY")
    own = ModelChoice("gpt-4.1", "http://127.0.0.1:9/v1", "TEAM_A_KEY")
    assert effective_model(keyed, None) == own
    assert effective_model(keyed, "openai:gpt-4.1") == ModelChoice(
        "openai:gpt-4.1", own.base_url, own.api_key_env
    )
    assert effective_model(keyed, "ollama:anything") == ModelChoice("ollama:anything")
    assert effective_model(AgentConfig(), None) == ModelChoice("test")  # no model named: the default
    assert (
        effective_model(AgentConfig(), "anthropic:claude-sonnet-4-0").model == "anthropic:claude-sonnet-4-0"
    )


def test_the_ambient_override_is_taken_only_where_a_run_starts(monkeypatch):
    monkeypatch.setenv("QMCP_MODEL_OVERRIDE", "test")
    assert run_override(None) == "test" and run_override("ollama:x") == "ollama:x"
    monkeypatch.delenv("QMCP_MODEL_OVERRIDE")
    assert run_override(None) is None
