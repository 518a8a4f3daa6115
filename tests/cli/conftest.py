"""Fixtures for the CLI tests: the app in-process on a temporary database, and the installed executable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from qmcp.cli import app


@dataclass
class Cli:
    """Runs `qmcp --db <tmp db> ARGS` in-process through typer's test runner."""

    db: str

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(app, ["--db", self.db, *args], input=input)

    def ok(self, *args: str, input: str | None = None) -> Result:
        """Run, and fail the test with the command's stderr unless it exits 0."""
        result = self(*args, input=input)
        assert result.exit_code == 0, (
            f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        return result

    def user_error(self, *args: str, says: str, input: str | None = None) -> str:
        """Run a user mistake: exit 2 and one `error:` line on stderr containing `says`, no traceback."""
        result = self(*args, input=input)
        assert_user_error(result.exit_code, result.stderr, says)
        return result.stderr

    def json(self, *args: str) -> Any:
        """Run with `--format json` and parse stdout, which must hold exactly one JSON document."""
        return json.loads(self.ok("--format", "json", *args).stdout)


def assert_user_error(exit_code: int, stderr: str, says: str) -> None:
    lines = stderr.strip().splitlines()
    assert exit_code == 2, f"exit {exit_code}: {stderr}"
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert says in lines[0], lines[0]
    assert "Traceback" not in stderr


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI points logging at the stderr of the moment, here the test runner's, closed afterwards.

    Put back the logging configuration of before, so later tests do not write to a closed stream.
    """
    from qmcp import observability

    yield
    observability.reset_logging()


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def cli(db_file: Path) -> Cli:
    return Cli(str(db_file))


@pytest.fixture
def qmcp_exe() -> str:
    exe = shutil.which("qmcp")
    assert exe, "the qmcp console script is not installed: pip install -e '.[dev]'"
    return exe


@pytest.fixture
def run_qmcp(qmcp_exe: str, db_file: Path, tmp_path: Path) -> Any:
    """Run the installed `qmcp` in a subprocess on the temporary database; returns the CompletedProcess."""

    def run(
        *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [qmcp_exe, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
            env={**os.environ, "QMCP_DATABASE_URL": f"sqlite+aiosqlite:///{db_file}", **(env or {})},
        )

    return run
