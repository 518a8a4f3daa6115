"""A user's `@topology` and `@mixin` (tests/ext_plugin.py, named in QMCP_IMPORTS) through the CLI."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).parent.parent

TEAM = """\
agents:
  - {name: ann, role: writer, config: {model: test, capabilities: [shout]}}
  - {name: bob, role: critic, config: {model: test}}
topologies:
  - name: relay-team
    type: relay
    config: {rounds: 1}
    agents: {first: ann, second: bob}
"""


def test_team_files_apply_list_and_run_a_user_topology(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("QMCP_IMPORTS", "ext_plugin")
    team = tmp_path / "team.yaml"
    team.write_text(TEAM)
    cli.ok("apply", "-f", str(team))
    listed = {row["name"]: row for row in cli.json("agents", "topologies", "list")}
    assert listed["relay-team"]["topology_type"] == "relay"
    assert "shout" in [row["name"] for row in cli.json("agents", "mixins")]
    types = {row["name"]: row for row in cli.json("agents", "topologies", "types")}
    assert (types["relay"]["config"], types["relay"]["metaflow"]) == (["rounds"], "one step")
    assert types["pipeline"]["metaflow"] == "a step per agent call" and "chain" in types
    done = cli.json("agents", "topologies", "run", "relay-team", "--input-json", '{"prompt": "go"}')
    assert done["status"] == "completed"
    first, second = done["output"]["turns"]
    assert first["text"] == first["text"].upper() and second["text"] != second["text"].upper()

    team.write_text(TEAM.replace("type: relay", "type: mesh"))
    error = cli.user_error(
        "apply", "-f", str(team), says="topologies[0].type: unknown topology type 'mesh'; known"
    )
    assert "pipeline, relay" in error
    team.write_text(TEAM.replace("[shout]", "[yell]"))
    error = cli.user_error(
        "apply", "-f", str(team), says="capabilities[0]: unknown mixin 'yell'; known mixins:"
    )
    assert "reasoning, shout" in error


def test_a_new_process_finds_the_plugin_through_qmcp_imports(run_qmcp, tmp_path):
    team = tmp_path / "team.yaml"
    team.write_text(TEAM)
    env = {
        "QMCP_IMPORTS": "ext_plugin",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    done = run_qmcp("apply", "-f", str(team), env=env)
    assert done.returncode == 0, done.stderr
    done = run_qmcp("--format", "json", "agents", "mixins", env=env)
    assert '"shout"' in done.stdout, done.stderr
    without = run_qmcp(
        "agents", "topologies", "run", "relay-team", "--input-json", "{}", env={"QMCP_IMPORTS": ""}
    )
    assert without.returncode == 2 and without.stderr.count("\n") == 1, without.stderr
    assert "unknown mixin 'shout'" in without.stderr


def test_qmcp_imports_naming_a_missing_module_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("QMCP_IMPORTS", "ext_plugin, no_such_plugin")
    cli.user_error("agents", "list", says="QMCP_IMPORTS names 'no_such_plugin', which cannot be imported")
    assert os.environ["QMCP_IMPORTS"]  # the variable the message names


def test_mistyped_mixin_options_in_a_team_file_store_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("QMCP_IMPORTS", "ext_plugin")
    team = tmp_path / "team.yaml"
    team.write_text(
        TEAM.replace(
            "capabilities: [shout]", "capabilities: [human_in_loop], mixins: {human_in_loop: {whenn: before}}"
        )
    )
    cli.user_error(
        "apply",
        "-f",
        str(team),
        says="agents[0].config.mixins.human_in_loop.whenn: Extra inputs are not permitted; did you mean 'when'?",
    )
    team.write_text(
        TEAM.replace("capabilities: [shout]", "capabilities: [tool_use], mixins: {tool_use: {toolz: [x]}}")
    )
    cli.user_error("apply", "-f", str(team), says="mixins.tool_use.toolz: Extra inputs are not permitted")
    assert cli.json("agents", "list") == [] and cli.json("agents", "topologies", "list") == []
