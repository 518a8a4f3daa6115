"""Traces: OpenTelemetry spans for the run and each agent step, only when an SDK records them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from qmcp.observability import tracing_active

_TRACED_RUN = textwrap.dedent(
    """
    import asyncio, json, sys

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from qmcp.agentframework.models import AgentConfig, AgentType, PipelineConfig, Topology, TopologyType
    from qmcp.agentframework.runners import LocalRunner, RunConfig
    from qmcp.observability import tracing_active

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    agents = {
        slot: AgentType(name=slot, config=AgentConfig(model="test").model_dump()) for slot in ("draft", "edit")
    }
    topology = Topology(name="traced", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump())
    result = asyncio.run(
        LocalRunner(config=RunConfig(trace_enabled=sys.argv[2] == "on"), db_url=sys.argv[1]).run(
            topology, agents, {"prompt": "p"}
        )
    )
    spans = [
        {"name": span.name, "attributes": dict(span.attributes), "parent": span.parent.span_id if span.parent else None,
         "id": span.context.span_id}
        for span in exporter.get_finished_spans()
    ]
    print(json.dumps({"active": tracing_active(), "status": str(result.status), "spans": spans}))
    """
)


def _traced_run(tmp_path, switch: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _TRACED_RUN, f"sqlite+aiosqlite:///{tmp_path}/t.db", switch],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a process with its own tracer provider
def test_a_run_is_one_workflow_span_with_a_child_span_per_agent_step(tmp_path):
    traced = _traced_run(tmp_path, "on")
    assert traced["active"] and traced["status"] == "completed"
    workflow = [s for s in traced["spans"] if s["name"] == "invoke_workflow traced"]
    steps = [s for s in traced["spans"] if s["name"].startswith("invoke_agent ")]
    assert len(workflow) == 1 and [s["name"] for s in steps] == ["invoke_agent draft", "invoke_agent edit"]
    assert all(s["parent"] == workflow[0]["id"] for s in steps)
    assert steps[0]["attributes"]["gen_ai.request.model"] == "test"
    assert steps[1]["attributes"]["qmcp.step.key"].endswith("edit")
    paid = workflow[0]["attributes"]  # the attempt's usage: its steps' added up
    for name in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "qmcp.usage.requests"):
        assert paid[name] == sum(s["attributes"][name] for s in steps) > 0


@pytest.mark.slow  # a process with its own tracer provider
def test_trace_enabled_false_records_no_spans(tmp_path):
    assert _traced_run(tmp_path, "off")["spans"] == []


def test_without_an_sdk_no_spans_are_made():
    assert not tracing_active()


def test_logged_tracebacks_are_plain_without_frame_variables(capsys):
    """Rich's tracebacks (structlog's default) print every frame's variables: thousands of lines."""
    from qmcp import observability

    try:
        observability.configure_logging("INFO")
        secret_local = "a frame variable"  # noqa: F841  (must not be printed)
        try:
            raise RuntimeError("boom")
        except RuntimeError as error:
            observability.get_logger().info("run.internal_error", exc_info=error)
    finally:
        observability.reset_logging()
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom" in err
    assert "a frame variable" not in err and "locals" not in err


@pytest.mark.slow  # runs the documented example in a process
def test_the_documented_tracing_example_prints_the_spans_and_gen_ai_attributes(tmp_path):
    """docs/observability.md's program, run as written, with the console exporter."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "observability.md").read_text()
    program = re.search(r"```python\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("completed") and done.stderr == ""
    spans = json.loads("[" + re.sub(r"\}\n\{", "},{", done.stdout.rsplit("\n", 2)[0].strip()) + "]")
    by_name = {span["name"]: span for span in spans}
    assert [span["name"] for span in spans] == [
        "chat test",
        "invoke_agent drafter",
        "chat test",
        "invoke_agent editor",
        "invoke_workflow traced",
    ]
    workflow = by_name["invoke_workflow traced"]
    drafter = by_name["invoke_agent drafter"]
    assert drafter["parent_id"] == workflow["context"]["span_id"]
    assert spans[0]["parent_id"] == drafter["context"]["span_id"]
    assert spans[0]["attributes"]["gen_ai.response.model"] == "test"
    assert drafter["attributes"]["gen_ai.request.model"] == "test"
    assert drafter["attributes"]["gen_ai.usage.input_tokens"] > 0
    assert drafter["attributes"]["qmcp.step.key"] == "pipeline/0:draft"
    assert workflow["attributes"]["gen_ai.operation.name"] == "invoke_workflow"


def test_trace_context_crosses_processes_as_w3c_headers_and_variables(monkeypatch):
    """What MetaflowRunner hands its flow (and what the server calls around a run it starts)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from qmcp.observability import continued_trace, trace_carrier, trace_environment

    assert trace_carrier() == {}  # nothing recording: nothing to pass on
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("parent") as parent:
        carrier, environment = trace_carrier(), trace_environment()
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    assert carrier["traceparent"].split("-")[1] == trace_id
    assert environment["TRACEPARENT"] == carrier["traceparent"]
    with continued_trace({"Traceparent": carrier["traceparent"]}):
        assert trace.get_current_span().get_span_context().trace_id == parent.get_span_context().trace_id
    monkeypatch.setenv("TRACEPARENT", carrier["traceparent"])
    with continued_trace(), tracer.start_as_current_span("child") as child:
        assert child.parent is not None and child.parent.span_id == parent.get_span_context().span_id
    assert not trace.get_current_span().get_span_context().is_valid
    with continued_trace({}):  # no trace to continue: nothing changes
        assert not trace.get_current_span().get_span_context().is_valid


