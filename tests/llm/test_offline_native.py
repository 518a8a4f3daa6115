"""The offline models answer plain calls natively (no pydantic-ai), exactly as through pydantic-ai.

`call_model` answers a `test`, scripted or `recorded:` model's call without tools in qmcp's own
types (`llm/_native.py`, `llm/_calling.py`); a call with tools goes through pydantic-ai's tool loop
over the same model (`model.pydantic_model`). Both must give the same reply, tokens, cost, deltas,
errors and spans; a process running offline models imports pydantic-ai only for a tool call.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai.messages import ModelRequest, ModelResponse, SystemPromptPart, TextPart, UserPromptPart
from pydantic_ai.models.function import _estimate_usage

from qmcp.agentframework.errors import ModelError
from qmcp.agentframework.llm import (
    FAILURE_KINDS,
    ChatMessage,
    OfflineModel,
    ScriptedModel,
    call_model,
    calling_step,
    json_instruction,
    resolve_model,
)
from qmcp.agentframework.llm._native import estimate_tokens, estimate_usage, test_model
from qmcp.agentframework.llm._recorded import RecordedModel
from qmcp.agentframework.models import ModelConfig, Models

ROOT = Path(__file__).resolve().parents[2]

_WORDS = ["sea", "report:", "Task:", "x,y", '"quoted"', "a.b", "  ", "\n", "éclair", "42", "—", "\t", "", ":"]


def _prompts(count: int, seed: int = 7) -> list[str]:
    """Prompts of all shapes: labels, punctuation the estimate splits on, blanks, unicode, schemas."""
    rng = random.Random(seed)
    found = ["", " ", "\n\n", "Task: Summarise the report", "Debate topic: is water wet?"]
    for _ in range(count):
        found.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 30))))
    schema = {"type": "object", "properties": {"approved": {"type": "boolean"}, "issues": {"type": "array"}}}
    found.append(f"Check the plan\n\n{json_instruction(schema)}")
    return found


def _messages(prompt: str, history: int) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for turn in range(history):
        messages += [
            {"role": "user", "content": f"earlier question {turn}: {prompt[:10]}"},
            {"role": "assistant", "content": f"earlier, answer {turn}."},
        ]
    return [*messages, {"role": "user", "content": prompt}]


async def _both(model: OfflineModel, **call: Any) -> tuple[Any, Any]:
    """The same call natively and through pydantic-ai (the adapter the tool loop uses)."""
    native = await call_model(model, settings={}, **call)
    adapted = await call_model(model.pydantic_model, settings={}, **call)
    return native, adapted


def _same(native: Any, adapted: Any) -> None:
    assert (native.text, native.input_tokens, native.output_tokens, native.cost_usd, native.tool_calls) == (
        adapted.text,
        adapted.input_tokens,
        adapted.output_tokens,
        adapted.cost_usd,
        adapted.tool_calls,
    )


def test_the_token_estimate_is_pydantic_ais():
    rng = random.Random(3)
    for prompt in _prompts(300):
        system = rng.choice(["", "You write.", "You are w, a writer agent: brief, exact."])
        messages = _messages(prompt, rng.randint(0, 2))
        reply = rng.choice(["", "one two", prompt[::-1]])
        parts: list[Any] = []
        for index, message in enumerate(messages):
            if message["role"] == "assistant":
                parts.append(ModelResponse(parts=[TextPart(message["content"])]))
            else:
                request: list[Any] = [UserPromptPart(message["content"])]
                if index == 0 and system:
                    request.insert(0, SystemPromptPart(system))
                parts.append(ModelRequest(parts=request))
        theirs = _estimate_usage([*parts, ModelResponse(parts=[TextPart(reply)])])
        assert estimate_usage(system, messages, reply) == (theirs.input_tokens, theirs.output_tokens), prompt
    assert (estimate_tokens(""), estimate_tokens("  "), estimate_tokens('a, "b": c.d')) == (0, 1, 4)


def test_the_token_count_is_pydantic_ais_split():
    """`estimate_tokens` counts without splitting by pydantic-ai's pattern: the counts are the same,
    punctuation and Unicode whitespace at either end included."""
    pattern = re.compile(r'[\s",.:]+')
    rng = random.Random(5)
    alphabet = 'ab ",.:\n\t\x0b\x1c\x85\u00a0\u2003\u3000é'
    texts = ["", " ", '"', ". .", 'a, "b": c.d', ":a:", "  x.  ", "\u2003.\u2003"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(20_000)]
    for text in texts:
        assert estimate_tokens(text) == (len(pattern.split(text.strip())) if text else 0), repr(text)


async def test_an_offline_call_lets_the_loop_run_its_other_tasks():
    """A model call is where a run's heartbeat, a cancel and a server's other requests get the loop,
    even from a model that waits on nothing (the demo stops its run at the first step this way)."""
    model, ticks = test_model("writer"), [0]

    async def ticker() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks[0]
    for prompt in _prompts(5):
        await call_model(model, settings={}, model_string="test", system=None, messages=_messages(prompt, 0))
    running.cancel()
    assert ticks[0] - before >= 5


@pytest.mark.parametrize(("latency", "called_first"), [(0.0, False), (0.001, True)])
async def test_a_model_that_always_waits_starts_its_wait_before_the_loops_other_work(latency, called_first):
    """A scripted model with a latency is called at once, as a provider's request is sent at once;
    one that may answer at once lets the loop's other ready work run first."""
    model = ScriptedModel(latency=latency)
    seen: list[int] = []
    asyncio.get_running_loop().call_soon(lambda: seen.append(len(model.calls)))  # ready before the call
    await call_model(model, settings={}, model_string="scripted", system=None, messages=_messages("p", 0))
    assert seen == [1 if called_first else 0]


