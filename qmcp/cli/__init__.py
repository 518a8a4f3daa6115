"""The `qmcp` command line (typer + rich).

Only typer is imported here and by the command modules at import time; the framework
(pydantic-ai, SQLAlchemy, SQLModel) is imported inside the commands that use it, so
`qmcp --help` answers fast.
"""

from __future__ import annotations

from ._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `qmcp` console script."""
    app(prog_name="qmcp")
