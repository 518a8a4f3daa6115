"""`qmcp eval` in real processes, on SQLite and PostgreSQL: SIGKILL in the middle then resume pays
every call once; Ctrl-C names the resume command; the command end to end with JSONL and CSV
datasets, a single-call baseline, `--out`, `show`, `list` and the budget stop.

Every command runs through `eval_driver.py` (qmcp with the priced `scripted:eval` model, whose calls
every process logs to one file), so a test counts what each scenario paid for.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _signals import default_signals

from qmcp.agentframework.store import Database
from qmcp.eval import eval_scores, list_evals

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SAMPLES = 12
MEMBERS = 5  # pipe: 2 stages; ens: 3 members
RIGHT = [i for i in range(SAMPLES) if i % 3]  # the driver's model answers items divisible by 3 wrong


class Driver:
    """`qmcp` (with `scripted:eval`) on one database, its calls logged to one file."""

    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.db_url = db_url
        self.cwd = tmp_path
        self.log = tmp_path / "calls.jsonl"
        path = [str(HERE), str(HERE.parents[1]), os.environ.get("PYTHONPATH")]
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, path)),
            "QMCP_DATABASE_URL": db_url,
            "EVAL_CALL_LOG": str(self.log),
        }

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(HERE / "eval_driver.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            preexec_fn=default_signals,
        )

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        process = self.start(*args, env=env)
        stdout, stderr = process.communicate(timeout=240)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def calls(self, kind: str = "done") -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [
            entry for entry in map(json.loads, self.log.read_text().splitlines()) if entry["kind"] == kind
        ]


def _team(model: str) -> dict[str, Any]:
    agents = [{"name": f"p{i}", "role": "writer", "config": {"model": model}} for i in (1, 2)]
    agents += [{"name": f"e{i}", "role": "analyst", "config": {"model": model}} for i in (1, 2, 3)]
    return {
        "agents": agents,
        "topologies": [
            {"name": "pipe", "type": "pipeline", "agents": {"first": "p1", "second": "p2"}},
            {"name": "ens", "type": "ensemble", "agents": {"m1": "e1", "m2": "e2", "m3": "e3"}},
        ],
    }


@pytest.fixture
def qmcp(db_url: str, tmp_path: Path) -> Driver:
    driver = Driver(db_url, tmp_path)
    (tmp_path / "team.json").write_text(json.dumps(_team("scripted:eval")))
    driver.ok("apply", "-f", "team.json")
    with (tmp_path / "data.jsonl").open("w") as data:
        for i in range(SAMPLES):
            data.write(
                json.dumps({"id": f"q{i}", "input": f"solve item {i}", "target": f"answer {i}"}) + "\n"
            )
    return driver


async def _recorded(db_url: str) -> tuple[str | None, int]:
    async with Database(db_url, read_only=True) as db:
        runs = await list_evals(db)
        if not runs:
            return None, 0
        return runs[0].id, len(await eval_scores(db, runs[0].id))


async def _wait_for_some_cells(qmcp: Driver, process: subprocess.Popen[str]) -> str:
    """Until some cells are scored and others still run; the eval's id."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        eval_id, scored = await _recorded(qmcp.db_url)
        assert process.poll() is None, process.communicate()
        if eval_id and scored and len(qmcp.calls("start")) < SAMPLES * MEMBERS:
            return eval_id
        time.sleep(0.05)
    raise AssertionError("the eval recorded no cell in time")


