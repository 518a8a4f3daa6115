"""Printing: one JSON document on stdout for scripts, rich tables for people, errors as one line."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..app import answer_text, format_cost, format_duration, format_tokens, format_when

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_PAUSED",
    "EXIT_USAGE",
    "answer_text",
    "count",
    "excerpt",
    "format_cost",
    "format_duration",
    "format_tokens",
    "format_when",
    "print_json",
    "print_table",
    "report_error",
    "stderr",
    "stdout",
]

EXIT_FAILED = 1
"""The run failed (or another error that is not the user's)."""
EXIT_USAGE = 2
"""Bad usage or input: the user can fix it."""
EXIT_PAUSED = 3
"""The run waits for a person's answer (a human gate): not done, not failed; `executions respond` goes on."""
EXIT_INTERRUPTED = 130
"""Ctrl-C."""


_PIPE_WIDTH = 240


def stdout() -> Console:
    """A console on the current stdout (created per call, so test runners that swap streams work).

    Piped output gets a wide page, so table rows stay on one line for grep and friends.
    """
    return Console(highlight=False, width=None if sys.stdout.isatty() else _PIPE_WIDTH)


def stderr() -> Console:
    """A console on the current stderr that never wraps, so each message stays one line."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def print_json(document: Any) -> None:
    """Exactly one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=_json_default) + "\n")
    sys.stdout.flush()


def print_table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "nothing yet"
) -> None:
    """A rich table of plain values (user text is escaped, never read as markup)."""
    materialised = [[escape(str(cell)) for cell in row] for row in rows]
    console = stdout()
    if not materialised:
        console.print(f"[dim]{escape(empty)}[/dim]", soft_wrap=True)
        return
    if title:
        console.print(f"[bold]{escape(title)}[/bold]", soft_wrap=True)
    table = Table(header_style="bold")
    for index, column in enumerate(columns):
        table.add_column(column, overflow="fold", no_wrap=index == 0)
    for row in materialised:
        table.add_row(*row)
    console.print(table)


def count(n: int, noun: str) -> str:
    """`1 step`, `3 steps`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def excerpt(text: Any, limit: int = 80) -> str:
    """One line of at most `limit` characters."""
    if text is None:
        return ""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def report_error(error: BaseException, verbose: bool, command: Callable[..., str] | None = None) -> int:
    """Print `error` as one line on stderr (the traceback too with --verbose); return the exit code.

    `command` renders a `qmcp` command line with the global options in use, for the commands
    errors name. Passwords in URLs are masked in all of it.
    """
    from qmcp.agentframework.errors import QmcpError, UntrustedDefinitionError, UserInputError
    from qmcp.config import SettingsError
    from qmcp.redaction import redact

    if verbose:
        sys.stderr.write(redact("".join(traceback.format_exception(error))))
        sys.stderr.flush()
    if isinstance(error, UntrustedDefinitionError) and command is not None:
        message, code = error.render(command(*error.trust_command)), EXIT_USAGE
    elif isinstance(error, UserInputError | SettingsError):
        message, code = str(error), EXIT_USAGE
    elif isinstance(error, QmcpError):
        message, code = str(error), EXIT_FAILED
    else:
        first_line = next(iter(str(error).splitlines()), "")
        hint = "" if verbose else " (run with --verbose for the traceback)"
        message, code = f"internal error: {type(error).__name__}: {first_line}{hint}", EXIT_FAILED
    console = stderr()
    for line in redact(message).splitlines() or [type(error).__name__]:
        console.print(f"[bold red]error:[/] {escape(line)}")
    return code
