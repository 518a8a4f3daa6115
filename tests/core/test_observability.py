"""Traces: OpenTelemetry spans for the run and each agent step, only when an SDK records them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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


def test_a_run_is_one_workflow_span_with_a_child_span_per_agent_step(tmp_path):
    traced = _traced_run(tmp_path, "on")
    assert traced["active"] and traced["status"] == "completed"
    workflow = [s for s in traced["spans"] if s["name"] == "invoke_workflow traced"]
    steps = [s for s in traced["spans"] if s["name"].startswith("invoke_agent ")]
    assert len(workflow) == 1 and [s["name"] for s in steps] == ["invoke_agent draft", "invoke_agent edit"]
    assert all(s["parent"] == workflow[0]["id"] for s in steps)
    assert steps[0]["attributes"]["gen_ai.request.model"] == "test"
    assert steps[1]["attributes"]["qmcp.step.key"].endswith("edit")


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
