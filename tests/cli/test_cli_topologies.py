"""`qmcp agents topologies ...` and `qmcp executions ...` through typer's test runner, on the `test` model."""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path

import pytest


@pytest.fixture
def team(cli):
    """A stored three-stage pipeline and a synthesis ensemble, all on the offline `test` model."""
    for name, role in (
        ("planner", "planner"),
        ("critic", "critic"),
        ("writer", "writer"),
        ("synth", "synthesizer"),
    ):
        cli.ok("agents", "create", name, role, "--model", "test")
    cli.ok(
        "agents", "topologies", "create", "review", "pipeline", "-d", "plan, critique, write",
        "--agent", "plan=planner", "--agent", "critique=critic", "--agent", "write=writer",
    )  # fmt: skip
    cli.ok(
        "agents", "topologies", "create", "panel", "ensemble",
        "--config-json", '{"aggregation_method": "synthesis"}',
        "-a", "one=planner", "-a", "two=critic", "-a", "aggregator=synth",
    )  # fmt: skip
    return cli


def test_create_list_show(team):
    listed = team.json("agents", "topologies", "list")
    assert [(t["name"], t["topology_type"], t["slots"]) for t in listed] == [
        ("panel", "ensemble", 3),
        ("review", "pipeline", 3),
    ]
    shown = team.json("agents", "topologies", "show", "panel")
    assert shown["config"]["aggregation_method"] == "synthesis"
    assert list(shown["agents"]) == ["one", "two", "aggregator"]
    assert shown["agents"]["aggregator"]["name"] == "synth"
    assert shown["recent_executions"] == []
    table = team.ok("agents", "topologies", "show", "review").stdout
    assert "critique" in table and "plan, critique, write" in table
    assert "review" in team.ok("agents", "topologies", "list").stdout


def test_create_mistakes(team):
    create = ("agents", "topologies", "create")
    team.user_error(*create, "x", "blob", "-a", "a=planner", says="unknown topology type 'blob'")
    team.user_error(
        *create, "x", "debate", "-a", "proponent=planner", says="missing agents for slot(s): opponent"
    )
    team.user_error(*create, "x", "pipeline", "-a", "a=ghost", says="agent 'ghost' not found")
    team.user_error(*create, "x", "pipeline", "-a", "planner", says="--agent expects SLOT=AGENT")
    team.user_error(
        *create,
        "x",
        "pipeline",
        "-a",
        "a=planner",
        "--config-json",
        "{bad",
        says="--config-json is not valid JSON",
    )
    team.user_error(
        *create, "x", "ensemble", "-a", "a=planner", "--config-json", '{"failure_threshold": 3}',
        says="config.failure_threshold: Input should be less than or equal to 1",
    )  # fmt: skip
    team.user_error(*create, "review", "pipeline", "-a", "a=planner", says="topology 'review' already exists")
    assert len(team.json("agents", "topologies", "list")) == 2


def test_run_json_is_one_document(team):
    result = team.ok(
        "--model", "test", "--format", "json",
        "agents", "topologies", "run", "review", "--input-json", '{"prompt": "Plan a launch"}',
    )  # fmt: skip
    document = json.loads(result.stdout)
    assert document["status"] == "completed"
    assert document["topology_name"] == "review"
    assert document["output"]["final_stage"] == "write"
    assert document["input_tokens"] > 0
    uuid.UUID(document["execution_id"])
    assert result.stderr == ""  # silent: no progress lines


def test_run_shows_progress_and_answer(team):
    result = team.ok("agents", "topologies", "run", "panel", "--input-json", '{"prompt": "Name a colour"}')
    assert "✓ panel completed" in result.stdout
    assert "Synthesis: Name a colour" in result.stdout
    # Not a terminal: one plain line per step event on stderr.
    assert result.stderr.count("completed  ensemble/member:") == 2
    assert "ensemble/aggregate" in result.stderr


