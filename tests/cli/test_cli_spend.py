"""Spend from the command line: run and resume with a budget, `executions cost`, costs in `show`."""

from __future__ import annotations

import json
from typing import Any

import pytest


@pytest.fixture
def team(cli: Any) -> Any:
    for name, role in (("planner", "planner"), ("critic", "critic"), ("writer", "writer")):
        cli.ok("agents", "create", name, role, "--model", "test")
    cli.ok(
        "agents", "topologies", "create", "review", "pipeline",
        "--agent", "plan=planner", "--agent", "critique=critic", "--agent", "write=writer",
    )  # fmt: skip
    return cli


def test_a_budget_stops_the_run_and_resume_raises_it_in_the_real_cli(team, run_qmcp):
    # The test model is free: a token budget. Each call is estimated at its prompt plus 4096 output
    # tokens (the model's max_output_tokens): 4,200 tokens fit the first call, not the second.
    done = run_qmcp(
        "agents", "topologies", "run", "review", "--input-json", '{"prompt": "p"}', "--max-tokens", "4200"
    )
    assert done.returncode == 1, done.stderr
    error = next(line for line in done.stderr.splitlines() if line.startswith("error:"))
    assert "budget exceeded: the run spent" in error and "of its budget of 4,200 tokens" in error
    execution_id = error.split("qmcp executions resume ")[1].split()[0]
    assert f"qmcp executions resume {execution_id} --max-tokens N" in error
    shown = json.loads(run_qmcp("--format", "json", "executions", "show", execution_id).stdout)
    done_steps = [s for s in shown["steps"] if s["status"] == "completed"]
    assert shown["status"] == "failed" and 0 < len(done_steps) < 3

    resumed = run_qmcp("executions", "resume", execution_id, "--max-tokens", "100000", "--max-cost", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert "max tokens 4200 → 100000" in resumed.stderr and "max cost (unlimited) → 1.0" in resumed.stderr
    shown = json.loads(run_qmcp("--format", "json", "executions", "show", execution_id).stdout)
    assert shown["status"] == "completed" and len(shown["steps"]) == 3
    assert [s["started_at"] for s in shown["steps"][: len(done_steps)]] == [
        s["started_at"] for s in done_steps
    ]
    assert shown["history"][-1]["changes"] == {"max_tokens": [4200, 100000], "max_cost_usd": [None, 1.0]}
    table = run_qmcp("executions", "show", execution_id).stdout
    assert "budget" in table and "100,000 tokens" in table and "Cost" in table


def test_executions_cost_by_model_topology_and_agent(team):
    for prompt in ("one", "two"):
        team.ok("agents", "topologies", "run", "review", "--input-json", json.dumps({"prompt": prompt}))
    by_agent = team.json("executions", "cost", "--by", "agent")
    assert by_agent["by"] == "agent" and {line["group"] for line in by_agent["lines"]} == {
        "planner",
        "critic",
        "writer",
    }
    assert all(line["executions"] == 2 and line["steps"] == 2 for line in by_agent["lines"])
    total = by_agent["total"]
    assert total["steps"] == 6 and total["executions"] == 2
    assert total["input_tokens"] == sum(line["input_tokens"] for line in by_agent["lines"]) > 0
    by_model = team.json("executions", "cost")
    assert [line["group"] for line in by_model["lines"]] == ["test"] and by_model["total"] == total
    assert team.json("executions", "cost", "--by", "topology")["lines"][0]["group"] == "review"
    assert team.json("executions", "cost", "--since", "1h")["total"] == total
    assert team.json("executions", "cost", "--since", "2999-01-01")["total"]["steps"] == 0
    table = team.ok("executions", "cost", "--by", "agent").stdout
    assert "cost by agent" in table and "planner" in table and "total" in table


def test_executions_cost_mistakes(team):
    team.user_error(
        "executions", "cost", "--by", "colour", says="--by must be one of: model, topology, agent"
    )
    team.user_error("executions", "cost", "--since", "yesterday", says="neither a duration")
    assert "no steps recorded" in team.ok("executions", "cost").stdout


def test_executions_cost_of_one_execution(team):
    team.ok("agents", "topologies", "run", "review", "--input-json", '{"prompt": "one"}')
    (execution_id,) = team.ok("executions", "list", "--ids").stdout.split()
    shown = team.json("executions", "cost", execution_id[:8])
    assert shown["execution_id"] == execution_id and shown["attempts"] == 3
    assert shown["paid"] == shown["kept"] == shown["counted"] and shown["paid"]["requests"] == 3
    assert shown["displaced"]["requests"] == 0 and shown["displaced_calls"] == []
    table = team.ok("executions", "cost", execution_id).stdout
    assert "total paid" in table and "displaced calls" not in table
    team.user_error(
        "executions", "cost", execution_id, "--by", "agent", says="drop them to see one execution's cost"
    )
