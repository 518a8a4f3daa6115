"""Spans follow OpenTelemetry's GenAI semantic conventions, checked against the conventions' own package.

Every name and value is read from `opentelemetry-semantic-conventions` (its incubating GenAI
attributes), never spelled here: qmcp keeps its own copy (`qmcp.observability.GenAI`), and these
tests are what keeps that copy true. Model calls are traced in-process with a tracer of our own (no
global provider); whole runs in a process of their own, which sets the global provider as a host does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, server_attributes
from opentelemetry.trace import SpanKind, StatusCode
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from qmcp.agentframework.errors import PermanentModelError, StepFailedError
from qmcp.agentframework.llm import call_model
from qmcp.observability import GenAI, genai_model, genai_provider

Provider = gen_ai.GenAiProviderNameValues
Operation = gen_ai.GenAiOperationNameValues
WELL_KNOWN = {member.value for member in Provider}


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("anthropic:claude-sonnet-4-5", Provider.ANTHROPIC),
        ("openai:gpt-4.1", Provider.OPENAI),
        ("openai-responses:gpt-4.1", Provider.OPENAI),
        ("azure:gpt-4o", Provider.AZURE_AI_OPENAI),
        ("google:gemini-2.5-pro", Provider.GCP_GEMINI),
        ("google-cloud:gemini-2.5-pro", Provider.GCP_VERTEX_AI),
        ("bedrock:us.anthropic.claude-sonnet-4-5-v1:0", Provider.AWS_BEDROCK),
        ("mistral:mistral-large-latest", Provider.MISTRAL_AI),
        ("groq:llama-3.3-70b-versatile", Provider.GROQ),
        ("cohere:command-r-plus", Provider.COHERE),
        ("deepseek:deepseek-chat", Provider.DEEPSEEK),
        ("xai:grok-4", Provider.X_AI),
        ("gateway/anthropic:claude-sonnet-4-5", Provider.ANTHROPIC),
    ],
)
def test_a_known_provider_is_named_by_the_conventions_well_known_value(model, provider):
    assert genai_provider(model) == provider.value


@pytest.mark.parametrize(
    ("model", "custom"),
    [
        ("test", "qmcp.test"),
        ("local:smollm2", "qmcp.local"),
        ("openai-compatible:gpt-x", "qmcp.openai_compatible"),
        ("my-registered-model", "qmcp.registered"),
        ("ollama:llama3.2", "ollama"),
        ("lmstudio:qwen3", "lmstudio"),
    ],
)
def test_a_provider_the_conventions_do_not_know_has_a_documented_custom_value(model, custom):
    assert genai_provider(model) == custom and custom not in WELL_KNOWN


@pytest.mark.parametrize(
    ("model", "requested"),
    [
        ("anthropic:claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("bedrock:us.anthropic.claude-sonnet-4-5-v1:0", "us.anthropic.claude-sonnet-4-5-v1:0"),
        ("local:smollm2", "smollm2"),
        ("test", "test"),
    ],
)
def test_the_request_model_is_the_providers_name_without_qmcps_prefix(model, requested):
    assert genai_model(model) == requested


def test_qmcps_copy_of_the_conventions_is_the_conventions():
    """Every name and value `GenAI` holds, against the package's."""
    assert {name: value for name, value in vars(GenAI).items() if name.isupper()} == {
        "OPERATION_NAME": gen_ai.GEN_AI_OPERATION_NAME,
        "PROVIDER_NAME": gen_ai.GEN_AI_PROVIDER_NAME,
        "AGENT_NAME": gen_ai.GEN_AI_AGENT_NAME,
        "WORKFLOW_NAME": gen_ai.GEN_AI_WORKFLOW_NAME,
        "REQUEST_MODEL": gen_ai.GEN_AI_REQUEST_MODEL,
        "REQUEST_MAX_TOKENS": gen_ai.GEN_AI_REQUEST_MAX_TOKENS,
        "REQUEST_TEMPERATURE": gen_ai.GEN_AI_REQUEST_TEMPERATURE,
        "REQUEST_TOP_P": gen_ai.GEN_AI_REQUEST_TOP_P,
        "RESPONSE_MODEL": gen_ai.GEN_AI_RESPONSE_MODEL,
        "RESPONSE_ID": gen_ai.GEN_AI_RESPONSE_ID,
        "RESPONSE_FINISH_REASONS": gen_ai.GEN_AI_RESPONSE_FINISH_REASONS,
        "USAGE_INPUT_TOKENS": gen_ai.GEN_AI_USAGE_INPUT_TOKENS,
        "USAGE_OUTPUT_TOKENS": gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS,
        "ERROR_TYPE": error_attributes.ERROR_TYPE,
        "SERVER_ADDRESS": server_attributes.SERVER_ADDRESS,
        "SERVER_PORT": server_attributes.SERVER_PORT,
        "CHAT": Operation.CHAT.value,
        "INVOKE_AGENT": Operation.INVOKE_AGENT.value,
        "INVOKE_WORKFLOW": Operation.INVOKE_WORKFLOW.value,
        "OTHER_ERROR": error_attributes.ErrorTypeValues.OTHER.value,
    }


