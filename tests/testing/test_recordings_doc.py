"""docs/testing-with-recordings.md runs as written: its blocks in order, offline, on a fresh database
(the README's rule: a block marked `<!-- not-run: why -->` is skipped)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing-with-recordings.md"
_FENCE = re.compile(r"^```(\S*)\s*$")


def _blocks(text: str) -> list[tuple[int, str, str]]:
    """(line, language, code) of every block not marked not-run."""
    lines, found, index = text.splitlines(), [], 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        before = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        if not before.startswith("<!-- not-run:"):
            found.append((index + 1, fence[1], "\n".join(lines[index + 1 : end]) + "\n"))
        index = end + 1
    return found


@pytest.mark.slow  # runs the doc's blocks as processes
def test_the_recordings_doc_runs_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMCP_") and not k.endswith("_API_KEY")}
    env["QMCP_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'doc.db'}"
    outputs = []
    for line, language, code in _blocks(DOC.read_text()):
        assert language in ("bash", "python"), f"{DOC.name}:{line}: a ```{language} block cannot run"
        if language == "python":
            script = tmp_path / f"block_{line}.py"
            script.write_text(code)
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-eu", "-o", "pipefail", "-c", code]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (
            f"{DOC.name}:{line} exits {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        outputs.append(result.stdout)
    text = "".join(outputs)
    assert "identical output, no model called" in text
    assert text.count("replayed 2 steps: identical") >= 3
    assert "step 'relay/0' (slot 'writer') asks another prompt than the recording" in text
    assert "offline run: completed" in text
