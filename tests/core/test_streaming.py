"""Token streaming: replies arrive as `delta` events while the model writes them; the row is unchanged."""

from __future__ import annotations

import time

import pytest

from qmcp.agentframework.llm import call_model, make_test_model
from qmcp.agentframework.models import ExecutionStatus, Topology
from qmcp.agentframework.runners import AsyncRunner, LocalRunner
from qmcp.agentframework.store import Database


async def test_the_test_model_streams_the_reply_it_returns():
    model = make_test_model("writer")
    messages = [{"role": "user", "content": "Write about the sea, briefly."}]
    whole = await call_model(model, "test", system="You write.", messages=messages, settings={})
    pieces: list[str] = []
    streamed = await call_model(
        model, "test", system="You write.", messages=messages, settings={}, on_delta=pieces.append
    )
    assert len(pieces) > 3 and "".join(pieces) == streamed.text == whole.text
    assert (streamed.input_tokens, streamed.output_tokens) == (whole.input_tokens, whole.output_tokens)


@pytest.mark.parametrize("runner_class", [LocalRunner, AsyncRunner])
async def test_deltas_arrive_before_the_step_completes_and_the_row_is_their_join(
    sqlite_url, agent, scripted, runner_class
):
    name, _ = scripted(chunk_delay=0.02, replies=["one two three four five six", "seven eight nine"])
    events: list[tuple[float, str, str, str]] = []

    def on_event(event) -> None:
        events.append((time.monotonic(), event.kind, event.key, event.text))

    topology = Topology(name="pipe", topology_type="pipeline", config={})
    agents = {"first": agent("a1", model=name), "second": agent("a2", model=name)}
    result = await runner_class(db_url=sqlite_url, on_event=on_event, stream=True).run(
        topology, agents, {"prompt": "go"}
    )
    assert result.status == ExecutionStatus.COMPLETED, result.error
    async with Database(sqlite_url) as db:
        rows = {step.key: step for step in await db.list_steps(result.execution_id)}
    for key, expected in (
        ("pipeline/0:first", "one two three four five six"),
        ("pipeline/1:second", "seven eight nine"),
    ):
        kinds = [kind for _, kind, k, _ in events if k == key]
        assert (
            kinds[0] == "started"
            and kinds[-1] == "completed"
            and kinds.count("delta") == len(expected.split())
        )
        deltas = [(at, text) for at, kind, k, text in events if k == key and kind == "delta"]
        completed_at = next(at for at, kind, k, _ in events if k == key and kind == "completed")
        assert all(at < completed_at for at, _ in deltas)
        assert deltas[-1][0] - deltas[0][0] >= 0.02 * (len(deltas) - 1) * 0.8  # they came as written
        assert "".join(text for _, text in deltas) == rows[key].response == expected


async def test_without_stream_no_deltas_and_the_same_rows(sqlite_url, agent):
    topology = Topology(name="ens", topology_type="ensemble", config={"aggregation_method": "synthesis"})
    agents = {"m1": agent("r1"), "m2": agent("r2"), "aggregator": agent("syn", "synthesizer")}
    rows = []
    for stream in (False, True):
        kinds: list[str] = []
        runner = LocalRunner(
            db_url=sqlite_url, on_event=lambda e, seen=kinds: seen.append(e.kind), stream=stream
        )
        result = await runner.run(topology, agents, {"prompt": "Is water wet?"})
        assert ("delta" in kinds) is stream
        async with Database(sqlite_url) as db:
            steps = await db.list_steps(result.execution_id)
        rows.append([(s.key, s.response, s.input_tokens, s.output_tokens) for s in steps])
    assert rows[0] == rows[1]


async def test_a_retried_stream_starts_its_text_again(sqlite_url, agent, scripted):
    name, _ = scripted(replies=["alpha beta"], failures={0: "server_error"})
    events: list[tuple[str, str]] = []
    topology = Topology(name="one", topology_type="pipeline", config={})
    runner = LocalRunner(db_url=sqlite_url, on_event=lambda e: events.append((e.kind, e.text)), stream=True)
    runner.config.retry_backoff_seconds = 0.01
    result = await runner.run(topology, {"only": agent("a", model=name)}, {"prompt": "go"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    kinds = [k for k, _ in events]
    assert kinds.index("retry") < kinds.index("delta")
    assert "".join(t for k, t in events if k == "delta") == "alpha beta"


@pytest.mark.parametrize("size", [1, 3, 7])
async def test_a_key_split_across_streamed_deltas_is_masked_as_in_the_whole_reply(sqlite_url, agent, size):
    """A secret the model writes is masked in the deltas however the stream cuts it: their join is the
    reply as `redact` masks it whole (registered values, values holding spaces, `Bearer` and `sk-` keys)."""
    import uuid

    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.models.function import FunctionModel

    from qmcp.agentframework.llm import register_model, unregister_model
    from qmcp.redaction import MASK, redact, register_secret

    key, spaced = f"cred{uuid.uuid4().hex}", f"open sesame {uuid.uuid4().hex[:8]}"
    register_secret(key)
    register_secret(spaced)
    reply = (
        f"The key is {key}, the phrase '{spaced}' and the header Bearer {uuid.uuid4().hex}; "
        f"also sk-{uuid.uuid4().hex} and {key}"
    )

    async def whole(_messages, _info):
        return ModelResponse(parts=[TextPart(reply)])

    async def pieces(_messages, _info):
        for at in range(0, len(reply), size):
            yield reply[at : at + size]

    name = f"split-{uuid.uuid4().hex[:8]}"
    register_model(name, FunctionModel(whole, stream_function=pieces))
    deltas: list[str] = []
    try:
        runner = LocalRunner(
            db_url=sqlite_url, on_event=lambda e: e.kind == "delta" and deltas.append(e.text), stream=True
        )
        topology = Topology(name="one", topology_type="pipeline", config={})
        result = await runner.run(topology, {"only": agent("a", model=name)}, {"prompt": "go"})
    finally:
        unregister_model(name)
    assert result.status == ExecutionStatus.COMPLETED, result.error
    joined = "".join(deltas)
    assert joined == redact(reply) and joined.count(MASK) == 5, joined
    assert len(deltas) > 5 and not any(key[:4] in d or "sesame" in d for d in deltas)


async def test_a_runner_with_no_event_handler_builds_only_the_events_it_logs_and_counts(
    sqlite_url, agent, scripted
):
    """With no handler of its user's, a runner's own handler does nothing with `started` events: they
    are not built; the events it logs and counts in metrics still come, and the metrics count them."""
    from qmcp.observability import METRICS

    name, _ = scripted(replies=["one", "two"])
    heard: list[str] = []

    class Listening(AsyncRunner):
        def _observe(self, event) -> None:  # the runner's own handler, spied on
            heard.append(event.kind)
            super()._observe(event)

    completed = METRICS.steps.steps("completed")
    topology = Topology(name="pipe", topology_type="pipeline", config={})
    agents = {"first": agent("a1", model=name), "second": agent("a2", model=name)}
    result = await Listening(db_url=sqlite_url).run(topology, agents, {"prompt": "go"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert heard == ["completed", "completed"]
    assert METRICS.steps.steps("completed") == completed + 2
    heard.clear()
    result = await Listening(db_url=sqlite_url, on_event=lambda _: None).run(
        topology, agents, {"prompt": "go"}
    )
    assert heard == ["started", "completed", "started", "completed"]