@pytest.mark.parametrize("role", ["writer", "judge", "checker", "generalist", ""])
async def test_the_test_models_replies_and_usage_are_the_same_on_both_paths(role):
    model = test_model(role)
    for index, prompt in enumerate(_prompts(40, seed=len(role))):
        call = {
            "model_string": "test",
            "system": None if index % 3 == 0 else "You are t, a test agent.",
            "messages": _messages(prompt, index % 3),
        }
        _same(*await _both(model, **call))
        deltas: tuple[list[str], list[str]] = ([], [])
        native = await call_model(model, settings={}, on_delta=deltas[0].append, **call)
        adapted = await call_model(model.pydantic_model, settings={}, on_delta=deltas[1].append, **call)
        _same(native, adapted)
        assert deltas[0] == deltas[1] and "".join(deltas[0]) == native.text


async def test_a_scripted_models_replies_calls_and_cost_are_the_same_on_both_paths():
    priced = Models.register(
        ModelConfig(
            provider="scripted", name="native-priced", input_price_per_mtok=1e6, output_price_per_mtok=2e6
        )
    )
    for model_string in (priced.model_string, "scripted:unpriced"):
        native_model, adapted_model = (
            ScriptedModel(name=model_string, replies=lambda p, i: f"{i}: {p[::-1]}") for _ in range(2)
        )
        for prompt in _prompts(20):
            call = {"model_string": model_string, "system": "sys", "messages": _messages(prompt, 1)}
            native = await call_model(native_model, settings={}, **call)
            adapted = await call_model(adapted_model.pydantic_model, settings={}, **call)
            _same(native, adapted)
        assert native_model.calls == adapted_model.calls
    assert native.cost_usd == 0.0


@pytest.mark.parametrize("kind", FAILURE_KINDS)
async def test_injected_failures_classify_and_trace_the_same_on_both_paths(kind):
    errors: list[ModelError] = []
    spans = []
    for adapt in (False, True):
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        scripted = ScriptedModel(name="scripted", failures={0: kind})
        with pytest.raises(ModelError) as caught:
            await call_model(
                scripted.pydantic_model if adapt else scripted,
                "scripted:x",
                system=None,
                messages=[{"role": "user", "content": "x"}],
                settings={"max_tokens": 5},
                tracer=provider.get_tracer("test"),
            )
        errors.append(caught.value)
        (span,) = exporter.get_finished_spans()
        spans.append(
            (span.name, dict(span.attributes or {}), span.status.description, span.events[0].attributes)
        )
    native, adapted = errors
    assert type(native) is type(adapted) and str(native) == str(adapted)
    assert (native.status_code, getattr(native, "retry_after", None), native.model) == (
        adapted.status_code,
        getattr(adapted, "retry_after", None),
        adapted.model,
    )
    assert spans[0] == spans[1]


