"""The server as a process: restarts, SIGTERM, auth, binding, load, and its Python client."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections import Counter

import httpx
import pytest
from conftest import driver_argv, free_port, wait_until
from test_server_api import PROBLEM, _finished, _team

from qmcp.agentframework.store import Database
from qmcp.client import (
    AsyncQmcpClient,
    HumanRequestConflictError,
    HumanRequestExpiredError,
    MCPClient,
    QmcpClient,
    QmcpClientError,
    ToolNotFoundError,
)

pytestmark = pytest.mark.slow


def test_a_restart_resumes_what_the_previous_server_left_running(start_server, db_url):
    """SIGKILL mid-run: the next server finds the run through its (dead) lease and finishes it,
    calling only the steps that were not recorded (a reply that came as the server died is lost)."""
    slow = {"DRIVER_LATENCY": "0.6"}
    first = start_server(db_url, env=slow)
    with first.client() as client:
        _team(client)
        run = client.post("/v1/topologies/slow-three/run", json={"input": {"prompt": "go"}}).json()
        # the step's row, not the paid call: a reply is paid a moment before its row commits
        wait_until(lambda: asyncio.run(_recorded(db_url, run["execution_id"])) >= 1, "the first step")
    first.stop(signal.SIGKILL)
    paid_at_kill = len(first.paid())
    recorded = asyncio.run(_recorded(db_url, run["execution_id"]))
    assert 1 <= recorded <= paid_at_kill
    second = start_server(db_url, env=slow)
    with second.client() as client:
        done = _finished(client, run["execution_id"])
    assert done["status"] == "completed" and done["attempts"] == 2
    assert len(second.paid()) - paid_at_kill == 3 - recorded  # only what was not recorded is called again
    assert "(it is gone)" in done["history"][0]["interrupted"]


async def _recorded(db_url: str, execution_id: str) -> int:
    async with Database(db_url) as db:
        return len(await db.steps.completed_steps(uuid.UUID(execution_id)))


def test_sigterm_lets_runs_finish_within_the_grace_then_leaves_them_resumable(start_server, db_url, tmp_path):
    server = start_server(db_url, env={"DRIVER_LATENCY": "5", "QMCP_SHUTDOWN_GRACE_SECONDS": "0.5"})
    with server.client() as client:
        _team(client)
        run = client.post("/v1/topologies/slow-three/run", json={"input": {"prompt": "go"}}).json()
        wait_until(
            lambda: client.get(f"/v1/executions/{run['execution_id']}").json()["status"] == "running", "run"
        )
    # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit status says SIGTERM
    assert server.stop(signal.SIGTERM, timeout=30) in (0, -signal.SIGTERM)
    stopped = asyncio.run(_execution(db_url, run["execution_id"]))
    assert stopped.status == "interrupted" and "resume" in (stopped.error or "")
    again = start_server(db_url, env={"DRIVER_LATENCY": "0"})
    with again.client() as client:
        assert _finished(client, run["execution_id"])["status"] == "completed"


async def _execution(db_url: str, execution_id: str):
    async with Database(db_url) as db:
        return await db.get_execution(execution_id)


def test_a_token_guards_every_endpoint_but_health(start_server, sqlite_url):
    server = start_server(sqlite_url, env={"QMCP_API_TOKEN": "s3cret"}, model="test")
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/health").status_code == 200
        for path in ("/v1/tools", "/metrics", "/docs", "/openapi.json", "/v1/executions", "/mcp"):
            denied = anonymous.get(path)
            assert denied.status_code == 401 and denied.headers["content-type"] == PROBLEM, path
            assert denied.headers["www-authenticate"] == "Bearer"
        wrong = anonymous.get("/v1/tools", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    with server.client() as client:
        assert client.get("/v1/tools").status_code == 200
    with QmcpClient(server.url, token="s3cret") as client:
        assert client.invoke_tool("echo", {"message": "hi"}).result == "hi"
    with QmcpClient(server.url, token="") as client, pytest.raises(QmcpClientError) as refused:
        client.list_tools()
    assert refused.value.status == 401


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


def test_fifty_concurrent_run_requests_all_complete_once(start_server, db_url):
    """Fifty clients at once: every run completes, no row lost, every step paid exactly once."""
    server = start_server(db_url, env={"DRIVER_LATENCY": "0.05", "QMCP_MAX_CONCURRENT_RUNS": "4"})
    with server.client() as client:
        _team(client)

    async def burst() -> list[str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            answers = await asyncio.gather(
                *[
                    client.post("/v1/topologies/slow-three/run", json={"input": {"prompt": f"task {i}"}})
                    for i in range(50)
                ]
            )
        assert {a.status_code for a in answers} == {202}
        return [a.json()["execution_id"] for a in answers]

    ids = asyncio.run(burst())
    assert len(set(ids)) == 50
    with server.client() as client:
        finished = [_finished(client, execution_id, 240) for execution_id in ids]
        assert Counter(e["status"] for e in finished) == Counter({"completed": 50})
        steps = [client.get(f"/v1/executions/{i}/steps").json()["count"] for i in ids]
    assert steps == [3] * 50 and len(server.paid()) == 150  # three steps each, none paid twice


def test_the_python_client_sync_and_async(start_server, sqlite_url):
    server = start_server(sqlite_url, model="test")
    with httpx.Client(base_url=server.url) as raw:
        _team(raw)
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
        run = client.run_topology("plan-write", {"prompt": "Plan a launch"})
        events = list(client.stream_events(run.execution_id))
        assert events[-1]["event"] == "end" and events[-1]["status"] == "completed"
        assert client.get_execution(run.execution_id).status == "completed"

    async def async_calls() -> None:
        async with AsyncQmcpClient(server.url) as client:
            assert (await client.invoke_tool("add_numbers", {"a": 1, "b": 2})).result == 3
            run = await client.run_topology("plan-write", {"prompt": "Plan"})
            events = [event async for event in client.stream_events(run.execution_id)]
            assert events[-1]["status"] == "completed"
            assert (await client.get_execution(run.execution_id)).status == "completed"
            await client.create_human_request("ask-2", "approval", "Ok?", options=["approve", "reject"])
            answer = await client.submit_human_response("ask-2", "approve")
            assert (await client.wait_for_human_response("ask-2", poll_interval=0.05)).id == answer.id

    asyncio.run(async_calls())
    assert HumanRequestExpiredError.__mro__[1] is QmcpClientError
