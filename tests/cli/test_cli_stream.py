"""`qmcp agents topologies run --stream`: the running step's text as the model writes it."""

from __future__ import annotations

import json


def test_stream_prints_each_step_text_as_written(cli):
    cli.ok("agents", "create", "planner", "planner", "--model", "test")
    cli.ok("agents", "create", "writer", "writer", "--model", "test")
    cli.ok("agents", "topologies", "create", "review", "pipeline", "-a", "plan=planner", "-a", "write=writer")
    streamed = cli.ok(
        "agents", "topologies", "run", "review", "--input-json", '{"prompt": "Why?"}', "--stream"
    ).stderr
    plain = cli.ok("agents", "topologies", "run", "review", "--input-json", '{"prompt": "Why?"}').stderr
    assert "--- pipeline/0:plan (plan) ---" in streamed and "---" not in plain
    shown = json.loads(cli.ok("--format", "json", "executions", "list", "--limit", "2").stdout)
    steps = json.loads(cli.ok("--format", "json", "executions", "show", shown[1]["id"]).stdout)["steps"]
    for step in steps:
        header = f"--- {step['key']} ({step['slot']}) ---\n"
        after = streamed.split(header, 1)[1]
        assert after.startswith(step["response"] + "\n"), after[:200]
    quiet = cli.ok(
        "--format", "json", "agents", "topologies", "run", "review", "--input-json", "{}", "--stream"
    )
    assert "---" not in quiet.stderr and json.loads(quiet.stdout)["status"] == "completed"


def test_the_live_display_shows_the_running_steps_text():
    from rich.console import Console

    from qmcp.agentframework.topologies import StepEvent
    from qmcp.cli._progress import DisplayMode, RunDisplay

    display = RunDisplay(DisplayMode.LIVE, "review", {"plan": ("planner", "test")}, stream=True)
    display(StepEvent("started", "pipeline/0:plan", "plan", "planner", "test"))
    for piece in ("Plan: ", "first [x]", "\nsecond line"):
        display(StepEvent("delta", "pipeline/0:plan", "plan", "planner", "test", text=piece))
    console = Console(record=True, width=100)
    console.print(display)
    screen = console.export_text()
    assert "pipeline/0:plan" in screen and "Plan: first [x]" in screen and "second line" in screen
    display(StepEvent("completed", "pipeline/0:plan", "plan", "planner", "test"))
    console = Console(record=True, width=100)
    console.print(display)
    assert "second line" not in console.export_text()