def test_run_async_runner(team):
    document = team.json(
        "agents", "topologies", "run", "panel", "--input-json", '{"prompt": "hi"}', "--runner", "async",
        "--max-concurrent", "2",
    )  # fmt: skip
    assert document["status"] == "completed"
    assert document["runner_type"] == "async"


def test_run_mistakes(team):
    run = ("agents", "topologies", "run")
    team.user_error(*run, "review", "--input-json", "{oops", says="--input-json is not valid JSON")
    team.user_error(*run, "review", "--input-json", "[1, 2]", says="--input-json must be a JSON object")
    team.user_error(*run, "ghost", "--input-json", "{}", says="topology 'ghost' not found")
    team.user_error(*run, "review", "--input-json", "{}", "--runner", "bogus", says="unknown runner 'bogus'")
    team.user_error("--model", "nope:nothing", *run, "review", "--input-json", "{}", says="nope:nothing")
    assert team("agents", "topologies", "run", "review").exit_code == 2  # --input-json is required
    assert team.json("executions", "list") == []


def test_qmcp_run_is_agents_topologies_run_and_topologies_is_its_group(team):
    short = team.json("run", "review", "--input-json", '{"prompt": "Plan a launch"}', "--runner", "async")
    assert (short["status"], short["topology_name"], short["runner_type"]) == ("completed", "review", "async")
    team.user_error("run", "ghost", "--input-json", "{}", says="topology 'ghost' not found")
    assert "short for `qmcp agents topologies run`" in team.ok("run", "--help").stdout
    assert "3 paused" in team.ok("run", "--help").stdout  # the exit codes are documented where they are met
    listed = team.json("topologies", "list")
    assert [t["name"] for t in listed] == [t["name"] for t in team.json("agents", "topologies", "list")]
    assert team.json("topologies", "show", "panel")["name"] == "panel"


def test_plain_progress_times_count_from_the_runs_first_step_not_the_cli_start(capsys):
    import time

    from qmcp.agentframework.topologies import StepEvent
    from qmcp.cli._progress import DisplayMode, RunDisplay

    display = RunDisplay(DisplayMode.PLAIN, "review", {"plan": ("planner", "test")})
    with display:
        time.sleep(0.3)  # the CLI importing and opening its database, before the run starts
        display(StepEvent("started", "pipeline/0:plan", "plan", "planner", "test"))
        display(StepEvent("completed", "pipeline/0:plan", "plan", "planner", "test"))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[0] for line in lines] == ["0.0s", "0.0s"], lines


@pytest.mark.slow
def test_metaflow_runner_goes_through_the_registry(cli, tmp_path, monkeypatch):
    from qmcp.agentframework.runners import RunnerRegistry

    cli.ok("agents", "create", "solo", "writer", "--model", "test")
    cli.ok("agents", "topologies", "create", "one", "pipeline", "-a", "only=solo")
    run = ("agents", "topologies", "run", "one", "--input-json", '{"prompt": "hi"}', "--runner", "metaflow")
    if "metaflow" not in RunnerRegistry.list():
        cli.user_error(*run, says="unknown runner 'metaflow'")
        return
    monkeypatch.chdir(tmp_path)  # Metaflow writes its flows and datastore in the working directory
    document = cli.json(*run)
    assert document["status"] == "completed", document["error"]
    assert document["runner_type"] == "metaflow"


def test_failed_run_exits_1_and_says_how_to_resume(cli, scripted):
    model, _ = scripted(failures={0: "auth", 1: "auth"})
    cli.ok("agents", "create", "doomed", "writer", "--model", model)
    cli.ok("agents", "topologies", "create", "fragile", "pipeline", "-a", "only=doomed")
    result = cli("agents", "topologies", "run", "fragile", "--input-json", '{"prompt": "x"}')
    assert result.exit_code == 1, result.stderr
    assert "✗ fragile failed" in result.stdout
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    # a rejected key fails a resume as it is too: the hint says to fix the cause first
    assert "this failure is permanent: fix its cause, then resume it with: qmcp --db" in result.stderr

    document = json.loads(
        cli("--format", "json", "agents", "topologies", "run", "fragile", "--input-json", "{}").stdout
    )
    assert document["status"] == "failed" and document["error"] and document["permanent"] is True


