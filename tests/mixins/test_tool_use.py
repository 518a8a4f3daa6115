"""tool_use: Python and MCP tools called by a real model loop and recorded on the stored step."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _eventually import eventually, eventually_async
from pydantic import ValidationError

from qmcp.agentframework.errors import InvalidConfigError, MixinError
from qmcp.agentframework.mixins import ToolUseMixin, register_tool, unregister_tool
from qmcp.agentframework.models import AgentType, EnsembleConfig, ExecutionStatus, Topology, TopologyType
from qmcp.agentframework.runners import AsyncRunner, LocalRunner
from qmcp.agentframework.store import Database

# llm/_call.py still answers a failed tool call with `RetryPromptPart`, which pydantic-ai 2.68
# deprecates in favour of `ToolReturnPart(..., outcome=...)`; until it moves, that warning is expected
# where a tool call fails.


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def shout(text: str) -> str:
    """Upper-case a text."""
    await asyncio.sleep(0)
    return text.upper()


def explode(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"cannot do {reason}")


@pytest.fixture(autouse=True)
def registered_tools() -> Iterator[None]:
    for function in (add, shout, explode):
        register_tool(function.__name__, function)
    yield
    for function in (add, shout, explode):
        unregister_tool(function.__name__)


@pytest.fixture
def tool_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module of tools, referenced as 'qmcp_test_tools:...'."""
    (tmp_path / "qmcp_test_tools.py").write_text(
        textwrap.dedent(
            '''
            from datetime import date

            def multiply(a: float, b: float) -> float:
                """Multiply two numbers."""
                return a * b

            def today() -> date:
                """A value that is not JSON by itself."""
                return date(2025, 1, 2)
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "qmcp_test_tools", raising=False)
    return "qmcp_test_tools"


def tools_agent(agent, model: str, name: str = "toolsmith", max_tool_calls: int = 10, **options):
    return agent(
        name,
        model=model,
        capabilities=["tool_use"],
        mixins={"tool_use": options},
        max_tool_calls=max_tool_calls,
    )


async def test_python_tools_are_called_and_recorded(sqlite_url, agent, tool_model, run_one, tool_module):
    model = tool_model(
        [("add", {"a": 2, "b": 3}), ("shout", {"text": "hi"})],
        [("multiply", {"a": 1.5, "b": 4}), ("today", {})],
    )
    tools = ["add", "shout", f"{tool_module}:multiply", f"{tool_module}:today"]
    result, steps = await run_one(sqlite_url, tools_agent(agent, model.name, tools=tools))
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert model.offered[0] == ["add", "shout", "multiply", "today"]
    assert steps[0].output["tool_calls"] == [
        {"tool": "add", "args": {"a": 2, "b": 3}, "result": 5, "error": None},
        {"tool": "shout", "args": {"text": "hi"}, "result": "HI", "error": None},
        {"tool": "multiply", "args": {"a": 1.5, "b": 4}, "result": 6.0, "error": None},
        {"tool": "today", "args": {}, "result": "2025-01-02", "error": None},
    ]
    assert steps[0].response == "results: add=5; shout=HI; multiply=6.0; today=2025-01-02"
    assert result.output["output"] == steps[0].response


async def test_the_test_model_calls_each_tool_once_with_arguments_from_its_schema(sqlite_url, agent, run_one):
    """Offline tool use, as pydantic-ai's `TestModel`: a first turn calls every tool, then a text answer."""
    result, steps = await run_one(
        sqlite_url, tools_agent(agent, "test", tools=["add", "shout", "explode"]), prompt="Add two numbers"
    )
    assert result.status == ExecutionStatus.COMPLETED, result.error
    calls = steps[0].output["tool_calls"]
    assert [call["tool"] for call in calls] == ["add", "shout", "explode"]
    added, shouted, exploded = calls
    assert set(added["args"]) == {"a", "b"} and added["result"] == added["args"]["a"] + added["args"]["b"]
    assert isinstance(shouted["args"]["text"], str) and shouted["result"] == shouted["args"]["text"].upper()
    assert exploded["error"].startswith("ValueError: cannot do ")
    reply = steps[0].response
    assert f"add: {added['result']}" in reply and f"shout: {shouted['result']}" in reply
    _, steps_again = await run_one(
        sqlite_url,
        tools_agent(agent, "test", tools=["add", "shout", "explode"]),
        prompt="Add two numbers",
        name="again",
    )
    assert steps_again[0].output["tool_calls"] == calls and steps_again[0].response == reply  # deterministic


async def test_allow_and_deny_lists_deny_wins(sqlite_url, agent, tool_model, run_one):
    model = tool_model([("add", {"a": 1, "b": 1}), ("shout", {"text": "no"})])
    options: dict[str, Any] = {
        "tools": ["add", "shout", "explode"],
        "allow": ["add", "shout"],
        "deny": ["shout"],
    }
    result, steps = await run_one(sqlite_url, tools_agent(agent, model.name, **options))
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert model.offered[0] == ["add"]
    calls = steps[0].output["tool_calls"]
    assert calls[0]["result"] == 2
    assert calls[1]["result"] is None and calls[1]["error"].startswith("unknown tool 'shout'; available: add")


async def test_allowing_a_tool_nobody_offers_is_an_error(sqlite_url, agent, tool_model, run_one):
    model = tool_model()
    result, steps = await run_one(sqlite_url, tools_agent(agent, model.name, tools=["add"], allow=["ad"]))
    assert result.status == ExecutionStatus.FAILED
    assert "allows tools that none of its tools or servers offer: ad" in result.error
    assert steps == []


async def test_max_tool_calls_is_enforced(sqlite_url, agent, tool_model, run_one):
    model = tool_model(*[[("add", {"a": i, "b": 1})] for i in range(2)], [("add", {"a": 9, "b": 9})] * 2)
    result, steps = await run_one(sqlite_url, tools_agent(agent, model.name, max_tool_calls=3, tools=["add"]))
    assert result.status == ExecutionStatus.COMPLETED, result.error
    calls = steps[0].output["tool_calls"]
    assert [c["result"] for c in calls] == [1, 2, 18, None]
    assert calls[3]["error"] == "max_tool_calls (3) reached; answer without tools"
    assert model.offered == [["add"], ["add"], ["add"], []]  # then the tools are withdrawn


async def test_a_failing_tool_is_recorded_and_the_model_goes_on(sqlite_url, agent, tool_model, run_one):
    model = tool_model([("explode", {"reason": "that"}), ("add", {"a": "two", "b": 1})])
    result, steps = await run_one(sqlite_url, tools_agent(agent, model.name, tools=["explode", "add"]))
    assert result.status == ExecutionStatus.COMPLETED, result.error
    failed, invalid = steps[0].output["tool_calls"]
    assert failed["error"] == "ValueError: cannot do that"
    assert invalid["error"].startswith("ValidationError:") and "valid integer" in invalid["error"]
    assert "explode=ValueError: cannot do that" in steps[0].response


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        (["nothing_here"], "unknown tool 'nothing_here'"),
        (["no_such_module_qmcp:f"], "cannot import the tool function 'no_such_module_qmcp:f'"),
        (["os.path:nope"], "module 'os.path' has no 'nope'"),
        (["os:sep"], "tool 'os:sep' is not callable"),
        (["bad:"], "must look like 'package.module:name'"),
    ],
)
async def test_bad_function_references_fail_the_run_in_one_line(
    sqlite_url, agent, tool_model, run_one, tools, message
):
    model = tool_model([("x", {})])
    result, steps = await run_one(sqlite_url, tools_agent(agent, model.name, tools=tools))
    assert result.status == ExecutionStatus.FAILED
    assert message in result.error and "\n" not in result.error
    assert model.offered == [] and steps == []


def test_options_are_validated_when_the_agent_is_defined(agent):
    with pytest.raises(ValidationError, match=r"mixins.tool_use.tool: Extra inputs are not permitted"):
        tools_agent(agent, "test", tool=["add"])
    with pytest.raises(
        MixinError, match=r"^agent 'a': mixins.tool_use.tools.0: Input should be a valid string$"
    ):
        ToolUseMixin.parse_options("a", {"tools": [1]})


# -- MCP -----------------------------------------------------------------------------------------

MCP_SERVER = '''
import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("calc")


@server.tool()
def mcp_add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def mcp_fail() -> str:
    """Always fails."""
    raise RuntimeError("the server refused")


@server.tool()
def secret() -> str:
    """What the environment holds."""
    return os.environ.get("QMCP_TEST_SECRET", "unset")


if __name__ == "__main__":
    with open(sys.argv[1], "a") as starts:
        starts.write(f"{os.getpid()}\\n")
    if len(sys.argv) > 2:
        server.run("streamable-http", port=int(sys.argv[2]))
    else:
        server.run()
'''


@pytest.fixture
def mcp_script(tmp_path: Path) -> tuple[Path, Path]:
    """The server script and the file where each server process writes its pid when it starts."""
    script = tmp_path / "calc_server.py"
    script.write_text(MCP_SERVER)
    return script, tmp_path / "starts.txt"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
async def test_mcp_tools_over_stdio_one_session_per_run(
    sqlite_url, agent, tool_model, mcp_script, monkeypatch
):
    script, starts = mcp_script
    monkeypatch.setenv("QMCP_TEST_SECRET", "from-the-environment")
    server = {
        "command": sys.executable,
        "args": [str(script), str(starts)],
        "env": {"QMCP_TEST_SECRET": "${QMCP_TEST_SECRET}"},
        "env_allow": ["QMCP_TEST_SECRET"],
    }
    first = tool_model([("mcp_add", {"a": 2, "b": 40}), ("mcp_fail", {})])
    second = tool_model([("secret", {}), ("mcp_add", {"a": 1, "b": 1})])
    agents = {
        "one": tools_agent(agent, first.name, name="mcp-one", mcp_servers=[server]),
        "two": tools_agent(agent, second.name, name="mcp-two", mcp_servers=[server], deny=["mcp_add"]),
    }
    topology = Topology(name="mcp-pipe", topology_type=TopologyType.PIPELINE)
    result = await LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "use the server"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    async with Database(sqlite_url) as db:
        one, two = (step.output or {} for step in await db.list_steps(result.execution_id))
    assert first.offered[0] == ["mcp_add", "mcp_fail", "secret"]
    assert one["tool_calls"] == [
        {"tool": "mcp_add", "args": {"a": 2, "b": 40}, "result": "42", "error": None},
        {
            "tool": "mcp_fail",
            "args": {},
            "result": None,
            "error": "RuntimeError: Error executing tool mcp_fail",
        },
    ]
    assert second.offered[0] == ["mcp_fail", "secret"]
    assert two["tool_calls"][0]["result"] == "from-the-environment"
    assert two["tool_calls"][1]["error"].startswith("unknown tool 'mcp_add'")
    pids = [int(line) for line in starts.read_text().split()]
    assert len(pids) == 1, "one server process per run, shared by both steps"
    eventually(lambda: _gone(pids[0]), "the server to stop when the run ends", timeout=5)


@pytest.mark.slow
async def test_mcp_session_is_shared_by_concurrent_steps(sqlite_url, agent, tool_model, mcp_script):
    """Steps running in other tasks use the session; it still closes cleanly in the task that opened it."""
    script, starts = mcp_script
    model = tool_model([("mcp_add", {"a": 1, "b": 2})])
    server = {"command": sys.executable, "args": [str(script), str(starts)]}
    members = {
        f"m{i}": tools_agent(agent, model.name, name=f"member-{i}", mcp_servers=[server]) for i in range(3)
    }
    topology = Topology(
        name="mcp-ensemble",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method="concat").model_dump(),
    )
    result = await AsyncRunner(db_url=sqlite_url, max_concurrent=3).run(topology, members, {"prompt": "add"})
    assert result.status == ExecutionStatus.COMPLETED and result.output, result.error
    assert [m["answer"] for m in result.output["members"]] == ["results: mcp_add=3"] * 3
    (pid,) = [int(line) for line in starts.read_text().split()]
    eventually(lambda: _gone(pid), f"the server process {pid} to stop", timeout=5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
async def test_mcp_tools_over_streamable_http(sqlite_url, agent, tool_model, run_one, mcp_script):
    script, starts = mcp_script
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(script), str(starts), str(port)],
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        await eventually_async(
            lambda: _listening(port), f"the MCP server on port {port}", timeout=20, every=0.1
        )
        model = tool_model([("mcp_add", {"a": 20, "b": 22})])
        options: dict[str, Any] = {
            "mcp_servers": [{"url": f"http://127.0.0.1:{port}/mcp"}],
            "allow": ["mcp_add"],
        }
        result, steps = await run_one(sqlite_url, tools_agent(agent, model.name, **options))
    finally:
        process.terminate()
        process.wait(10)
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert model.offered[0] == ["mcp_add"]
    assert steps[0].output["tool_calls"][0]["result"] == "42"


@pytest.mark.parametrize(
    ("server", "message"),
    [
        pytest.param(  # tries to start a process
            {"command": "/nonexistent/qmcp-mcp-server"},
            "cannot connect to MCP server '/nonexistent/qmcp-mcp-server'",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            {"command": sys.executable, "args": ["-c", "pass"]},
            "cannot connect to MCP server",
            marks=pytest.mark.slow,  # starts a process
        ),
        ({"url": "http://127.0.0.1:9/mcp"}, "MCP server 'http://127.0.0.1:9/mcp'"),
    ],
)
async def test_unreachable_mcp_server_is_a_clear_error(
    sqlite_url, agent, tool_model, run_one, server, message
):
    model = tool_model()
    options: dict[str, Any] = {"mcp_servers": [server], "connect_timeout_seconds": 5}
    result, steps = await run_one(sqlite_url, tools_agent(agent, model.name, **options))
    assert result.status == ExecutionStatus.FAILED
    assert message in result.error and "\n" not in result.error
    assert steps == [] and model.offered == []


@pytest.mark.slow
async def test_mcp_servers_get_only_the_environment_their_definition_allows(
    sqlite_url, agent, tool_model, run_one, mcp_script, monkeypatch
):
    script, starts = mcp_script
    monkeypatch.setenv("QMCP_TEST_SECRET", "from-the-environment")
    server = {"command": sys.executable, "args": [str(script), str(starts)]}
    outcomes = []
    for extra in ({}, {"env_allow": ["QMCP_TEST_SECRET"]}):
        model = tool_model([("secret", {})])
        result, steps = await run_one(
            sqlite_url, tools_agent(agent, model.name, mcp_servers=[server | extra])
        )
        assert result.status == ExecutionStatus.COMPLETED, result.error
        outcomes.append(steps[0].output["tool_calls"][0]["result"])
    assert outcomes == ["unset", "from-the-environment"]


async def test_mcp_env_may_only_name_allowed_variables(sqlite_url, agent, tool_model, run_one, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted")
    model = tool_model()
    server = {"command": "true", "env": {"TOKEN": "${OPENAI_API_KEY}"}}
    unchecked = AgentType(  # a table model's constructor does not validate: the runner must
        name="toolsmith",
        config={
            "model": model.name,
            "capabilities": ["tool_use"],
            "mixins": {"tool_use": {"mcp_servers": [server]}},
        },
    )
    with pytest.raises(InvalidConfigError) as refused:
        await run_one(sqlite_url, unchecked)
    assert str(refused.value) == (
        "agent in slot 's': config.mixins.tool_use.mcp_servers.0.stdio: env TOKEN uses "
        "${OPENAI_API_KEY}, which env_allow does not name; add 'OPENAI_API_KEY' to env_allow to pass it "
        "to this server"
    )
    async with Database(sqlite_url) as db:
        assert await db.list_executions() == []


@pytest.mark.slow
async def test_stdio_servers_start_when_stderr_has_no_file_descriptor(
    sqlite_url, agent, tool_model, run_one, mcp_script, monkeypatch
):
    """A test runner's or a notebook's stderr capture: the server writes to the original stderr instead.

    The SDK's default `errlog` is the `sys.stderr` of the moment it was imported; imported under
    such a capture, it broke every later stdio server of the process (`UnsupportedOperation: fileno`).
    """
    from mcp.client.stdio import stdio_client

    script, starts = mcp_script
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    # as if the SDK had been imported under a capture: its default errlog is bound at import
    monkeypatch.setattr(stdio_client.__wrapped__, "__defaults__", (io.StringIO(),))
    model = tool_model([("mcp_add", {"a": 1, "b": 2})])
    server = {"command": sys.executable, "args": [str(script), str(starts)]}
    result, steps = await run_one(sqlite_url, tools_agent(agent, model.name, mcp_servers=[server]))
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert steps[0].output["tool_calls"][0]["result"] == "3"