async def test_spans_of_an_answered_call_are_the_same_on_both_paths():
    spans = []
    for adapt in (False, True):
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        model = test_model("writer")
        await call_model(
            model.pydantic_model if adapt else model,
            "test",
            system="s",
            messages=[{"role": "user", "content": "Write"}],
            settings={"temperature": 0.3},
            tracer=provider.get_tracer("test"),
        )
        (span,) = exporter.get_finished_spans()
        spans.append((span.name, span.kind, dict(span.attributes or {}), span.status.status_code))
    assert spans[0] == spans[1]


async def test_a_scripted_timeout_and_a_failing_reply_function_classify_the_same():
    for make in (
        lambda: ScriptedModel(latency=1.0),
        lambda: ScriptedModel(replies=lambda p, i: str(1 / 0)),
        lambda: ScriptedModel(failures={0: "no-such-kind"}),
    ):
        errors = []
        for adapt in (False, True):
            model = make()
            with pytest.raises(ModelError) as caught:
                await call_model(
                    model.pydantic_model if adapt else model,
                    "s",
                    system=None,
                    messages=[{"role": "user", "content": "x"}],
                    settings={},
                    timeout_seconds=0.05,
                )
            errors.append(caught.value)
        assert type(errors[0]) is type(errors[1]) and str(errors[0]) == str(errors[1])


async def test_a_recording_answers_the_same_on_both_paths(tmp_path):
    fixture = tmp_path / "run.json"
    steps = [
        {"key": "pipeline/0:a", "response": "recorded, with tokens", "input_tokens": 11, "output_tokens": 3},
        {"key": "pipeline/1:b", "response": "recorded without tokens"},
    ]
    fixture.write_text(json.dumps({"format": "qmcp-fixture/1", "steps": steps}))
    model = resolve_model(f"recorded:{fixture}")
    assert isinstance(model, RecordedModel)
    for key in ("pipeline/0:a", "pipeline/1:b"):
        with calling_step(key):
            call = {"model_string": "recorded", "system": "s", "messages": _messages("go", 0)}
            _same(*await _both(model, **call))
            streamed = [
                await call_model(m, settings={}, on_delta=lambda _t: None, **call)
                for m in (model, model.pydantic_model)
            ]
            _same(*streamed)