def test_executions_list_show_resume_cancel(team):
    first = team.json(
        "--model", "test", "agents", "topologies", "run", "review", "--input-json", '{"prompt": "a"}'
    )
    team.json("--model", "test", "agents", "topologies", "run", "panel", "--input-json", '{"prompt": "b"}')

    listed = team.json("executions", "list")
    assert [e["topology_name"] for e in listed] == ["panel", "review"]
    assert team.json("executions", "list", "--topology", "review")[0]["id"] == first["execution_id"]
    assert len(team.json("executions", "list", "--status", "completed", "--limit", "1")) == 1
    assert team.json("executions", "list", "--status", "failed") == []
    team.user_error("executions", "list", "--status", "bogus", says="unknown status 'bogus'")

    shown = team.json("executions", "show", first["execution_id"])
    assert shown["status"] == "completed"
    assert [s["slot"] for s in shown["steps"]] == ["plan", "critique", "write"]
    step = shown["steps"][0]
    for field in ("model", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "response", "request"):
        assert field in step
    assert shown["output_data"]["final_stage"] == "write"
    table = team.ok("executions", "show", first["execution_id"]).stdout
    for text in ("pipeline/0:plan", "pipeline/2:write", "completed", "Latency", "Draft: a"):
        assert text in table
    team.user_error("executions", "show", "not-a-uuid", says="is not an execution id")
    team.user_error("executions", "show", str(uuid.uuid4()), says="not found")

    resumed = team.json("executions", "resume", first["execution_id"])
    assert resumed["status"] == "completed" and resumed["execution_id"] == first["execution_id"]
    assert "already completed" in team.ok("executions", "cancel", first["execution_id"]).stdout
    team.user_error("executions", "resume", str(uuid.uuid4()), says="not found")


async def _interrupted_execution(db_url: str) -> str:
    """An execution left `running` by a killed process, as the database sees it."""
    from qmcp.agentframework.models import Execution
    from qmcp.agentframework.store import Database, Owner

    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # a pid no process can have
    async with Database(db_url) as db:
        topology, agents = await db.get_topology("review")
        execution = Execution(
            topology_id=topology.id,
            topology_name="review",
            topology_type="pipeline",
            input_data={"prompt": "later"},
            topology_snapshot=topology.definition(),
            agents_snapshot={slot: agent.definition() for slot, agent in agents.items()},
        )
        await db.executions.create(execution, Owner.this_process(pid=gone), runner="local")
        return str(execution.id)


def test_list_and_show_work_on_a_database_that_cannot_be_written(team, run_qmcp, tmp_path):
    """`executions list/show` only read: on a file nobody can write (root included), an execution
    whose owner is gone shows `interrupted` with its resume hint, and its row stays as written."""
    import asyncio
    import os
    import subprocess
    from pathlib import Path

    from qmcp.agentframework.store import close_engines

    execution_id = asyncio.run(_interrupted_execution(f"sqlite+aiosqlite:///{team.db}"))
    close_engines()
    path = Path(team.db)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        if os.geteuid() == 0:
            pytest.skip("cannot make a file read-only for root here (no chattr)")
        path.chmod(0o444)
    try:
        refused = run_qmcp("agents", "create", "late", "writer", "--model", "test")
        listed = run_qmcp("executions", "list")
        shown = run_qmcp("--format", "json", "executions", "show", execution_id[:8])
        table = run_qmcp("executions", "show", execution_id)
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o644)
    assert refused.returncode == 2 and "read-only" in refused.stderr, refused.stderr  # a writer is refused
    assert listed.returncode == 0, listed.stderr
    assert "interrupted" in listed.stdout and f"executions resume {execution_id}" in listed.stdout
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "interrupted", shown.stderr
    assert table.returncode == 0 and f"executions resume {execution_id}" in table.stdout, table.stderr
    assert asyncio.run(_stored_status(team.db, execution_id)) == "running"


