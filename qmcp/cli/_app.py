"""The root `qmcp` command: global options, sub-command groups, and errors turned into exit codes.

Exit codes scripts can rely on: 0 success, 1 the run failed, 2 usage or input error, 3 the run
paused for a person's answer, 130 interrupted.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ._agents import agents_app
from ._apply import apply
from ._db import db_app
from ._demo import demo
from ._eval import eval_app
from ._executions import executions_app
from ._init import init
from ._output import EXIT_INTERRUPTED, EXIT_USAGE, report_error, stderr
from ._schema import schema_app
from ._serve import mcp_stdio, serve
from ._state import CliState, OutputFormat, cli_state
from ._topologies import run_topology, topologies_app
from ._trust import trust_app, untrust_app

__all__ = ["app"]


class _QmcpGroup(TyperGroup):
    """Turns exceptions from any sub-command into a message and an exit code, not a traceback."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except Exception as error:  # the root's own options (`qmcp --bogus`)
            if _is_usage_error(error):
                raise typer.Exit(_usage_error(error)) from None
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            stderr().print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as error:
            # typer/click signal exits and usage errors with exceptions that carry their exit code;
            # typer also ends quietly when stdout is a closed pipe (`qmcp executions list | head`).
            if _is_usage_error(error):
                raise typer.Exit(_usage_error(error)) from None
            if isinstance(error, typer.Exit | typer.Abort | BrokenPipeError) or hasattr(error, "exit_code"):
                raise
            state = cli_state(ctx)
            raise typer.Exit(report_error(error, state.verbose, state.command)) from None


def _is_usage_error(error: Exception) -> bool:
    """A bad option or argument of a sub-command: click's `UsageError`, which typer ≥ 0.25 vendors
    under a private module, so it is recognised by its shape (a help request without arguments is not one)."""
    return (
        getattr(error, "exit_code", None) == 2
        and callable(getattr(error, "format_message", None))
        and type(error).__name__ != "NoArgsIsHelpError"
    )


def _usage_error(error: Exception) -> int:
    """The usage error as one line naming the command and where its help is (click's form is a box)."""
    from rich.markup import escape

    context = getattr(error, "ctx", None)
    command = escape(getattr(context, "command_path", None) or "qmcp")
    message = escape(error.format_message().rstrip("."))  # type: ignore[attr-defined]  # see _is_usage_error
    stderr().print(f"[bold red]error:[/] {command}: {message} (see {command} --help)")
    return EXIT_USAGE


def _flags_take_no_value() -> None:
    """Show no `<bool>` type after flags in help (typer ≥ 0.24 shows one): a flag takes no value, and
    `--wait <bool>` reads as if it did. Only the `qmcp` command's help changes: the CLI owns its process."""
    from typer.core import TyperOption

    show_type = TyperOption.display_type_rich
    if getattr(show_type, "_qmcp", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag and not self.count and self.metavar is None:
            return None
        return show_type(self, ctx)

    display_type_rich._qmcp = True  # type: ignore[attr-defined]  # a marker so a second import patches nothing
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]  # typer has no hook for this


_flags_take_no_value()

_RUN_HELP = "Run a topology: short for `qmcp agents topologies run`." + "".join(
    (run_topology.__doc__ or "").partition("\n\n")[1:]
)

app = typer.Typer(
    cls=_QmcpGroup,
    name="qmcp",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(agents_app, name="agents")
app.add_typer(topologies_app, name="topologies", help="Same as `qmcp agents topologies`.")
app.add_typer(executions_app, name="executions")
app.add_typer(trust_app, name="trust")
app.add_typer(untrust_app, name="untrust")
app.add_typer(db_app, name="db")
app.add_typer(schema_app, name="schema")
app.add_typer(eval_app, name="eval")
app.command("init")(init)
app.command("apply")(apply)
app.command("run", help=_RUN_HELP)(run_topology)
app.command("demo")(demo)
app.command("serve")(serve)
app.command("mcp")(mcp_stdio)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"qmcp {version('qmcp')}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="Database URL or SQLite file \\[default: $QMCP_DATABASE_URL, else ./agent.db]",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="MODEL",
            help="Run every agent on MODEL, e.g. test, local:smollm2, openai:gpt-4.1, recorded:run.json",
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="table for people, json for scripts")
    ] = OutputFormat.TABLE,
    verbose: Annotated[
        bool | None,
        typer.Option(
            "--verbose/--quiet",
            "-v/-q",
            help="--verbose: tracebacks and run logs; --quiet: no progress display",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Run teams of LLM agents in topologies, with durable, resumable steps.

    Start with [bold]qmcp demo[/bold]: it runs a small team on the embedded model, no API key needed.
    Your own topologies, mixins and runners: name their modules in QMCP_IMPORTS (comma-separated).
    """
    if os.environ.get("QMCP_IMPORTS", "").strip():  # else `--help` stays free of the framework
        from qmcp.agentframework.registry import import_plugins

        import_plugins()  # the user's @topology, @mixin and @runner classes, registered models
    ctx.obj = CliState(
        db=db, model=model, output_format=output_format, verbose=verbose is True, quiet=verbose is False
    )
