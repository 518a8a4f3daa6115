"""`qmcp eval` in-process: a small eval on the test model, its report, and user mistakes as one line.

The command in real processes (SIGKILL, Ctrl-C, the budget stop, CSV, `--out`) is
tests/eval/test_eval_processes.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def team(cli, tmp_path: Path):
    cli.ok("agents", "create", "writer", "writer", "--model", "test")
    cli.ok("agents", "create", "critic", "critic", "--model", "test")
    cli.ok("agents", "topologies", "create", "solo", "pipeline", "--agent", "a=writer")
    cli.ok("agents", "topologies", "create", "duo", "pipeline", "--agent", "a=writer", "--agent", "b=critic")
    data = tmp_path / "data.jsonl"
    # The test model's reply quotes the task's first words: "includes" finds the even items' targets.
    data.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"s{i}",
                    "input": f"item {i} of the list",
                    "target": f"item {i}" if i % 2 == 0 else "zebra",
                }
            )
            + "\n"
            for i in range(6)
        )
    )
    return cli


def test_an_eval_on_the_test_model_reports_each_variant(team):
    report = team.json(
        "eval", "--dataset", str(Path(team.db).parent / "data.jsonl"), "--topology", "solo", "--topology", "duo",
        "--single-call", "writer", "--scorer", "includes", "--budget-per-sample", "100000",
    )  # fmt: skip
    assert report["status"] == "completed" and report["cells"] == report["recorded"] == 18
    assert [v["variant"] for v in report["variants"]] == ["solo", "duo", "single-call-writer"]
    assert [v["accuracy"] for v in report["variants"]] == [0.5, 0.5, 0.5]
    assert report["max_tokens_per_cell"] == 100_000 and "rows" not in report
    assert all(p["test"] == "mcnemar" and p["cost_ratio"] is None for p in report["pairs"])

    table = team.ok("eval", "show", report["eval_id"]).stdout
    assert (
        "single-call-writer" in table
        and "n/a (no cost)" in table
        and "budget per cell: 100,000 tokens" in table
    )
    rows = team.json("eval", "show", report["eval_id"], "--rows")["rows"]
    assert len(rows) == 18 and {r["score"] for r in rows} == {0.0, 1.0}
    listed = team.json("eval", "list")
    assert [e["id"] for e in listed] == [report["eval_id"]] and listed[0]["samples"] == 6
    executions = team.json("executions", "list", "--limit", "100")
    cells = [e for e in executions if e["eval_id"] == report["eval_id"]]
    assert len(cells) == 18 and {e["topology_name"] for e in cells} == {"solo", "duo", "single-call-writer"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--topology", "solo", "--topology", "solo"), "given twice"),
        (("--topology", "nope"), "topology 'nope' not found"),
        (("--topology", "solo", "--scorer", "bogus"), "unknown scorer"),
        (("--topology", "solo", "--budget-per-sample", "plenty"), "--budget-per-sample"),
        ((), "give at least one variant"),
    ],
)
def test_mistakes_are_one_line_and_write_nothing(team, args, says):
    team.user_error("eval", "--dataset", str(Path(team.db).parent / "data.jsonl"), *args, says=says)
    assert team.json("eval", "list") == []


def test_show_and_resume_name_an_unknown_eval(team):
    team.user_error(
        "eval", "show", "eval-nope", says="eval 'eval-nope' not found; list them with: qmcp eval list"
    )
    team.user_error("eval", "resume", "eval-nope", says="not found")


def test_without_a_dataset_it_shows_its_help_and_an_empty_list_says_how_to_start(team):
    assert "--dataset" in team.ok("eval").stdout
    assert "qmcp eval --dataset" in team.ok("eval", "list").stdout
