"""`qmcp executions fork`, `diff`, and the lineage in `show` and `list --tree`, from the command line."""

from __future__ import annotations

import json
from typing import Any

import pytest


@pytest.fixture
def team(cli: Any) -> Any:
    for name, role in (
        ("planner", "planner"),
        ("critic", "critic"),
        ("writer", "writer"),
        ("editor", "writer"),
    ):
        cli.ok("agents", "create", name, role, "--model", "test")
    cli.ok(
        "agents", "topologies", "create", "review", "pipeline",
        "--agent", "plan=planner", "--agent", "critique=critic", "--agent", "write=writer",
    )  # fmt: skip
    return cli


def _run(cli: Any) -> str:
    return str(
        cli.json("agents", "topologies", "run", "review", "--input-json", '{"prompt": "p"}')["execution_id"]
    )


@pytest.mark.slow
def test_fork_in_the_real_cli_edits_a_reply_swaps_an_agent_and_shows_the_lineage(team, run_qmcp):
    parent = _run(team)
    done = run_qmcp(
        "executions", "fork", parent[:8], "--at", "pipeline/2:write",
        "--agent", "write=editor", "--set-output", "pipeline/1:critique=Cut the second paragraph.",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    fork = done.stdout.split("execution ")[1].split()[0]
    assert f"forked from {parent} at pipeline/2:write" in done.stdout

    shown = json.loads(run_qmcp("--format", "json", "executions", "show", fork).stdout)
    assert shown["parent_id"] == parent and shown["fork_key"] == "pipeline/2:write"
    assert [(s["key"], s["inherited"]) for s in shown["steps"]] == [
        ("pipeline/0:plan", True),
        ("pipeline/1:critique", True),
        ("pipeline/2:write", False),
    ]
    write = shown["steps"][2]
    assert write["agent_name"] == "editor"
    assert "Cut the second paragraph." in write["request"]["messages"][0]["content"]
    assert shown["requests"] == 1 and shown["lineage"]["ancestors"][0]["id"] == parent

    text = run_qmcp("executions", "show", parent).stdout
    assert "fork" in text and fork in text
    tree = run_qmcp("executions", "list", "--tree").stdout
    assert tree.index(parent) < tree.index(f"└ {fork}")

    diff = json.loads(run_qmcp("--format", "json", "executions", "diff", parent, fork).stdout)
    assert [d["reply_changed"] for d in diff["steps"]] == [False, True, True]
    assert diff["b_totals"]["requests"] == 1
    table = run_qmcp("executions", "diff", parent, fork).stdout
    assert "(inherited, edited)" in table and "B paid 1 calls" in table


def test_fork_mistakes_are_one_line(team):
    parent = _run(team)
    team.user_error(
        "executions", "fork", parent, "--at", "pipeline/2:wrte", says="did you mean 'pipeline/2:write'?"
    )
    team.user_error(
        "executions", "fork", parent, "--at", "pipeline/2:write", "--agent", "write", says="SLOT=AGENT"
    )
    team.user_error(
        "executions", "fork", parent, "--at", "pipeline/1:critique", "--set-output", "pipeline/2:write=x",
        says="runs again in this fork",
    )  # fmt: skip
    team.user_error(
        "executions", "fork", parent, "--at", "pipeline/2:write", "--agent", "write=nobody", says="nobody"
    )
    assert len(team.json("executions", "list")) == 1


def test_a_fork_with_another_model_and_input(team):
    parent = _run(team)
    fork = team.json(
        "executions", "fork", parent, "--at", "pipeline/1:critique", "--model", "test",
        "--input-json", '{"prompt": "a new task"}',
    )  # fmt: skip
    assert fork["status"] == "completed" and fork["usage"]["requests"] == 2
    assert fork["parent_id"] == parent and fork["fork_key"] == "pipeline/1:critique"
    shown = team.json("executions", "show", fork["execution_id"])
    assert shown["input_data"] == {"prompt": "a new task"} and shown["run_config"]["model_override"] == "test"