def _report(qmcp: Driver, eval_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(qmcp.ok("--format", "json", "eval", "show", eval_id))
    return document


EVAL = ("eval", "--dataset", "data.jsonl", "--topology", "pipe", "--topology", "ens", "--max-concurrent", "3")


async def test_sigkill_in_the_middle_then_resume_pays_every_call_exactly_once(qmcp):
    process = qmcp.start(*EVAL, env={"EVAL_LATENCY": "0.4"})
    eval_id = await _wait_for_some_cells(qmcp, process)
    busy = qmcp.run("eval", "resume", eval_id)  # refused while its process runs it
    assert busy.returncode == 1 and f"eval {eval_id} is running" in busy.stderr, busy.stderr
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert 0 < len(qmcp.calls()) < SAMPLES * MEMBERS
    _, scored_before = await _recorded(qmcp.db_url)

    resumed = qmcp.run("eval", "resume", eval_id)
    assert resumed.returncode == 0, resumed.stderr
    done = Counter((call["agent"], call["item"]) for call in qmcp.calls())
    assert sum(done.values()) == SAMPLES * MEMBERS  # samples × members: nothing paid twice
    assert set(done.values()) == {1}
    assert len({call["pid"] for call in qmcp.calls()}) == 2

    report = _report(qmcp, eval_id)
    assert report["status"] == "completed" and report["recorded"] == 2 * SAMPLES > scored_before
    assert {v["variant"]: (v["n"], v["accuracy"], v["failures"]) for v in report["variants"]} == {
        "pipe": (SAMPLES, len(RIGHT) / SAMPLES, 0),
        "ens": (SAMPLES, len(RIGHT) / SAMPLES, 0),
    }
    assert report["spend_usd"] > 0


async def test_ctrl_c_names_the_eval_and_its_resume_command(qmcp):
    process = qmcp.start(*EVAL, env={"EVAL_LATENCY": "0.15"})
    eval_id = await _wait_for_some_cells(qmcp, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"interrupted: eval {eval_id} stopped" in stderr
    assert f"resume it with: qmcp eval resume {eval_id}" in stderr
    assert "Traceback" not in stderr
    assert _report(qmcp, eval_id)["status"] == "interrupted"

    qmcp.ok("eval", "resume", eval_id)
    done = Counter((call["agent"], call["item"]) for call in qmcp.calls())
    assert sum(done.values()) == SAMPLES * MEMBERS and set(done.values()) == {1}
    assert _report(qmcp, eval_id)["status"] == "completed"


async def test_the_command_end_to_end_with_jsonl_and_csv_a_baseline_and_out(qmcp, tmp_path):
    with (tmp_path / "data.csv").open("w", newline="") as data:
        writer = csv.writer(data)
        writer.writerow(["id", "question", "answer", "level"])
        for i in range(SAMPLES):
            writer.writerow([f"q{i}", f"solve item {i}", f"answer {i}", "easy" if i < 6 else "hard"])
    out = tmp_path / "results.json"
    table = qmcp.run(*EVAL, "--single-call", "p1", "--out", str(out))
    assert table.returncode == 0, table.stderr
    assert "single-call-p1" in table.stdout and "Pairwise" in table.stdout and "mcnemar" in table.stdout
    document = json.loads(out.read_text())
    eval_id = document["eval_id"]
    assert [v["variant"] for v in document["variants"]] == ["pipe", "ens", "single-call-p1"]
    assert all(v["accuracy"] == len(RIGHT) / SAMPLES for v in document["variants"])
    assert all(v["total_cost_usd"] > 0 and v["accuracy_per_dollar"] for v in document["variants"])
    rows = document["rows"]
    assert len(rows) == 3 * SAMPLES
    first = rows[0]
    assert set(first) >= {
        "sample_id", "variant", "repeat", "execution_id", "answer", "target", "score", "explanation",
        "tokens", "cost_usd", "latency_ms",
    }  # fmt: skip
    assert (first["sample_id"], first["variant"], first["answer"], first["score"]) == (
        "q0",
        "pipe",
        "no idea",
        0.0,
    )
    assert rows[1]["sample_id"] == "q0" and rows[1]["variant"] == "ens"
    q1 = next(r for r in rows if (r["sample_id"], r["variant"]) == ("q1", "single-call-p1"))
    assert (q1["answer"], q1["target"], q1["score"]) == ("answer 1", "answer 1", 1.0)
    shown = json.loads(qmcp.ok("--format", "json", "executions", "show", q1["execution_id"]))
    assert shown["eval_id"] == eval_id and shown["topology_name"] == "single-call-p1"
    assert _report(qmcp, eval_id)["variants"] == document["variants"]

    csv_run = qmcp.run(
        "--format", "json", "eval", "--dataset", "data.csv", "--columns", "input=question,target=answer",
        "--topology", "pipe", "--samples", "4", "--repeat", "2", "--scorer", "includes",
    )  # fmt: skip
    assert csv_run.returncode == 0, csv_run.stderr
    from_csv = json.loads(csv_run.stdout)
    assert (from_csv["samples"], from_csv["cells"], from_csv["recorded"]) == (4, 8, 8)
    assert from_csv["variants"][0]["accuracy"] == 0.5  # items 0 and 3 of 0..3 are wrong

    listed = json.loads(qmcp.ok("--format", "json", "eval", "list"))
    assert [run["id"] for run in listed] == [from_csv["eval_id"], eval_id]
    assert listed[1]["variants"] == ["pipe", "ens", "single-call-p1"] and listed[1]["status"] == "completed"
    assert "completed" in qmcp.ok("eval", "show", eval_id)


async def test_a_budget_stop_ends_with_one_line_and_a_partial_report(qmcp):
    stopped = qmcp.run(*EVAL, "--max-cost", "0.000001")
    assert stopped.returncode == 0, stopped.stderr
    (line,) = [ln for ln in stopped.stderr.splitlines() if " stopped: " in ln]
    assert "stopped: it spent $" in line and "--max-cost" in line and "qmcp eval resume" in line
    assert "stopped (budget)" in stopped.stdout
    eval_id, scored = await _recorded(qmcp.db_url)
    assert eval_id and 0 < scored < 2 * SAMPLES
    assert len(qmcp.calls()) < SAMPLES * MEMBERS

    resumed = qmcp.run("eval", "resume", eval_id, "--max-cost", "10")
    assert resumed.returncode == 0, resumed.stderr
    done = Counter((call["agent"], call["item"]) for call in qmcp.calls())
    assert sum(done.values()) == SAMPLES * MEMBERS and set(done.values()) == {1}


async def test_a_bad_line_is_an_error_naming_it_unless_skipped(qmcp, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"input": "solve item 1", "target": "answer 1"}\n{not json\n')
    refused = qmcp.run("eval", "--dataset", "bad.jsonl", "--topology", "pipe")
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "2" in lines[0]
    assert "Traceback" not in refused.stderr
    skipped = qmcp.run("eval", "--dataset", "bad.jsonl", "--topology", "pipe", "--skip-bad")
    assert skipped.returncode == 0, skipped.stderr
    assert "1 dataset lines skipped" in skipped.stdout


def test_the_quick_start_of_docs_eval_md_runs_as_written(tmp_path):
    import re
    import shutil

    root = HERE.parents[1]
    block = re.search(r"```bash\n(.*?)```", (root / "docs" / "eval.md").read_text(), re.S)
    assert block is not None
    shutil.copytree(root / "examples", tmp_path / "examples")
    done = subprocess.run(
        ["bash", "-eu", "-o", "pipefail", "-c", block.group(1)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=240,
        env={k: v for k, v in os.environ.items() if k != "QMCP_DATABASE_URL"},
    )
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "results.json").read_text())
    assert [v["variant"] for v in document["variants"]] == ["solve-and-check", "vote", "single-call-solver"]
    assert len(document["rows"]) == 60 and document["status"] == "completed"
