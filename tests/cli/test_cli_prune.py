"""`qmcp executions prune`: the report in a table or JSON, a dry run, and one line for a wrong value
(in process, and the installed executable in a subprocess)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from qmcp.agentframework.models import Topology
from qmcp.agentframework.runners import LocalRunner


def _runs(db_file: Path, agent: Any, count: int) -> list[str]:
    async def go() -> list[str]:
        runner = LocalRunner(db_url=f"sqlite+aiosqlite:///{db_file}")
        team = {"first": agent("first", "writer"), "second": agent("second", "critic")}
        shape = Topology(name="nightly", topology_type="pipeline")
        return [
            str((await runner.run(shape, team, {"prompt": "x" * 5000})).execution_id) for _ in range(count)
        ]

    return asyncio.run(go())


def _left(db_file: Path) -> int:
    with sqlite3.connect(db_file) as connection:
        return int(connection.execute("SELECT count(*) FROM executions").fetchone()[0])


def test_a_dry_run_then_a_prune_report_rows_and_bytes(cli: Any, db_file: Path, agent: Any):
    _runs(db_file, agent, 5)
    dry = cli.ok("executions", "prune", "--older-than", "0s", "--keep-last", "2", "--dry-run")
    assert "Would delete" in dry.stdout and "nothing was deleted (dry run)" in dry.stdout
    assert _left(db_file) == 5
    report = cli.json("executions", "prune", "--older-than", "0s", "--keep-last", "2")
    assert (report["executions"], report["steps"], report["usage_rows"]) == (3, 6, 6)
    assert report["compaction"] == "VACUUM" and report["bytes_reclaimed"] > 0
    assert _left(db_file) == 2
    table = cli.ok("executions", "prune", "--older-than", "0s", "--status", "completed,failed")
    assert "Deleted" in table.stdout and "deleted 2 execution(s)" in table.stdout
    assert _left(db_file) == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--older-than", "30days"],
            "--older-than '30days' is not a duration: write a whole number and a unit",
        ),
        (["--older-than", "1d", "--status", "running"], "prune never deletes running executions"),
        (["--older-than", "1d", "--status", "done"], "--status: unknown status 'done'"),
        ([], "prune needs --older-than AGE (30d) or --keep-last N"),
    ],
)
def test_a_wrong_value_is_one_line(cli: Any, args: list[str], says: str):
    cli.user_error("executions", "prune", *args, says=says)


@pytest.mark.slow  # the installed executable
def test_the_executable_prunes_and_refuses_a_wrong_age_in_one_line(run_qmcp, db_file: Path, agent: Any):
    _runs(db_file, agent, 3)
    wrong = run_qmcp("executions", "prune", "--older-than", "a month")
    _one_line(wrong.returncode, wrong.stderr, "--older-than 'a month' is not a duration")
    assert wrong.stdout == "" and _left(db_file) == 3
    done = run_qmcp("--format", "json", "executions", "prune", "--older-than", "0s")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["executions"] == 3 and _left(db_file) == 0


@pytest.mark.slow  # the installed executable
def test_serve_refuses_a_wrong_retention_in_one_line(run_qmcp):
    refused = run_qmcp("serve", "--port", "0", env={"QMCP_RETENTION": "30d:keep=3"})
    _one_line(
        refused.returncode, refused.stderr, "QMCP_RETENTION='30d:keep=3': 'keep' is not a retention option"
    )


def _one_line(code: int, stderr: str, says: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, stderr)
    assert says in lines[0] and "Traceback" not in stderr