# -- one model call: its `chat` span --------------------------------------------------------------


def _tracer() -> tuple[Any, InMemorySpanExporter]:
    """A tracer of the test's own: nothing global is set, as a library's tests should leave it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def _answering(**response: Any) -> FunctionModel:
    def answer(_messages: list[ModelMessage], _info: AgentInfo) -> ModelResponse:
        return ModelResponse(
            parts=[TextPart("an answer")], usage=RequestUsage(input_tokens=7, output_tokens=3), **response
        )

    return FunctionModel(answer, model_name="claude-sonnet-4-5-20250929")


async def _call(model: FunctionModel, model_string: str, tracer: Any, **options: Any) -> Any:
    return await call_model(
        model,
        model_string,
        system="be brief",
        messages=[{"role": "user", "content": "hello"}],
        settings={"max_tokens": 64, "temperature": 0.2},
        tracer=tracer,
        **options,
    )


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_model_call_is_a_chat_span_with_the_model_and_finish_reason_the_provider_reports(streamed):
    tracer, exporter = _tracer()
    model = _answering(finish_reason="length", provider_response_id="msg_01")
    reply = await _call(
        model, "anthropic:claude-sonnet-4-5", tracer, on_delta=(lambda _text: None) if streamed else None
    )
    assert reply.text == "an answer"
    (span,) = exporter.get_finished_spans()
    assert span.name == f"{Operation.CHAT.value} claude-sonnet-4-5" and span.kind is SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes[gen_ai.GEN_AI_OPERATION_NAME] == Operation.CHAT.value
    assert attributes[gen_ai.GEN_AI_PROVIDER_NAME] == Provider.ANTHROPIC.value
    assert attributes[gen_ai.GEN_AI_REQUEST_MODEL] == "claude-sonnet-4-5"
    assert attributes[gen_ai.GEN_AI_RESPONSE_MODEL] == "claude-sonnet-4-5-20250929"
    assert attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)
    assert attributes[gen_ai.GEN_AI_RESPONSE_ID] == "msg_01"
    assert attributes[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert attributes[gen_ai.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    if not streamed:  # a stream's usage is pydantic-ai's estimate
        assert (
            attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS],
            attributes[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS],
        ) == (7, 3)
    assert error_attributes.ERROR_TYPE not in attributes and span.status.status_code is StatusCode.UNSET


async def test_a_provider_that_reports_no_finish_reason_gets_none_invented():
    tracer, exporter = _tracer()
    await _call(_answering(), "mistral:mistral-large-latest", tracer)
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes[gen_ai.GEN_AI_PROVIDER_NAME] == Provider.MISTRAL_AI.value
    assert gen_ai.GEN_AI_RESPONSE_FINISH_REASONS not in attributes
    assert gen_ai.GEN_AI_RESPONSE_ID not in attributes


async def test_a_bare_model_name_is_named_by_the_provider_qmcp_gives_it():
    tracer, exporter = _tracer()
    await _call(_answering(), "claude-sonnet-4-5", tracer)  # qmcp reads it as anthropic:claude-sonnet-4-5
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[gen_ai.GEN_AI_PROVIDER_NAME] == Provider.ANTHROPIC.value
    assert span.attributes[gen_ai.GEN_AI_REQUEST_MODEL] == "claude-sonnet-4-5"


async def test_a_failed_model_call_is_an_error_span_with_the_errors_class_as_error_type():
    tracer, exporter = _tracer()
    key = "sk-planted-" + "9" * 32

    def refuse(_messages: list[ModelMessage], _info: AgentInfo) -> ModelResponse:
        raise ModelHTTPError(401, "gpt-4.1", body={"error": f"Incorrect API key provided: {key}"})

    with pytest.raises(PermanentModelError):
        await _call(FunctionModel(refuse), "openai:gpt-4.1", tracer)
    (span,) = exporter.get_finished_spans()
    assert span.name == f"{Operation.CHAT.value} gpt-4.1" and span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes[error_attributes.ERROR_TYPE] == ModelHTTPError.__qualname__
    assert span.attributes[gen_ai.GEN_AI_PROVIDER_NAME] == Provider.OPENAI.value
    assert key not in json.dumps(json.loads(span.to_json()))  # the provider quoted the key: never in a span


async def test_each_request_of_a_tool_loop_is_its_own_chat_span():
    from pydantic_ai.messages import ToolCallPart
    from pydantic_ai.tools import ToolDefinition

    from qmcp.agentframework.llm import ToolSpec

    def answer(messages: list[ModelMessage], _info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("clock", {})], finish_reason="tool_call")
        return ModelResponse(parts=[TextPart("noon")], finish_reason="stop")

    async def clock(_args: dict[str, Any]) -> str:
        return "12:00"

    tool = ToolSpec(ToolDefinition(name="clock", parameters_json_schema={"type": "object"}), clock)
    tracer, exporter = _tracer()
    reply = await _call(
        FunctionModel(answer, model_name="gpt-4.1-2025-04-14"), "openai:gpt-4.1", tracer, tools=[tool]
    )
    assert reply.text == "noon"
    spans = exporter.get_finished_spans()
    assert [span.attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] for span in spans if span.attributes] == [
        ("tool_call",),
        ("stop",),
    ]


async def test_a_host_instrumenting_pydantic_ai_gets_one_span_per_request_not_two():
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings

    tracer, exporter = _tracer()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    Agent.instrument_all(InstrumentationSettings(tracer_provider=provider))
    try:
        await _call(_answering(), "anthropic:claude-sonnet-4-5", tracer)
        assert [span.name for span in exporter.get_finished_spans()] == [
            f"{Operation.CHAT.value} claude-sonnet-4-5"
        ]
        await _call(_answering(), "anthropic:claude-sonnet-4-5", None)  # untraced by qmcp: pydantic-ai's span
        assert len(exporter.get_finished_spans()) == 2
    finally:
        Agent.instrument_all(False)


async def test_an_endpoint_is_named_by_host_and_port_never_its_credentials():
    from qmcp.agentframework.llm._call import _server_attributes

    assert _server_attributes("http://user:secret@127.0.0.1:11434/v1") == {
        server_attributes.SERVER_ADDRESS: "127.0.0.1",
        server_attributes.SERVER_PORT: 11434,
    }
    assert _server_attributes("https://api.example.com/v1")[server_attributes.SERVER_PORT] == 443
    assert _server_attributes(None) == {} and _server_attributes("not a url") == {}


# -- whole runs: workflow, agent and chat spans ---------------------------------------------------

_RUNS = textwrap.dedent(
    """
    import asyncio, json, sys

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.models.function import FunctionModel

    from qmcp.agentframework.llm import ScriptedModel, register_model
    from qmcp.agentframework.models import AgentConfig, AgentType, PipelineConfig, Topology, TopologyType
    from qmcp.agentframework.runners import LocalRunner, RunConfig

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the host's choice; qmcp sets no provider of its own

    def answer(messages, info):
        return ModelResponse(parts=[TextPart("done")], finish_reason="stop", provider_response_id="msg_7")

    register_model("anthropic:claude-sonnet-4-5", FunctionModel(answer, model_name="claude-sonnet-4-5-20250929"))
    failing = ScriptedModel(name="mistral-large-latest", failures={0: "bad_request"})
    register_model("mistral:mistral-large-latest", failing.model)
    register_model("groq:llama-slow", ScriptedModel(name="llama-slow", latency=30).model)

    def run(name, model, **config):
        agents = {slot: AgentType(name=slot, config=AgentConfig(model=model).model_dump()) for slot in ("draft", "edit")}
        topology = Topology(name=name, topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump())
        runner = LocalRunner(config=RunConfig(max_retries=0, **config), db_url=sys.argv[1])
        return asyncio.run(runner.run(topology, agents, {"prompt": "p"}))

    results = {"passing": str(run("passing", "claude-sonnet-4-5").status),
               "failing": str(run("failing", "mistral:mistral-large-latest").status),
               "timed_out": str(run("timed_out", "groq:llama-slow", timeout_seconds=1).status)}
    spans = [
        {"name": span.name, "kind": span.kind.name, "status": span.status.status_code.name,
         "attributes": dict(span.attributes), "id": span.context.span_id,
         "parent": span.parent.span_id if span.parent else None, "trace": span.context.trace_id}
        for span in exporter.get_finished_spans()
    ]
    print(json.dumps({"results": results, "spans": spans}))
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A passing and a failing run in a process with an SDK, and every span they made, by run."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('spans')}/spans.db"
    done = subprocess.run([sys.executable, "-c", _RUNS, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["results"] == {"passing": "completed", "failing": "failed", "timed_out": "failed"}
    by_run: dict[str, list[dict[str, Any]]] = {}
    for span in report["spans"]:
        root = next(s for s in report["spans"] if s["trace"] == span["trace"] and s["parent"] is None)
        by_run.setdefault(root["attributes"][gen_ai.GEN_AI_WORKFLOW_NAME], []).append(span)
    return by_run


def _one(spans: list[dict[str, Any]], operation: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["attributes"][gen_ai.GEN_AI_OPERATION_NAME] == operation]


@pytest.mark.slow  # a process with its own tracer provider
def test_a_run_is_a_workflow_span_of_agent_spans_of_chat_spans_named_by_the_conventions(runs):
    spans = runs["passing"]
    (workflow,) = _one(spans, Operation.INVOKE_WORKFLOW.value)
    agents, chats = _one(spans, Operation.INVOKE_AGENT.value), _one(spans, Operation.CHAT.value)
    assert workflow["name"] == f"{Operation.INVOKE_WORKFLOW.value} passing" and workflow["status"] == "UNSET"
    assert workflow["attributes"][gen_ai.GEN_AI_WORKFLOW_NAME] == "passing"
    assert [a["name"] for a in agents] == [
        f"{Operation.INVOKE_AGENT.value} draft",
        f"{Operation.INVOKE_AGENT.value} edit",
    ]
    assert all(a["parent"] == workflow["id"] for a in agents)
    assert [c["parent"] for c in chats] == [a["id"] for a in agents]
    for agent in agents:
        assert agent["attributes"][gen_ai.GEN_AI_AGENT_NAME] == agent["name"].split()[-1]
        assert agent["attributes"][gen_ai.GEN_AI_PROVIDER_NAME] == Provider.ANTHROPIC.value
        assert agent["attributes"][gen_ai.GEN_AI_REQUEST_MODEL] == "claude-sonnet-4-5"
    for chat in chats:
        assert chat["name"] == f"{Operation.CHAT.value} claude-sonnet-4-5" and chat["kind"] == "CLIENT"
        assert chat["attributes"][gen_ai.GEN_AI_PROVIDER_NAME] == Provider.ANTHROPIC.value
        assert chat["attributes"][gen_ai.GEN_AI_RESPONSE_MODEL] == "claude-sonnet-4-5-20250929"
        assert chat["attributes"][gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
        assert chat["attributes"][gen_ai.GEN_AI_RESPONSE_ID] == "msg_7"
    assert not any(error_attributes.ERROR_TYPE in s["attributes"] for s in spans)


@pytest.mark.slow  # a process with its own tracer provider
def test_a_failed_run_is_an_error_workflow_span_with_the_error_type_at_each_level(runs):
    spans = runs["failing"]
    (workflow,) = _one(spans, Operation.INVOKE_WORKFLOW.value)
    (agent,) = _one(spans, Operation.INVOKE_AGENT.value)  # the pipeline stops at its first failed step
    (chat,) = _one(spans, Operation.CHAT.value)
    assert [s["status"] for s in (workflow, agent, chat)] == ["ERROR"] * 3
    assert workflow["attributes"][error_attributes.ERROR_TYPE] == StepFailedError.__qualname__
    assert workflow["attributes"]["qmcp.execution.status"] == "failed"
    assert agent["attributes"][error_attributes.ERROR_TYPE] == PermanentModelError.__qualname__
    assert agent["attributes"][gen_ai.GEN_AI_PROVIDER_NAME] == Provider.MISTRAL_AI.value
    assert chat["attributes"][error_attributes.ERROR_TYPE] == "ModelRequestRejectedError"
    assert chat["attributes"][gen_ai.GEN_AI_REQUEST_MODEL] == "mistral-large-latest"


@pytest.mark.slow  # a process with its own tracer provider
def test_a_run_stopped_by_its_time_limit_is_an_error_workflow_span_of_type_timeout(runs):
    spans = runs["timed_out"]
    (workflow,) = _one(spans, Operation.INVOKE_WORKFLOW.value)
    (chat,) = _one(spans, Operation.CHAT.value)
    assert (
        workflow["status"] == "ERROR"
        and workflow["attributes"][error_attributes.ERROR_TYPE] == "TimeoutError"
    )
    assert chat["status"] == "ERROR" and chat["attributes"][error_attributes.ERROR_TYPE] == "CancelledError"
    assert chat["attributes"][gen_ai.GEN_AI_PROVIDER_NAME] == Provider.GROQ.value