_PLANTED_KEY_RUN = textwrap.dedent(
    """
    import asyncio, http.server, io, json, logging, sys, threading

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from qmcp.agentframework.models import AgentConfig, AgentType, PipelineConfig, Topology, TopologyType
    from qmcp.agentframework.runners import LocalRunner, RunConfig
    from qmcp.agentframework.store import Database
    from qmcp.observability import configure_logging

    KEY, VARIABLE = sys.argv[2], sys.argv[3]
    seen = []

    class Provider(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            token = self.headers.get("Authorization", "")
            seen.append(token)
            status = 503 if len(seen) == 1 else 401  # a retried failure, then a permanent one
            body = json.dumps({"error": {"message": f"Incorrect API key provided: {token.split()[-1]}",
                                         "type": "invalid_request_error"}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    host_log = io.StringIO()
    handler = logging.StreamHandler(host_log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(qmcp_fields)s"))
    configure_logging("DEBUG", "json")  # the CLI's rendering, on stderr
    logging.getLogger("qmcp").addHandler(handler)  # and a host's handler with its own format

    config = AgentConfig(
        model="openai-compatible:gpt-x",
        base_url=f"http://127.0.0.1:{server.server_port}/v1",
        api_key_env=VARIABLE,
    )
    agents = {"only": AgentType(name="keyed", config=config.model_dump())}
    topology = Topology(name="keyed", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump())
    url = sys.argv[1]
    runner = LocalRunner(config=RunConfig(log_level="DEBUG", max_retries=2, retry_backoff_seconds=0.01), db_url=url)
    result = asyncio.run(runner.run(topology, agents, {"prompt": "p"}))

    async def rows():
        async with Database(url) as db:
            execution = await db.get_execution(result.execution_id)
            steps = await db.list_steps(result.execution_id)
            return execution.model_dump_json() + "".join(s.model_dump_json() for s in steps)

    spans = [span.to_json() for span in exporter.get_finished_spans()]
    print(json.dumps({"status": str(result.status), "error": result.error, "seen": seen, "spans": spans,
                      "log": host_log.getvalue(), "rows": asyncio.run(rows())}))
    """
)


@pytest.mark.slow  # a process with its own tracer provider
@pytest.mark.parametrize(
    ("variable", "key"),
    [
        ("PLANTED_API_KEY", "sk-planted-" + "7" * 32),
        ("LLM_CREDENTIAL", "cred" + "7" * 32),  # neither the name nor the value says it is a key
    ],
)
def test_a_planted_api_key_never_reaches_spans_logs_or_the_database(tmp_path, variable, key):
    """The provider quotes the key it was sent in its error message, as OpenAI's does."""
    done = subprocess.run(
        [sys.executable, "-c", _PLANTED_KEY_RUN, f"sqlite+aiosqlite:///{tmp_path}/k.db", key, variable],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, variable: key},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["seen"] == [f"Bearer {key}"] * 2  # the key was sent, and quoted back, twice
    assert report["status"] == "failed" and "401" in report["error"]
    assert "step.failed" in report["log"] and "run.end" in done.stderr
    assert any("invoke_agent keyed" in span for span in report["spans"])
    everything = json.dumps({**report, "seen": None}) + done.stderr
    assert key not in everything and "7" * 32 not in everything
    assert "***" in report["error"]


@pytest.mark.parametrize("created", [True, False], ids=["created-series", "no-created-series"])
def test_step_metrics_expose_what_prometheus_clients_counters_and_histogram_would(created):
    """`StepMetrics` counts steps under one lock and makes its families at a scrape: the exposition is
    the one of prometheus-client's `Counter`s and `Histogram` fed the same steps, their `_created`
    series included (at another time) or left out as prometheus-client's switch says."""
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from qmcp.observability import StepMetrics

    if not created:
        prometheus_client.disable_created_metrics()
    try:
        ours, theirs = CollectorRegistry(), CollectorRegistry()
        metrics = StepMetrics()
        ours.register(metrics)
        steps = Counter(
            "qmcp_steps", "Agent steps by outcome (completed, replayed, failed)", ["outcome"], registry=theirs
        )
        tokens = Counter("qmcp_tokens", "Tokens used by agent steps", ["direction"], registry=theirs)
        latency = Histogram(
            "qmcp_step_latency_seconds",
            "Latency of agent model calls",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=theirs,
        )
        for outcome in ("completed", "replayed", "failed"):
            steps.labels(outcome)
        for direction in ("input", "output"):
            tokens.labels(direction)
        # on a bucket's bound, between bounds, below the first and above the last
        for seconds, used in (
            (0.05, (10, 3)),
            (0.07, (5, 1)),
            (0.001, (1, 1)),
            (120, (2, 2)),
            (121.5, (7, 9)),
        ):
            metrics.record("completed", *used, seconds)
            steps.labels("completed").inc()
            tokens.labels("input").inc(used[0])
            tokens.labels("output").inc(used[1])
            latency.observe(seconds)
        for outcome in ("replayed", "failed", "replayed"):
            metrics.record(outcome)
            steps.labels(outcome).inc()

        def exposed(registry: CollectorRegistry) -> list[str]:
            lines = generate_latest(registry).decode().splitlines()
            return [line.rsplit(" ", 1)[0] if "_created" in line else line for line in lines]

        assert exposed(ours) == exposed(theirs)
        assert any("_created" in line for line in exposed(ours)) == created
        assert metrics.steps("completed") == 5 and metrics.steps("replayed") == 2
    finally:
        prometheus_client.enable_created_metrics()
