"""The core install (library, command line, SQLite) works without any extra, and a feature whose
extra is missing says so in one line naming the pip command. Extras are hidden from a subprocess
by putting None in `sys.modules` (importing them then fails as if they were not installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qmcp.agentframework.errors import MissingExtraError
from qmcp.agentframework.extras import EXTRAS, require

EXTRA_MODULES = ("xllamacpp", "metaflow", "asyncpg", "mcp", "fastapi", "uvicorn")


def _without(modules: tuple[str, ...], code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in modules)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "QMCP_DATABASE_URL": f"sqlite+aiosqlite:///{cwd}/qmcp.db"},
        timeout=180,
    )


def _cli(*args: str) -> str:
    return f"from qmcp.cli import main\nsys.argv = ['qmcp', *{list(args)!r}]\nmain()\n"


def _one_error_line(result: subprocess.CompletedProcess[str], says: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr


@pytest.mark.slow  # runs `qmcp` in a Python process without the extras
def test_the_core_runs_a_team_without_any_extra(tmp_path: Path):
    result = _without(EXTRA_MODULES, _cli("--model", "test", "--quiet", "demo"), tmp_path)
    assert result.returncode == 0, result.stderr
    listed = _without(EXTRA_MODULES, _cli("--format", "json", "executions", "list"), tmp_path)
    assert listed.returncode == 0 and '"completed"' in listed.stdout, listed.stderr


@pytest.mark.parametrize(
    ("module", "code", "says"),
    [
        (
            "metaflow",
            "from qmcp.agentframework.runners import MetaflowRunner\nMetaflowRunner()",
            "the Metaflow runner needs metaflow: pip install 'qmcp[metaflow]'",
        ),
        (
            "asyncpg",
            "from qmcp.agentframework.store import create_engine\n"
            "create_engine('postgresql+asyncpg://u@127.0.0.1/db')",
            "PostgreSQL needs asyncpg: pip install 'qmcp[postgres]'",
        ),
        (
            "xllamacpp",
            "from qmcp.agentframework.llm._local import LocalModel\nLocalModel('smollm2')",
            "llama.cpp runtime (xllamacpp): pip install 'qmcp[local]'",
        ),
        (
            "mcp",
            "from qmcp.agentframework.extras import require\nrequire('mcp', extra='mcp', feature='MCP', load=False)",
            "MCP needs mcp: pip install 'qmcp[mcp]'",
        ),
    ],
)
@pytest.mark.slow  # a Python process without the extra
def test_a_missing_extra_is_one_line_naming_the_pip_command(
    module: str, code: str, says: str, tmp_path: Path
):
    wrapped = (
        "from qmcp.agentframework.errors import UserInputError\n"
        f"try:\n    exec({code!r})\nexcept UserInputError as error:\n    print(error)\n"
    )
    result = _without((module,), wrapped, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(says), result.stdout


@pytest.mark.slow  # `qmcp` processes without the extras
def test_commands_whose_extra_is_missing_say_which(tmp_path: Path):
    _one_error_line(_without(("fastapi",), _cli("serve"), tmp_path), "pip install 'qmcp[server]'")
    _one_error_line(_without(("fastapi",), _cli("mcp"), tmp_path), "pip install 'qmcp[server]'")
    _one_error_line(_without(("xllamacpp",), _cli("--quiet", "demo"), tmp_path), "pip install 'qmcp[local]'")


def test_require_imports_or_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert require("json", extra="local").__name__ == "json"  # type: ignore[union-attr]
    with pytest.raises(
        MissingExtraError, match=r"^qmcp_no_such_module is not installed: pip install 'qmcp\[mcp\]'$"
    ):
        require("qmcp_no_such_module", extra="mcp")
    with pytest.raises(ValueError, match="unknown extra"):
        require("json", extra="nope")
    # A module that is there but imports something missing is a broken install, not an extra to add.
    (tmp_path / "qmcp_broken_pkg.py").write_text("import qmcp_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="qmcp_missing_dependency"):
        require("qmcp_broken_pkg", extra="mcp")
    assert set(EXTRAS) == {"local", "metaflow", "postgres", "mcp", "server"}


def test_pyproject_extras_match():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRAS) | {"all", "dev", "bench"} == set(extras)
    assert extras["all"] == [f"qmcp[{','.join(EXTRAS)}]"]
    assert "qmcp[all]" in extras["dev"]
    core = " ".join(project["dependencies"])
    for package in ("metaflow", "xllamacpp", "asyncpg", "mcp", "fastapi", "uvicorn"):
        assert package not in core
