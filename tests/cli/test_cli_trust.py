"""Team files are code: a stored definition runs its tools, MCP commands and models only once trusted.

The hostile team below names a Python tool, an MCP server command (with a secret in its
environment), an output model and a base_url. Each executable part touches a marker file when it
runs (`trust_fixtures`), so "nothing ran" is checked on the file system, not on qmcp's word.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from trust_fixtures import MARKER_VARIABLE, MODULE, marks, mcp_command, write_module

from qmcp.agentframework.llm import ScriptedModel, register_model, unregister_model


def hostile_team(markers: Path, prompt: str = "You are helpful.") -> dict[str, Any]:
    server = mcp_command(markers / "mcp_shell") | {
        "env": {"KEY": "${ANTHROPIC_API_KEY}"},
        "env_allow": ["ANTHROPIC_API_KEY"],
    }
    return {
        "agents": [
            {"name": "plain", "role": "writer", "config": {"model": "test"}},
            {
                "name": "shell",
                "role": "executor",
                "config": {
                    "model": "test",
                    "system_prompt": prompt,
                    "base_url": "http://127.0.0.1:9/v1",
                    "capabilities": ["tool_use", "structured_output"],
                    "mixins": {
                        "tool_use": {"tools": [f"{MODULE}:tool_shell"], "mcp_servers": [server]},
                        "structured_output": {"model": f"{MODULE}:Model_shell"},
                    },
                },
            },
        ],
        "topologies": [
            {"name": "hostile", "type": "pipeline", "agents": {"first": "plain", "second": "shell"}}
        ],
    }


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where executable parts leave their marks; the tool module is importable here and in subprocesses."""
    write_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    )
    directory = tmp_path / "marks"
    monkeypatch.setenv(MARKER_VARIABLE, str(directory))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-planted")
    return directory


def _write(path: Path, document: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(document))
    return str(path)


RUN = ("--model", "test", "agents", "topologies", "run", "hostile", "--input-json", '{"prompt": "hi"}')


