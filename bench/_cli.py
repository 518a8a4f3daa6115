"""cli_startup: the `qmcp` executable's wall time, and the import time of each framework."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from ._common import Case, Metrics, Skipped, sqlite_url, timed

__all__ = ["make_case"]

_IMPORTS = {
    "qmcp": "import qmcp.agentframework.runners",
    "langgraph": "import langgraph.graph, langgraph.checkpoint.sqlite.aio",
}


class Command:
    """One command line, run to completion per measured run; it must exit 0."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv, self.env = argv, env

    async def setup(self) -> None:
        pass

    async def run(self) -> Metrics:
        async def once() -> int:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(self.argv)} exited {process.returncode}: {stderr.decode()[-500:]}"
                )
            return process.returncode

        _, seconds = await timed(once)
        return {"seconds": seconds}

    async def close(self) -> None:
        pass


def make_case(framework: str, variant: str, workdir: Path) -> Case:
    """`help` and `agents_list` time the `qmcp` console script; `import` times importing a framework."""
    url = sqlite_url(workdir, "cli.db")
    env = {**os.environ, "QMCP_DATABASE_URL": url}
    if variant == "import":
        return Command([sys.executable, "-c", _IMPORTS[framework]], env)
    executable = Path(sys.executable).with_name("qmcp")
    if not executable.exists():
        raise Skipped(f"the qmcp executable is not installed next to {sys.executable}")
    if variant == "help":
        return Command([str(executable), "--help"], env)
    # The warm-up run creates the tables; the measured runs list agents of an empty database.
    return Command([str(executable), "--db", url, "agents", "list"], env)
