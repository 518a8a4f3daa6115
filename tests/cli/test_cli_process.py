"""The installed `qmcp` executable in subprocesses: startup cost, exit codes, and Ctrl-C then resume."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _signals import default_signals

HEAVY = ("pydantic_ai", "sqlalchemy", "sqlmodel", "qmcp.agentframework", "qmcp.config", "asyncio")


@pytest.mark.slow  # a fresh interpreter's imports
@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["agents", "--help"],
        ["agents", "topologies", "--help"],
        ["init", "--help"],
        ["schema", "--help"],
        ["eval", "--help"],
        ["eval", "resume", "--help"],
    ],
)
def test_help_imports_no_heavy_module(args):
    code = (
        "import sys\nfrom qmcp.cli import main\n"
        f"sys.argv = ['qmcp', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr
    assert "Usage: qmcp" in result.stdout


def test_help_and_version_are_fast(qmcp_exe):
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        result = subprocess.run([qmcp_exe, "--help"], capture_output=True, text=True, timeout=60)
        timings.append(time.perf_counter() - started)
        assert result.returncode == 0
    assert statistics.median(timings) < 2.0, timings
    for command in ("agents", "executions", "apply", "demo"):
        assert command in result.stdout
    version = subprocess.run([qmcp_exe, "--version"], capture_output=True, text=True, timeout=60)
    assert re.fullmatch(r"qmcp \d+\.\d+\.\d+\S*\n", version.stdout)


def test_commands_and_exit_codes_through_the_executable(cli, run_qmcp):
    cli.ok("agents", "create", "solo", "writer", "--model", "test")
    cli.ok("agents", "topologies", "create", "one", "pipeline", "--agent", "only=solo")

    run = run_qmcp(
        "--format", "json", "agents", "topologies", "run", "one", "--input-json", '{"prompt": "hi"}'
    )
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    assert document["status"] == "completed"
    assert [s["key"] for s in cli.json("executions", "show", document["execution_id"])["steps"]] == [
        "pipeline/0:only"
    ]

    bad = run_qmcp("agents", "topologies", "run", "one", "--input-json", "{nope")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --input-json is not valid JSON") and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1
    assert run_qmcp("agents", "bogus-command").returncode == 2


def test_a_bad_option_or_argument_is_one_line_naming_the_command_and_its_help(run_qmcp):
    """click's usage errors (a box of four lines) are one `error:` line, as every other mistake is."""
    for args, command, says in (
        (("executions", "prune", "--keep-last", "-1"), "qmcp executions prune", "'--keep-last'"),
        (("executions", "show"), "qmcp executions show", "Missing argument 'ID'"),
        (("--bogus",), "qmcp", "No such option: --bogus"),
    ):
        result = run_qmcp(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {command}: "), (
            result.stderr
        )
        assert says in result.stderr and result.stderr.rstrip().endswith(f"(see {command} --help)")
    assert "Usage: qmcp" in run_qmcp().stdout  # no arguments: the help, as before


DRIVER = """\
import sys

from qmcp.agentframework.llm import ScriptedModel, register_model

register_model("scripted:slow", ScriptedModel(latency=1.0).model)

from qmcp.cli import main

sys.argv[0] = "qmcp"
main()
"""


def _driver(tmp_path: Path, db_file: Path, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    """`qmcp ARGS` with a slow scripted model registered (DRIVER), in a subprocess."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "QMCP_DATABASE_URL": f"sqlite+aiosqlite:///{db_file}"}
    return subprocess.Popen(
        [sys.executable, str(driver), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, **kwargs.pop("env", {})},  # type: ignore[dict-item]
        cwd=tmp_path,
        preexec_fn=default_signals,  # Ctrl-C works even when pytest runs as a background job
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.mark.slow
def test_ctrl_c_of_a_model_override_run_then_the_printed_command_continues_on_that_model(
    cli, db_file: Path, tmp_path: Path
):
    """The printed resume command continues the same run: the `--model` it ran with (not the agents'
    own model, not QMCP_MODEL_OVERRIDE of the resuming shell) and its runner."""
    for name in ("first", "second", "third"):
        cli.ok("agents", "create", name, "writer", "--model", "test")
    cli.ok(
        "agents",
        "topologies",
        "create",
        "slow",
        "pipeline",
        "-a",
        "a=first",
        "-a",
        "b=second",
        "-a",
        "c=third",
    )
    process = _driver(
        tmp_path,
        db_file,
        "--model",
        "scripted:slow",
        "agents",
        "topologies",
        "run",
        "slow",
        "--runner",
        "async",
        "--input-json",
        '{"prompt": "go"}',
    )
    assert process.stderr is not None
    progress = []
    for line in process.stderr:
        progress.append(line)
        if " completed " in line:  # the first step is durable: interrupt during the second
            process.send_signal(signal.SIGINT)
            break
    _, rest = process.communicate(timeout=60)
    stderr = "".join(progress) + rest
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    command = re.search(r"resume it with: (qmcp executions resume (\S+))\n", stderr)
    assert command, stderr
    execution_id = command.group(2)

    interrupted = cli.json("executions", "show", execution_id)
    assert interrupted["status"] == "cancelled"
    assert [s["key"] for s in interrupted["steps"] if s["status"] == "completed"] == ["pipeline/0:a"]

    # The printed command, as printed (run by the driver, which is qmcp with the slow model known).
    resumed = _driver(tmp_path, db_file, *command.group(1).split()[1:], env={"QMCP_MODEL_OVERRIDE": "test"})
    _, resume_stderr = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, resume_stderr
    assert "replayed   pipeline/0:a" in resume_stderr
    finished = cli.json("executions", "show", execution_id)
    assert finished["status"] == "completed" and finished["attempts"] == 2
    assert finished["runner_type"] == "async" and finished["runner_options"] == {"max_concurrent": 10}
    assert [(s["key"], s["model"]) for s in finished["steps"]] == [
        ("pipeline/0:a", "scripted:slow"),
        ("pipeline/1:b", "scripted:slow"),
        ("pipeline/2:c", "scripted:slow"),
    ]
    assert "changes" not in finished["history"][1]  # nothing was changed: the same run went on