def _refused(result: subprocess.CompletedProcess[str], says: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert says in lines[0], lines[0]


@pytest.mark.slow
def test_hostile_team_runs_nothing_before_trust_runs_after_and_needs_trust_again_after_an_edit(
    run_qmcp, tmp_path, markers
):
    team = _write(tmp_path / "team.yaml", hostile_team(markers))
    applied = run_qmcp("apply", "-f", team)  # stdin is not a terminal: stored, untrusted
    assert applied.returncode == 0, applied.stderr
    assert "agent shell stored untrusted" in applied.stdout
    assert "Python tool 'qmcp_marker_tools:tool_shell'" in applied.stdout
    assert "MCP server command" in applied.stdout and "environment: ANTHROPIC_API_KEY, KEY" in applied.stdout
    assert "output model 'qmcp_marker_tools:Model_shell'" in applied.stdout
    assert "base_url 'http://127.0.0.1:9/v1'" in applied.stdout
    assert "trust it with: qmcp trust agent shell" in applied.stdout
    assert "plain stored untrusted" not in applied.stdout  # nothing executable: nothing to trust

    refused = run_qmcp(*RUN)
    _refused(
        refused,
        "error: agent 'shell' (slot 'second' of topology 'hostile') is not trusted to run Python tool "
        "'qmcp_marker_tools:tool_shell' (imported, the model may call it) and 3 more item(s); review it, "
        "then trust it with: qmcp trust agent shell",
    )
    assert refused.stdout == ""
    _refused(
        run_qmcp("agents", "topologies", "export", "hostile", "--metaflow", str(tmp_path / "flows")),
        "trust it with: qmcp trust agent shell",
    )
    assert not (tmp_path / "flows").exists()
    assert json.loads(run_qmcp("executions", "list", "--format", "json").stdout) == []
    assert marks(markers) == set()

    trusted = run_qmcp("apply", "--trust", "-f", team)
    assert trusted.returncode == 0 and "agent shell trusted to run" in trusted.stdout, trusted.stderr
    ran = run_qmcp(*RUN)
    assert {"tool_shell", "mcp_shell"} <= marks(markers), (ran.stdout, ran.stderr)

    for mark in markers.iterdir():
        mark.unlink()
    edited = _write(tmp_path / "team.yaml", hostile_team(markers, prompt="Call every tool you have."))
    reapplied = run_qmcp("apply", "-f", edited)
    assert "agent shell updated" in reapplied.stdout and "agent shell stored untrusted" in reapplied.stdout
    _refused(run_qmcp(*RUN), "trust it with: qmcp trust agent shell")
    assert marks(markers) == set()

    trust = run_qmcp("trust", "agent", "shell")
    assert trust.returncode == 0 and "agent shell trusted as user" in trust.stdout, trust.stderr
    run_qmcp(*RUN)
    assert {"tool_shell", "mcp_shell"} <= marks(markers)


def test_trust_refusals_name_the_command_with_the_database_in_use(cli, tmp_path, markers, db_file):
    team = _write(tmp_path / "team.yaml", hostile_team(markers))
    document = cli.json("apply", "-f", team)
    assert [entry["agent"] for entry in document["untrusted"]] == ["shell"]
    assert document["untrusted"][0]["trust_command"] == f"qmcp --db {db_file} trust agent shell"
    assert len(document["untrusted"][0]["items"]) == 4 and document["trusted"] == []
    cli.user_error(*RUN, says=f"then trust it with: qmcp --db {db_file} trust agent shell")
    assert marks(markers) == set()
    shown = cli.json("agents", "show", "shell")["trust"]
    assert (shown["trusted"], len(shown["items"]), shown["sha256"]) == (
        False,
        4,
        document["untrusted"][0]["sha256"],
    )
    assert "not trusted; runs refuse it until" in cli.ok("agents", "show", "shell").stdout

    shown = cli.json("trust", "agent", "shell", "plain")
    assert [(entry["agent"], entry["status"]) for entry in shown] == [
        ("shell", "trusted"),
        ("plain", "nothing to trust"),
    ]
    assert shown[0]["trusted_by"] and len(shown[0]["sha256"]) == 64
    assert [entry["status"] for entry in cli.json("trust", "agent", "shell")] == ["already trusted"]
    shown = cli.json("agents", "show", "shell")["trust"]
    assert (shown["trusted"], shown["via"]) == (True, "qmcp trust")
    plain = cli.json("agents", "show", "plain")["trust"]
    assert (plain["items"], plain["trusted"]) == ([], True)
    again = cli.json("apply", "-f", team)  # same content: still trusted, nothing asked, nothing changed
    assert (again["changed"], again["untrusted"], again["trusted"]) == (False, [], [])
    cli.user_error("trust", "agent", "ghost", says="agent 'ghost' not found")


@pytest.mark.slow  # the trusted team starts its MCP server process
def test_compound_sub_teams_from_the_database_must_be_trusted(cli, tmp_path, markers, db_file):
    document = hostile_team(markers)
    document["topologies"] = [
        {"name": "inner", "type": "pipeline", "agents": {"only": "shell"}},
        {"name": "outer", "type": "compound", "config": {"sub_topologies": ["inner"]}},
    ]
    cli.ok("apply", "-f", _write(tmp_path / "team.yaml", document))
    run = ("--model", "test", "agents", "topologies", "run", "outer", "--input-json", '{"prompt": "hi"}')
    cli.user_error(
        *run,
        says="agent 'shell' (slot 'only' of topology 'inner' (run by compound 'outer')) is not trusted to run",
    )
    assert marks(markers) == set()
    assert cli.json("executions", "list") == []
    trusted = cli.json("trust", "topology", "outer")
    assert [(entry["agent"], entry["status"]) for entry in trusted] == [("shell", "trusted")]
    cli(*run)
    assert "tool_shell" in marks(markers)


def test_resume_of_an_execution_whose_snapshot_is_not_trusted_is_refused(cli, tmp_path, markers, db_file):
    """An execution made before trust existed (here: its trust records deleted) must not resume unchecked."""
    from qmcp.agentframework.models import AgentType, Topology, TopologyType
    from qmcp.agentframework.runners import LocalRunner, RunConfig

    name = f"scripted:{uuid.uuid4().hex[:8]}"
    model = ScriptedModel(name=name, replies=["fine"], failures={0: "auth"})
    register_model(name, model.model)
    try:
        agents = {
            "first": AgentType(name="flaky", config={"model": name}),
            "second": AgentType(
                name="tooled",
                config={
                    "model": "test",
                    "capabilities": ["tool_use"],
                    "mixins": {"tool_use": {"tools": [f"{MODULE}:tool_resume"]}},
                },
            ),
        }
        url = f"sqlite+aiosqlite:///{db_file}"
        topology = Topology(name="resumable", topology_type=TopologyType.PIPELINE)
        runner = LocalRunner(config=RunConfig(max_retries=0), db_url=url)
        failed = asyncio.run(runner.run(topology, agents, {"prompt": "x"}))
        assert str(failed.status) == "failed" and marks(markers) == set()
        with sqlite3.connect(db_file) as conn:  # as if the execution came from a database older than trust
            assert conn.execute("DELETE FROM trust_records").rowcount == 1

        execution = str(failed.execution_id)
        cli.user_error(
            "executions", "resume", execution,
            says=f"execution {execution} runs agent 'tooled', whose definition there is not trusted to run "
            f"Python tool 'qmcp_marker_tools:tool_resume' (imported, the model may call it); review it, then "
            f"trust it with: qmcp --db {db_file} trust execution {execution}",
        )  # fmt: skip
        assert marks(markers) == set()
        assert [
            entry["agent"]
            for entry in cli.json("trust", "execution", execution)
            if entry["status"] == "trusted"
        ] == ["tooled"]
        resumed = cli("executions", "resume", execution)
        assert resumed.exit_code == 0, resumed.stderr
        assert "tool_resume" in marks(markers)
    finally:
        unregister_model(name)


@pytest.mark.slow
@pytest.mark.parametrize(("answer", "trusted"), [("y", True), ("n", False)])
def test_apply_lists_every_executable_item_and_asks(qmcp_exe, tmp_path, markers, db_file, answer, trusted):
    team = _write(tmp_path / "team.yaml", hostile_team(markers))
    leader, follower = os.openpty()  # a terminal on stdin, so apply may ask
    try:
        process = subprocess.Popen(
            [qmcp_exe, "--db", str(db_file), "apply", "-f", team],
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        os.write(leader, f"{answer}\n".encode())
        stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(leader)
        os.close(follower)
    assert process.returncode == 0, stderr
    assert "team.yaml names code that runs on this machine" in stderr
    for item in (
        "- Python tool 'qmcp_marker_tools:tool_shell'",
        "- MCP server command",
        "- output model 'qmcp_marker_tools:Model_shell'",
        "- base_url 'http://127.0.0.1:9/v1'",
    ):
        assert item in stderr
    assert "Trust these agents to run all of it (recorded as user" in stderr
    assert ("agent shell trusted to run" in stdout) is trusted
    assert ("agent shell stored untrusted" in stdout) is not trusted
