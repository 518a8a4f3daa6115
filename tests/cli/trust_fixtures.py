"""Executable parts that leave a mark when they run: a tool module and an MCP command writing marker files.

`qmcp_marker_tools:<name>` resolves (PEP 562 module `__getattr__`) to a tool function or an output
model and touches `<marker dir>/<name>` each time qmcp looks it up, which it does on every run that
prepares the tool; `mcp_command(path)` is an MCP server command that touches `path` when started
(and then exits, so the connection fails, which is fine: it ran). A marker that appears is code
that ran; the tests assert that nothing untrusted ever leaves one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

MODULE = "qmcp_marker_tools"
MARKER_VARIABLE = "QMCP_TEST_MARKER_DIR"

_SOURCE = '''
import os
import pathlib


def _mark(name):
    directory = pathlib.Path(os.environ["QMCP_TEST_MARKER_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).touch()


def __getattr__(name):
    if name.startswith("tool_"):
        _mark(name)

        def tool(text: str) -> str:
            """Echo a text."""
            _mark(name + ".called")
            return text

        return tool
    if name.startswith("Model_"):
        _mark(name)
        from pydantic import BaseModel

        class Answer(BaseModel):
            answer: str = ""

        return Answer
    raise AttributeError(name)
'''


def write_module(directory: Path) -> None:
    """Write the marker tool module into `directory` (which must be on sys.path / PYTHONPATH)."""
    (directory / f"{MODULE}.py").write_text(_SOURCE)


def mcp_command(marker: Path) -> dict[str, Any]:
    """An MCP stdio server definition that touches `marker` when it starts."""
    return {
        "command": sys.executable,
        "args": ["-c", "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()", str(marker)],
    }


def marks(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()} if directory.exists() else set()
