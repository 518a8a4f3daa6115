"""README.md runs as written: every code block, in order, offline, on a fresh database.

The rule, stated in the README too: each fenced block runs unless the line before it (blank lines
aside) is `<!-- not-run: REASON -->` — package installs, the whole suite, benchmarks, servers that
do not stop. `<!-- env: NAME=VALUE ... (why) -->` before a block runs it with those variables
(the Python example runs on the offline `test` model, as the README says it can).

Shell blocks (`bash`, `sh`; the `$ ` lines of `console`) run one after the other with `bash -eu -o
pipefail` in a temporary directory holding a copy of `examples/`, like the repository's root;
`python` blocks run as scripts there. Provider keys are removed from the environment, so a block
that would need the network fails here instead of passing on a developer's machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNNABLE = {"bash", "sh", "console", "python"}
_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!--\s*(not-run|env):\s*(.*?)\s*-->$")
_KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY")


@dataclass
class Block:
    line: int
    language: str
    text: str
    skip: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def script(self) -> str:
        if self.language != "console":
            return self.text
        return "\n".join(line[2:] for line in self.text.splitlines() if line.startswith("$ "))


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text with the marker before each."""
    found: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        block = Block(index + 1, fence[1], "\n".join(lines[index + 1 : end]) + "\n")
        before = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = _MARKER.match(before)
        if marker and marker[1] == "not-run":
            block.skip = marker[2]
        elif marker:
            assignments = marker[2].split("(")[0].split()
            block.env = dict(item.split("=", 1) for item in assignments)
        found.append(block)
        index = end + 1
    return found


def test_every_block_is_run_or_says_why_not():
    for block in blocks(README.read_text()):
        if block.skip is not None:
            assert block.skip, f"README.md:{block.line}: a not-run marker needs its reason"
        else:
            assert block.language in RUNNABLE, (
                f"README.md:{block.line}: a ```{block.language} block cannot run; mark it <!-- not-run: why -->"
            )


def test_the_marker_rule_finds_what_it_should():
    text = "x\n<!-- not-run: a server -->\n\n```bash\nqmcp serve\n```\n<!-- env: A=1 B=2 (why) -->\n```python\np\n```\n"
    skipped, with_env = blocks(text)
    assert (skipped.skip, skipped.text) == ("a server", "qmcp serve\n")
    assert (with_env.skip, with_env.env, with_env.language) == (None, {"A": "1", "B": "2"}, "python")


@pytest.mark.slow  # runs every README block as a script
def test_readme_runs_as_written(tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    env = {
        key: value for key, value in os.environ.items() if key not in _KEYS and not key.startswith("QMCP_")
    }
    env["QMCP_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'readme.db'}"
    ran = 0
    for block in blocks(README.read_text()):
        if block.skip is not None:
            continue
        if block.language == "python":
            script = tmp_path / f"block_{block.line}.py"
            script.write_text(block.script)
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-eu", "-o", "pipefail", "-x", "-c", block.script]
        result = subprocess.run(
            command, cwd=work, env=env | block.env, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            pytest.fail(
                f"README.md:{block.line}: the ```{block.language} block exits {result.returncode}\n"
                f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
            )
        ran += 1
    assert ran >= 3
