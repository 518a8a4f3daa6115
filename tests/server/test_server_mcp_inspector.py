"""The MCP tools driven by the MCP Inspector's CLI (npm `@modelcontextprotocol/inspector`, a client
nobody here wrote) on both transports: `qmcp mcp` over stdio, and `qmcp serve`'s /mcp over streamable
HTTP on loopback. `.ci/run` installs it (QMCP_MCP_INSPECTOR names its launcher); without it these
tests are skipped, saying how to install it."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp_sessions import INSPECTOR_ENV, inspector, inspector_path
from serving import HERE
from team import make_team

OWN = {"list_topologies", "run_topology", "get_execution", "list_human_requests", "respond_to_human_request"}
UPSTREAM = {"echo", "planner", "executor", "reviewer"}


@pytest.fixture
def inspector_cli() -> Path:
    found = inspector()
    if found is None:
        pytest.skip(
            f"the MCP Inspector is not installed: run .ci/run, or `npm install --prefix "
            f"~/.cache/qmcp-ci/inspector @modelcontextprotocol/inspector`, or set {INSPECTOR_ENV} "
            f"(looked at {inspector_path()})"
        )
    return found


@functools.cache
def _options(launcher: Path) -> tuple[str, ...]:
    """The options this Inspector version takes: 2.x times a server's start out after 15 s, which a
    loaded machine starting Python can take; 0.x knows no such option."""
    usage = subprocess.run([str(launcher), "--cli", "--help"], capture_output=True, text=True, timeout=120)
    return ("--connect-timeout", "180000") if "--connect-timeout" in usage.stdout else ()


def _inspect(
    launcher: Path, target: list[str], *args: str, env: dict[str, str], cwd: Path
) -> tuple[int, Any, str]:
    """Run the Inspector's CLI: its exit status, its JSON answer (None if it printed none), and all it said."""
    done = subprocess.run(
        [str(launcher), "--cli", *_options(launcher), *target, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    said = done.stdout + done.stderr
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = None
    return done.returncode, answer, said


def _text(answer: Any) -> str:
    [block] = answer["content"]
    return str(block["text"])


def _drive(launcher: Path, target: list[str], env: dict[str, str], cwd: Path) -> str:
    """The same calls on either transport; everything the Inspector said, to look for tracebacks."""
    said = []

    def call(tool: str, *arguments: str) -> tuple[int, Any]:
        status, answer, output = _inspect(
            launcher,
            target,
            "--method",
            "tools/call",
            "--tool-name",
            tool,
            *(["--tool-arg", *arguments] if arguments else []),
            env=env,
            cwd=cwd,
        )
        said.append(output)
        return status, answer

    status, listed, output = _inspect(launcher, target, "--method", "tools/list", env=env, cwd=cwd)
    said.append(output)
    assert status == 0 and listed is not None, output
    assert {tool["name"] for tool in listed["tools"]} >= OWN | UPSTREAM

    status, ran = call("run_topology", "name=plan-write", 'input={"prompt": "Plan"}')
    assert status == 0 and not ran["isError"], ran
    assert json.loads(_text(ran))["status"] == "completed"

    status, echoed = call("echo", "message=hello")
    assert status == 0 and not echoed["isError"] and _text(echoed) == "hello", echoed

    # isError: 0.x exits 0, 2.x exits 5 ("tool_is_error"); either way the result is printed
    _status, bad_id = call("get_execution", "execution_id=nope")
    assert bad_id["isError"] and _text(bad_id) == "'nope' is not an execution id (a UUID)", bad_id

    _status, bad_status = call("list_human_requests", "status=bogus")
    assert bad_status["isError"], bad_status
    assert _text(bad_status).startswith("status: Input should be 'pending', 'responded', 'expired' or")

    # 0.x sends the call and shows the JSON-RPC error; 2.x checks tools/list itself and sends nothing
    status, _answer = call("no_such_tool")
    output = said[-1]
    sent = "-32602" in output and "Unknown tool: no_such_tool" in output
    assert status != 0 and (sent or "tool_not_found" in output), output
    return "\n".join(said)


async def test_the_inspector_over_stdio(inspector_cli, sqlite_url, start_server, worker_env_server, tmp_path):
    server = start_server(sqlite_url)  # to store the team through the API
    async with server.client() as client:
        await make_team(client)
    server.stop()
    env = {**worker_env_server, "QMCP_DATABASE_URL": sqlite_url}
    passed = [f"{name}={env[name]}" for name in ("PYTHONPATH", "QMCP_DATABASE_URL")]  # 2.x passes no others
    server_command = [sys.executable, str(HERE / "server_driver.py"), "mcp"]
    said = _drive(inspector_cli, [*(f"-e{pair}" for pair in passed), *server_command], env, tmp_path)
    assert "Traceback" not in said and "Error executing tool" not in said, said[-3000:]


async def test_the_inspector_over_streamable_http(
    inspector_cli, sqlite_url, start_server, worker_env_server, tmp_path
):
    server = start_server(sqlite_url)
    async with server.client() as client:
        await make_team(client)
    said = _drive(inspector_cli, [f"{server.url}/mcp", "--transport", "http"], worker_env_server, tmp_path)
    assert "Error executing tool" not in said, said[-3000:]
    log = server.log.read_text()
    assert "Traceback" not in log and "Error executing tool" not in log, log[-3000:]
