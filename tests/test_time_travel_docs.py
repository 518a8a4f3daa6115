"""docs/time-travel.md runs as written: its shell blocks as one terminal session (a later block uses
the ids an earlier one set), then its Python blocks, offline on a fresh database; then what they
made is checked (the forks, their parents and fork steps, the inherited and edited steps).

The marker rule is README.md's (tests/test_readme.py): a block runs unless `<!-- not-run: why -->`
is before it; `<!-- env: ... -->` sets variables for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_readme import _KEYS, RUNNABLE, blocks

from qmcp.agentframework.store import Database

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "time-travel.md"
PLAN, WRITE, REVIEW = "pipeline/0:plan", "pipeline/1:write", "pipeline/2:review"


def test_every_block_runs_or_says_why_not():
    found = blocks(DOC.read_text())
    assert found
    for block in found:
        assert block.skip or block.language in RUNNABLE, f"time-travel.md:{block.line}: mark it not-run, why"


@pytest.mark.slow  # runs the page's commands as processes
async def test_the_time_travel_session_runs_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in _KEYS and not k.startswith("QMCP_")}
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'session.db'}"
    env["QMCP_DATABASE_URL"] = db_url
    found = [block for block in blocks(DOC.read_text()) if block.skip is None]
    session = "\n".join(b.script for b in found if b.language != "python")
    shell = subprocess.run(
        ["bash", "-eu", "-o", "pipefail", "-x", "-c", session],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert shell.returncode == 0, f"stdout:\n{shell.stdout[-4000:]}\nstderr:\n{shell.stderr[-4000:]}"
    for block in (b for b in found if b.language == "python"):
        script = tmp_path / f"block_{block.line}.py"
        script.write_text(block.script)
        ran = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env | block.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ran.returncode == 0, (
            f"time-travel.md:{block.line}:\n{ran.stdout[-2000:]}\n{ran.stderr[-4000:]}"
        )
        assert ran.stdout.startswith("completed ")

    async with Database(db_url) as db:
        first, fixed, edited, scripted = await db.list_executions(topology_name="article", oldest_first=True)
        steps = {
            e.id: {s.key: s for s in await db.list_steps(e.id)} for e in (first, fixed, edited, scripted)
        }
    assert first.parent_id is None and steps[first.id][WRITE].response.startswith("Analysis:")
    for fork, at in ((fixed, WRITE), (edited, WRITE), (scripted, REVIEW)):
        assert (fork.parent_id, fork.fork_key, str(fork.status)) == (first.id, at, "completed")
    assert steps[fixed.id][PLAN].inherited and not steps[fixed.id][WRITE].inherited
    assert steps[fixed.id][PLAN].response == steps[first.id][PLAN].response  # replayed, not run again
    assert steps[fixed.id][WRITE].response.startswith("Draft:")  # the fixed agent wrote a draft
    plan = steps[edited.id][PLAN]
    assert plan.inherited and (plan.output or {}).get("edited")
    assert plan.response == "Plan: the Danube, the Rhine and the Loire, one paragraph each"
    assert "the Danube, the Rhine" in json.dumps(steps[edited.id][WRITE].request)  # what the writer received
    assert [k for k, s in steps[scripted.id].items() if s.inherited] == [PLAN, WRITE]