async def _stored_status(db_file: str, execution_id: str) -> str:
    from qmcp.agentframework.store import Database

    async with Database(f"sqlite+aiosqlite:///{db_file}") as db:
        return str((await db.stored_execution(execution_id)).status)


def test_cancel_then_resume(team):
    import asyncio

    execution_id = asyncio.run(_interrupted_execution(f"sqlite+aiosqlite:///{team.db}"))
    listed = team.ok("executions", "list").stdout
    assert "interrupted" in listed and f"qmcp --db {team.db} executions resume {execution_id}" in listed
    assert team.json("executions", "show", execution_id)["status"] == "interrupted"
    out = team.ok("executions", "cancel", execution_id).stdout
    assert f"cancelled execution {execution_id}" in out and "executions resume" in out
    assert team.json("executions", "show", execution_id)["status"] == "cancelled"
    result = team.ok("executions", "resume", execution_id)
    assert "✓ review completed" in result.stdout
    assert team.json("executions", "show", execution_id)["status"] == "completed"


def test_quiet_and_verbose_runs(team):
    run = ("agents", "topologies", "run", "review", "--input-json", '{"prompt": "x"}')
    quiet = team.ok("--quiet", *run)
    assert quiet.stderr == ""
    assert "✓ review completed" in quiet.stdout
    verbose = team.ok("--verbose", *run)
    assert "run.end" in verbose.stderr  # the runner's own log lines
    assert "started    pipeline/0:plan" in verbose.stderr


def test_export_writes_a_metaflow_flow(team, tmp_path):
    document = team.json("agents", "topologies", "export", "panel", "--metaflow", str(tmp_path / "flows"))
    flow = tmp_path / "flows" / "panel_flow.py"
    assert document == {"topology": "panel", "flow": str(flow)}
    source = flow.read_text()
    assert "class PanelFlow(FlowSpec):" in source and 'foreach="member_calls"' in source
    compile(source, str(flow), "exec")
    team.user_error(
        "agents", "topologies", "export", "ghost", "--metaflow", str(tmp_path), says="'ghost' not found"
    )


def test_paused_run_is_answered_with_respond(cli):
    cli.ok("apply", "-f", "-", input=json.dumps({
        "agents": [
            {"name": "writer", "role": "writer", "config": {"model": "test"}},
            {"name": "gated", "role": "writer", "config": {"model": "test", "capabilities": ["human_in_loop"]}},
        ],
        "topologies": [{"name": "g", "type": "pipeline", "agents": {"a": "writer", "b": "gated"}}],
    }))  # fmt: skip
    paused = cli("agents", "topologies", "run", "g", "--input-json", '{"prompt": "hi"}')
    assert paused.exit_code == 3, paused.stdout + paused.stderr  # paused: neither done (0) nor failed (1)
    assert "⏸ g paused" in paused.stdout and "✓" not in paused.stdout
    assert (
        cli(
            "--format", "json", "executions", "resume", paused.stdout.split("execution ")[1].split()[0]
        ).exit_code
        == 3
    )
    command = next(line for line in paused.stdout.splitlines() if "executions respond" in line)
    words = shlex.split(command.split("with: ")[1])
    request_id = words[words.index("respond") + 1]
    execution_id, step = request_id.split(":", 1)
    assert uuid.UUID(execution_id) and step == "pipeline.1:b~23human-after"  # safe in a URL path
    cli.user_error(
        "executions", "respond", request_id, "maybe", says="Response must be one of: ['approve', 'reject']"
    )
    done = cli.json("executions", "respond", request_id, "approve")
    assert done["status"] == "completed" and done["output"]["final_stage"] == "b"
    cli.user_error("executions", "respond", request_id, "approve", says="already been responded to")
