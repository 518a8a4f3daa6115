"""The server as a process: restarts, SIGTERM, binding, its synchronous Python client, and tracing
(a process-wide OpenTelemetry SDK). Every test here starts `qmcp serve`, so all are slow."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid

import pytest
from _eventually import eventually_async
from _signals import default_signals
from serving import driver_argv, free_port
from team import finished, make_team, run, running

from qmcp.agentframework.store import Database
from qmcp.client import HumanRequestConflictError, MCPClient, ToolNotFoundError


async def test_a_restart_resumes_what_the_previous_server_left_running(start_server, db_url):
    """SIGKILL mid-run: the next server finds the run through its (dead) lease and finishes it,
    calling only the steps that were not recorded (a reply that came as the server died is lost)."""
    slow = {"DRIVER_LATENCY": "0.6"}
    first = start_server(db_url, env=slow)
    async with first.client() as client:
        await make_team(client)
        execution_id = await run(client, "slow-three", "go")
    # the step's row, not the paid call: a reply is paid a moment before its row commits
    await eventually_async(lambda: _recorded(db_url, execution_id), "the first step")
    first.stop(signal.SIGKILL)
    paid_at_kill = len(first.paid())
    recorded = await _recorded(db_url, execution_id)
    assert 1 <= recorded <= paid_at_kill
    second = start_server(db_url, env=slow)
    async with second.client() as client:
        done = await finished(client, execution_id)
    assert done["status"] == "completed" and done["attempts"] == 2
    assert len(second.paid()) - paid_at_kill == 3 - recorded  # only what was not recorded is called again
    assert "(it is gone)" in done["history"][0]["interrupted"]


async def _recorded(db_url: str, execution_id: str) -> int:
    async with Database(db_url) as db:
        return len(await db.steps.completed_steps(uuid.UUID(execution_id)))


async def test_sigterm_lets_runs_finish_within_the_grace_then_leaves_them_resumable(start_server, db_url):
    server = start_server(db_url, env={"DRIVER_LATENCY": "5", "QMCP_SHUTDOWN_GRACE_SECONDS": "0.5"})
    async with server.client() as client:
        await make_team(client)
        execution_id = await run(client, "slow-three", "go")
        await eventually_async(lambda: running(client, execution_id), "the run to start")
    # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit status says SIGTERM
    assert server.stop(signal.SIGTERM, timeout=30) in (0, -signal.SIGTERM)
    async with Database(db_url) as db:
        stopped = await db.get_execution(execution_id)
    assert stopped.status == "interrupted" and "resume" in (stopped.error or "")
    again = start_server(db_url, env={"DRIVER_LATENCY": "0"})
    async with again.client() as client:
        assert (await finished(client, execution_id))["status"] == "completed"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10"])
def test_a_non_loopback_bind_without_a_token_is_refused(worker_env_server, host):
    done = subprocess.run(
        driver_argv("serve", "--host", host, "--port", str(free_port())),
        capture_output=True,
        text=True,
        env={k: v for k, v in worker_env_server.items() if k != "QMCP_API_TOKEN"},
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: refusing to serve on") and done.stderr.count("\n") == 1


async def test_serve_allowed_host_adds_a_name_and_refuses_others(start_server, sqlite_url):
    server = start_server(sqlite_url, "--allowed-host", "qmcp.example.com", "--allowed-host", "b.example")
    async with server.client() as client:
        for host, status in [
            ("qmcp.example.com", 200),
            ("b.example:80", 200),
            ("rebind.attacker.example", 421),
        ]:
            assert (await client.get("/v1/executions", headers={"Host": host})).status_code == status, host


async def test_the_synchronous_python_client(start_server, sqlite_url):
    """A blocking client needs a server on a socket (the asynchronous one is tested in-process)."""
    server = start_server(sqlite_url, model="test")
    async with server.client() as raw:
        await make_team(raw)
    with MCPClient(server.url, correlation_id="client-1") as client:
        assert client.health()["status"] == "healthy"
        assert "echo" in [t.name for t in client.list_tools()]
        result = client.invoke_tool("echo", {"message": "hi"})
        assert (
            result.result == "hi"
            and client.get_invocation(result.invocation_id)["correlation_id"] == "client-1"
        )
        assert client.list_invocations(tool_name="echo")[0]["id"] == result.invocation_id
        with pytest.raises(ToolNotFoundError):
            client.invoke_tool("nope", {})
        request = client.create_human_request("ask-1", "input", "Which market?", timeout_seconds=120)
        assert request.status == "pending"
        with pytest.raises(HumanRequestConflictError):
            client.create_human_request("ask-1", "input", "again?")
        with pytest.raises(TimeoutError):
            client.wait_for_human_response("ask-1", poll_interval=0.05, timeout=0.2)
        answer = client.submit_human_response("ask-1", "Japan", responded_by="ana")
        assert client.wait_for_human_response("ask-1", poll_interval=0.05).response == "Japan"
        assert client.get_human_request("ask-1")[1] == answer
        with pytest.raises(HumanRequestConflictError):
            client.submit_human_response("ask-1", "Korea")
        started = client.run_topology("plan-write", {"prompt": "Plan a launch"})
        events = list(client.stream_events(started.execution_id))
        assert events[-1]["event"] == "end" and events[-1]["status"] == "completed"
        assert client.get_execution(started.execution_id).status == "completed"


async def test_a_run_continues_the_trace_of_the_request_that_started_it(start_server, sqlite_url, tmp_path):
    spans = tmp_path / "spans.jsonl"
    server = start_server(sqlite_url, model="test", env={"QMCP_TEST_SPAN_LOG": str(spans)})
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    async with server.client() as client:
        await make_team(client)
        started = await client.post(
            "/v1/topologies/plan-write/run",
            json={"input": {"prompt": "Plan"}},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        assert (await finished(client, started.json()["execution_id"]))["status"] == "completed"
    recorded = [json.loads(line) for line in spans.read_text().splitlines()]
    (workflow,) = [s for s in recorded if s["name"].startswith("invoke_workflow")]
    assert (workflow["trace_id"], workflow["parent_id"]) == (trace_id, parent_id)
    steps = [s for s in recorded if s["name"].startswith("invoke_agent")]
    assert len(steps) == 2 and {s["trace_id"] for s in steps} == {trace_id}


def test_serve_prints_one_ready_line_once_it_listens(worker_env_server, sqlite_url, tmp_path):
    """Port 0: the line names the port the system chose, and that URL answers as soon as it is printed."""
    import re
    import threading

    import httpx

    process = subprocess.Popen(
        driver_argv("serve", "--port", "0"),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**worker_env_server, "QMCP_DATABASE_URL": sqlite_url},
        cwd=tmp_path,
        preexec_fn=default_signals,
    )
    watchdog = threading.Timer(60, process.kill)  # a server that never says it is ready fails the test
    watchdog.start()
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.fullmatch(
            r"qmcp server ready: console (http://127\.0\.0\.1:(\d+))/  API docs \1/docs  MCP \1/mcp  \(no token required\)\n",
            line,
        )
        assert found, line
        assert int(found[2]) > 0
        assert httpx.get(f"{found[1]}/health", timeout=5).status_code == 200
        assert httpx.get(f"{found[1]}/docs", timeout=5).status_code == 200
    finally:
        watchdog.cancel()
        process.terminate()
        rest = process.communicate(timeout=60)[1]
    assert "ready" not in rest and "GET /health" not in rest  # one line, and no access log by default


async def test_serve_access_log_and_the_token_in_the_ready_line(start_server, sqlite_url):
    server = start_server(sqlite_url, "--access-log", env={"QMCP_API_TOKEN": "t" * 40})
    async with server.client() as client:
        assert (await client.get("/v1/executions")).status_code == 200
    server.stop()
    log = server.log.read_text()
    ready = [line for line in log.splitlines() if line.startswith("qmcp server ready:")]
    assert len(ready) == 1 and ready[0].endswith("  (token required)")
    assert '"GET /v1/executions HTTP/1.1" 200' in log
