"""`qmcp executions prune`: delete old finished executions and give the space back (`qmcp.app`'s retention)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ._output import print_json, print_table, stdout
from ._state import FormatOption, cli_state, open_database, run_async

if TYPE_CHECKING:
    from qmcp.app import PruneReport

__all__ = ["prune"]

_LABELS = {"older_than": "--older-than", "statuses": "--status", "keep_last": "--keep-last"}


def prune(
    ctx: typer.Context,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Executions finished (else created) longer ago than this: 45s, 90m, 12h, 30d, 2w.",
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS,...",
            help="Only these statuses, among completed, failed, cancelled, interrupted "
            "\\[default: completed,failed,cancelled].",
        ),
    ] = None,
    topology: Annotated[
        str | None, typer.Option("--topology", metavar="NAME", help="Only runs of this topology.")
    ] = None,
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", metavar="N", min=0, help="Keep each topology's N newest, however old."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    vacuum: Annotated[
        bool,
        typer.Option(
            "--vacuum/--no-vacuum",
            help="SQLite: rewrite the file afterwards (VACUUM) to give the space back; --no-vacuum leaves "
            "the freed pages for new rows (an INCREMENTAL file gives them back either way, cheaply).",
        ),
    ] = True,
    output_format: FormatOption = None,
) -> None:
    """Delete old finished executions with their steps, usage rows and human requests, then report rows
    and bytes reclaimed. Running, paused and pending executions, and the parents of forks that stay,
    are never deleted. Evaluation scores stay, without their execution."""
    from pydantic import ValidationError

    from qmcp.agentframework.errors import UserInputError
    from qmcp.agentframework.models import describe_validation_error
    from qmcp.app import Caller, Door, PruneRequest, prune_executions

    state = cli_state(ctx)
    statuses = None if status is None else [s for s in status.split(",") if s.strip()]
    try:
        request = PruneRequest(
            older_than=older_than,
            statuses=statuses,
            topology=topology,
            keep_last=keep_last,
            dry_run=dry_run,
            vacuum=vacuum,
        )
    except ValidationError as error:
        raise UserInputError(describe_validation_error(error)) from None
    request.filter(_LABELS)  # a wrong value is one line naming the option, before the database is opened

    async def work() -> PruneReport:
        async with open_database(state) as db:
            return await prune_executions(db, request, Caller.operator(Door.CLI))

    report = run_async(work())
    if state.json_output(output_format):
        print_json(report.model_dump(mode="json"))
        return
    verb = "would delete" if report.dry_run else "deleted"
    print_table(
        f"prune ({'dry run' if report.dry_run else report.database})",
        ["Rows", verb.capitalize()],
        [
            ("executions", report.executions),
            ("steps", report.steps),
            ("usage rows", report.usage_rows),
            ("human requests", report.human_requests),
            ("human responses", report.human_responses),
            ("eval scores kept, detached", report.eval_scores_detached),
        ],
    )
    stdout().print(report.summary, markup=False, highlight=False, soft_wrap=True)
