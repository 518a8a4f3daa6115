"""The global options every command sees, and how commands open the database."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from qmcp.agentframework.store import Database

__all__ = ["CliState", "FormatOption", "OutputFormat", "cli_state", "open_database", "run_async"]

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, with asyncio imported when a command runs: `qmcp --help` never needs it."""
    import asyncio

    return asyncio.run(coroutine)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


FormatOption = Annotated[
    OutputFormat | None, typer.Option("--format", help="table or json \\[default: the global --format]")
]
"""Every command's own `--format`, which wins over the global one."""


@dataclass
class CliState:
    """Options of the root command (`qmcp --db ... --model ... --format ... --verbose/--quiet`)."""

    db: str | None = None
    model: str | None = None
    output_format: OutputFormat = OutputFormat.TABLE
    verbose: bool = False
    quiet: bool = False

    @property
    def db_url(self) -> str:
        """`--db`, else `QMCP_DATABASE_URL`, else `./agent.db`; a bare path means a SQLite file."""
        if self.db:
            return self.db if "://" in self.db else f"sqlite+aiosqlite:///{self.db}"
        from qmcp.config import settings

        return settings().database_url

    def command(self, *args: str) -> str:
        """A `qmcp` command line to show the user, carrying `--db` when one was given.

        A password is never shown: a URL from QMCP_DATABASE_URL is left out (the command finds it
        there again), and a `--db` URL holding one is shown masked, with how to run it anyway.
        """
        from qmcp.redaction import has_password, mask_url

        line = shlex.join(["qmcp", *(["--db", mask_url(self.db)] if self.db else []), *args])
        if self.db and has_password(self.db):
            line += " (password hidden: put the URL in QMCP_DATABASE_URL and leave out --db)"
        return line

    def json_output(self, override: OutputFormat | None) -> bool:
        """Whether to print JSON: a command's own `--format` wins over the global one."""
        return (override or self.output_format) is OutputFormat.JSON


def cli_state(ctx: typer.Context) -> CliState:
    """The root options, found on the context (sub-contexts inherit `obj`)."""
    return ctx.obj if isinstance(ctx.obj, CliState) else CliState()


@contextlib.asynccontextmanager
async def open_database(state: CliState, *, read_only: bool = False) -> AsyncIterator[Database]:
    """The database of `--db` / `QMCP_DATABASE_URL`, tables created on first use; `read_only` for a
    command that only reads (it works on a database that cannot be written)."""
    from qmcp.agentframework.store import Database

    async with Database(state.db_url, read_only=read_only) as db:
        yield db