def _run(code: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


_RUN = """
import asyncio, json, sys
import qmcp
from qmcp import AgentConfig, AgentType, LocalRunner, Topology
from qmcp.agentframework.llm import ScriptedModel, register_model

register_model("scripted:plain", ScriptedModel(name="scripted:plain").model)
def team(model):
    return {
        f"s{i}": AgentType(name=f"a{i}", role="writer", config=AgentConfig(model=model).model_dump())
        for i in range(3)
    }
async def main():
    runner = LocalRunner(db_url=%(url)r, stream=%(stream)s, on_event=lambda event: None)
    outputs = []
    for model in ("test", "scripted:plain"):
        topology = Topology(name="p-" + model.replace(":", "-"), topology_type="pipeline")
        result = await runner.run(topology, team(model), {"prompt": "Write about the sea"})
        assert result.status == "completed", result.error
        outputs.append(str(result.output)[:40])
    return outputs
outputs = asyncio.run(main())
print(json.dumps({"outputs": outputs, "pydantic_ai": "pydantic_ai" in sys.modules}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_an_offline_pipeline_on_sqlite_never_imports_pydantic_ai(tmp_path, stream):
    url = f"sqlite+aiosqlite:///{tmp_path}/offline.db"
    found = _run(_RUN % {"url": url, "stream": stream})
    assert found["pydantic_ai"] is False and all(found["outputs"])


@pytest.mark.slow
def test_a_tool_using_test_model_step_imports_pydantic_ai_and_calls_its_tools(tmp_path):
    found = _run(
        f"""
        import asyncio, json, sys
        from qmcp import AgentConfig, AgentType, LocalRunner, Topology
        from qmcp.agentframework.mixins import register_tool
        from qmcp.agentframework.store import Database

        def add(a: int, b: int) -> int:
            return a + b

        register_tool("add", add)
        config = AgentConfig(model="test", capabilities=["tool_use"], mixins={{"tool_use": {{"tools": ["add"]}}}})
        agents = {{"s0": AgentType(name="adder", role="writer", config=config.model_dump())}}
        url = "sqlite+aiosqlite:///{tmp_path}/tools.db"
        async def main():
            result = await LocalRunner(db_url=url).run(Topology(name="t", topology_type="pipeline"), agents,
                                                       {{"prompt": "Add two numbers"}})
            assert result.status == "completed", result.error
            async with Database(url) as db:
                return [step.output["tool_calls"] for step in await db.list_steps(result.execution_id)]
        calls = asyncio.run(main())
        print(json.dumps({{"calls": calls, "pydantic_ai": "pydantic_ai" in sys.modules}}))
        """
    )
    ((call,),) = found["calls"]
    assert found["pydantic_ai"] is True
    assert call["tool"] == "add" and call["result"] == call["args"]["a"] + call["args"]["b"]


@pytest.mark.slow
def test_a_cli_run_on_the_test_model_never_imports_pydantic_ai(tmp_path):
    """`qmcp init`, `apply`, `agents topologies run` on the offline team: no pydantic-ai in the process."""
    found = _run(
        f"""
        import contextlib, io, json, os, sys
        os.chdir({str(tmp_path)!r})
        os.environ["QMCP_DATABASE_URL"] = "sqlite+aiosqlite:///{tmp_path}/cli.db"
        from qmcp.cli import main
        prompt = json.dumps({{"prompt": "Plan a picnic"}})
        commands = (["init"], ["apply", "-f", "team.yaml"],
                    ["agents", "topologies", "run", "draft_and_review", "--input-json", prompt])
        codes, out = [], io.StringIO()
        for argv in commands:
            sys.argv = ["qmcp", *argv]
            try:
                with contextlib.redirect_stdout(out):
                    main()
                codes.append(0)
            except SystemExit as done:
                codes.append(done.code or 0)
        print(json.dumps({{"codes": codes, "out": out.getvalue(), "pydantic_ai": "pydantic_ai" in sys.modules}}))
        """
    )
    assert found["codes"] == [0, 0, 0] and "Confidence:" in found["out"]
    assert found["pydantic_ai"] is False


async def test_a_scripted_call_that_cannot_outlast_its_timeout_sets_no_timer(monkeypatch):
    """A call's timer is set only when the call may take its timeout or longer: a scripted model's
    latency bounds its call (unless streamed pieces wait too); the other offline models wait on nothing."""
    import qmcp.agentframework.llm._calling as calling

    assert not ScriptedModel(latency=0.01).may_outlast(5, streamed=False)
    assert ScriptedModel(latency=0.01).may_outlast(0.01, streamed=False)
    assert ScriptedModel(latency=0.01, chunk_delay=0.001).may_outlast(5, streamed=True)
    assert not ScriptedModel(latency=0.01, chunk_delay=0.001).may_outlast(5, streamed=False)
    assert not test_model("writer").may_outlast(0.001, streamed=True)
    timers: list[float] = []
    real = asyncio.timeout

    def counted(delay: float | None) -> Any:
        timers.append(delay or 0)
        return real(delay)

    monkeypatch.setattr(calling.asyncio, "timeout", counted)
    call = {"system": None, "messages": [{"role": "user", "content": "x"}], "settings": {}}
    await call_model(ScriptedModel(latency=0.01), "s", timeout_seconds=5, **call)
    assert timers == []
    with pytest.raises(ModelError):
        await call_model(ScriptedModel(latency=1.0), "s", timeout_seconds=0.05, **call)
    assert timers == [0.05]
