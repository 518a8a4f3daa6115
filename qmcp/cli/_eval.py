"""`qmcp eval ...`: compare topologies on a dataset (run, resume, show, list).

The command parses, calls `qmcp.eval`'s operations as the operator, and renders the report; the
engine, the scores and the statistics live in `qmcp.eval`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from ._output import (
    EXIT_INTERRUPTED,
    format_cost,
    format_duration,
    format_when,
    print_json,
    print_table,
    stderr,
    stdout,
)
from ._progress import DisplayMode
from ._run import run_config
from ._state import CliState, FormatOption, cli_state, open_database, run_async

if TYPE_CHECKING:
    from rich.live import Live

    from qmcp.eval import EvalOutcome, EvalProgress, EvalReport

__all__ = ["eval_app"]

eval_app = typer.Typer(
    invoke_without_command=True,
    help="Evaluate topologies on a dataset: accuracy, tokens, cost and latency, durable and resumable.",
)


def _columns(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    mapping: dict[str, str] = {}
    for item in text.split(","):
        field, sep, column = item.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise typer.BadParameter(f"{item!r}: give FIELD=COLUMN pairs, e.g. input=question,target=answer")
        mapping[field.strip()] = column.strip()
    return mapping


@eval_app.callback()
def evaluate(
    ctx: typer.Context,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="JSONL or CSV: input, target, optional id and metadata.")
    ] = None,
    topology: Annotated[
        list[str] | None, typer.Option("--topology", "-t", help="A stored topology to evaluate (repeatable).")
    ] = None,
    single_call: Annotated[
        list[str] | None,
        typer.Option(
            "--single-call",
            metavar="AGENT",
            help="Add the baseline of one call to AGENT (stored as topology single-call-AGENT; repeatable).",
        ),
    ] = None,
    scorer: Annotated[
        str,
        typer.Option(
            "--scorer",
            help="exact, includes, regex:PAT, number[:TOL], choice, json:PATH, judge:AGENT, python:MODULE:FUNC",
        ),
    ] = "exact",
    samples: Annotated[int | None, typer.Option("--samples", min=1, help="Only the first N samples.")] = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, max=100, help="Run each cell K times.")] = 1,
    model: Annotated[
        str | None, typer.Option("--model", metavar="MODEL", help="Run every agent on MODEL, e.g. test.")
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option("--max-cost", metavar="USD", min=0, help="Start no new cell once the eval spent USD."),
    ] = None,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", min=1, help="Cells and model calls in flight at once, in all.")
    ] = 8,
    budget_per_sample: Annotated[
        str | None,
        typer.Option(
            "--budget-per-sample",
            metavar="BUDGET",
            help="Each cell's budget: tokens (5000) or dollars (0.01usd), to compare at equal spend.",
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option("--columns", metavar="MAP", help="Column names, e.g. input=question,target=answer."),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip samples that fail to parse (each is reported).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the report and every sample row as JSON here.")
    ] = None,
    output_format: FormatOption = None,
) -> None:
    """Run every sample of a dataset through each topology (and baseline), score the answers, report.

    Each sample × variant × repeat is an ordinary execution (qmcp executions list); an interrupted
    eval continues with `qmcp eval resume EVAL_ID` and pays for nothing twice.
    """
    if ctx.invoked_subcommand is not None:
        return
    if dataset is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()
    from qmcp.eval import EvalRequest

    state = cli_state(ctx)
    request = EvalRequest(
        dataset=str(dataset),
        columns=_columns(columns),
        skip_bad=skip_bad,
        topologies=list(topology or []),
        single_call=list(single_call or []),
        scorer=scorer,
        samples=samples,
        repeat=repeat,
        model=model or state.model,
        max_cost_usd=max_cost,
        max_concurrent=max_concurrent,
        budget_per_sample=budget_per_sample,
    )
    _run(state, request, None, out=out, json_output=state.json_output(output_format))


@eval_app.command("resume")
def resume(
    ctx: typer.Context,
    eval_id: Annotated[str, typer.Argument(help="The eval to continue (qmcp eval list).")],
    max_cost: Annotated[
        float | None,
        typer.Option("--max-cost", metavar="USD", min=0, help="A new spending limit for the whole eval."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the report and every row as JSON.")] = None,
    output_format: FormatOption = None,
) -> None:
    """Continue an eval: scored cells are kept, unfinished executions resume (paid steps replay free)."""
    state = cli_state(ctx)
    _run(state, None, eval_id, out=out, json_output=state.json_output(output_format), max_cost=max_cost)


@eval_app.command("show")
def show(
    ctx: typer.Context,
    eval_id: Annotated[str, typer.Argument(help="The eval (qmcp eval list).")],
    rows: Annotated[bool, typer.Option("--rows", help="With every sample row (JSON).")] = False,
    output_format: FormatOption = None,
) -> None:
    """Print an eval's report again (a running eval's so far)."""
    from qmcp.eval import eval_report

    state = cli_state(ctx)

    async def fetch() -> EvalReport:
        async with open_database(state, read_only=True) as db:
            return await eval_report(db, eval_id, rows=rows)

    report = run_async(fetch())
    if state.json_output(output_format):
        print_json(report.model_dump(mode="json", exclude=None if rows else {"rows"}))
        return
    _print_report(report)


@eval_app.command("list")
def list_evals(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 20,
    output_format: FormatOption = None,
) -> None:
    """List evals, newest first."""
    from qmcp.eval import list_evals as query

    state = cli_state(ctx)

    async def fetch() -> list[Any]:
        async with open_database(state, read_only=True) as db:
            return await query(db, limit=limit)

    runs = run_async(fetch())
    summaries = [_summary(run) for run in runs]
    if state.json_output(output_format):
        print_json(summaries)
        return
    print_table(
        None,
        ["Eval", "Status", "Started", "Samples", "Variants", "Scorer"],
        [
            [
                s["id"],
                s["status"],
                format_when(s["created_at"]),
                s["samples"],
                ", ".join(s["variants"]),
                s["scorer"],
            ]
            for s in summaries
        ],
        empty="no evals yet; start one with: qmcp eval --dataset data.jsonl --topology NAME",
    )


def _summary(run: Any) -> dict[str, Any]:
    spec = run.spec or {}
    return {
        "id": run.id,
        "status": run.status,
        "created_at": run.created_at,
        "completed_at": run.completed_at,
        "samples": len(spec.get("samples") or []),
        "variants": [v.get("name") for v in spec.get("variants") or []],
        "scorer": spec.get("scorer"),
        "repeat": spec.get("repeat", 1),
    }


# -- running ------------------------------------------------------------------------------------


class _Display:
    """Cells done of all, failures, spend: a live line on a terminal, a line every few seconds on
    stderr otherwise, nothing for --quiet or --format json."""

    def __init__(self, mode: DisplayMode) -> None:
        self.mode = mode
        self.progress: EvalProgress | None = None
        self._live: Live | None = None
        self._printed = 0.0
        self._started = time.monotonic()

    def __enter__(self) -> _Display:
        if self.mode is DisplayMode.LIVE:
            from rich.live import Live

            self._live = Live(self._line(), console=stderr(), refresh_per_second=4, transient=True)
            self._live.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._live is not None:
            self._live.stop()
        elif self.mode is DisplayMode.PLAIN and self.progress is not None:
            stderr().print(self._line())

    def __call__(self, progress: EvalProgress) -> None:
        self.progress = progress
        if self._live is not None:
            self._live.update(self._line())
        elif self.mode is DisplayMode.PLAIN and time.monotonic() - self._printed >= 5:
            self._printed = time.monotonic()
            stderr().print(self._line())

    def _line(self) -> str:
        p = self.progress
        if p is None:
            return "eval: starting"
        return (
            f"eval {p.eval_id}: {p.done}/{p.total} cells · {p.failed} failed · {format_cost(p.spend_usd)} · "
            f"{p.tokens:,} tokens · {format_duration(int((time.monotonic() - self._started) * 1000))}"
        )


def _run(
    state: CliState,
    request: Any,
    eval_id: str | None,
    *,
    out: Path | None,
    json_output: bool,
    max_cost: float | None = None,
) -> None:
    from qmcp.app import Caller, Door
    from qmcp.eval import eval_report, resume_eval, start_eval

    display = _Display(DisplayMode.choose(json_output=json_output, quiet=state.quiet))
    config = run_config(state)
    known: list[str] = [eval_id] if eval_id else []

    async def go() -> tuple[EvalOutcome, EvalReport]:
        async with open_database(state) as db:
            if request is not None:
                outcome = await start_eval(
                    db,
                    request,
                    Caller.operator(Door.CLI),
                    runner_config=config,
                    on_progress=display,
                    on_created=known.append,
                )
            else:
                outcome = await resume_eval(
                    db,
                    known[0],
                    Caller.operator(Door.CLI),
                    max_cost_usd=max_cost,
                    runner_config=config,
                    on_progress=display,
                )
            return outcome, await eval_report(db, outcome.eval_id, rows=out is not None)

    try:
        with display:
            outcome, report = run_async(go())
    except KeyboardInterrupt:
        _interrupted(state, known[0] if known else None)
    if out is not None:
        out.write_text(report.model_dump_json(indent=2) + "\n")
    if json_output:
        print_json(report.model_dump(mode="json", exclude={"rows"}))
    else:
        _print_report(report)
        if out is not None:
            stdout().print(f"report and {len(report.rows or [])} rows written to {escape(str(out))}")
    if outcome.message:
        stderr().print(escape(outcome.message))


def _interrupted(state: CliState, eval_id: str | None) -> NoReturn:
    console = stderr()
    if eval_id is None:
        console.print("interrupted before the eval started; nothing to resume")
    else:
        console.print(f"interrupted: eval {eval_id} stopped, its finished cells and paid steps are kept")
        console.print(f"resume it with: {state.command('eval', 'resume', eval_id)}")
    raise typer.Exit(EXIT_INTERRUPTED)


# -- the report ---------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _print_report(report: EvalReport) -> None:
    console = stdout()
    head = (
        f"[bold]eval {escape(report.eval_id)}[/bold] · {escape(report.status)} · "
        f"{report.recorded}/{report.cells} cells · {report.samples} samples × {len(report.variants)} variants"
        + (f" × {report.repeat} repeats" if report.repeat > 1 else "")
        + f" · scorer {escape(report.scorer)} · spent {format_cost(report.spend_usd)}"
    )
    console.print(head, soft_wrap=True)
    if report.max_tokens_per_cell is not None:
        console.print(f"budget per cell: {report.max_tokens_per_cell:,} tokens", soft_wrap=True)
    if report.max_cost_per_cell is not None:
        console.print(f"budget per cell: {format_cost(report.max_cost_per_cell)}", soft_wrap=True)
    print_table(
        None,
        [
            "Variant",
            "n",
            "Accuracy",
            "95% interval",
            "Failures",
            "Tokens (mean)",
            "Tokens",
            "Cost",
            "Latency p50",
            "Latency p95",
            "Accuracy per $",
        ],
        [
            [
                v.variant,
                v.n,
                _pct(v.accuracy),
                "—"
                if v.interval is None
                else f"{_pct(v.interval[0])}–{_pct(v.interval[1])} ({v.interval_method})",
                v.failures,
                "—" if v.mean_tokens is None else f"{v.mean_tokens:,.0f}",
                f"{v.total_tokens:,}",
                format_cost(v.total_cost_usd),
                _ms(v.latency_p50_ms),
                _ms(v.latency_p95_ms),
                "n/a (no cost)" if v.accuracy_per_dollar is None else f"{v.accuracy_per_dollar:,.1f}",
            ]
            for v in report.variants
        ],
        empty="no cells recorded yet",
    )
    if report.pairs:
        print_table(
            "Pairwise (b against a, on the same samples)",
            ["a", "b", "n", "Difference (b − a)", "95% interval", "Test", "p-value", "Cost ratio b/a"],
            [
                [
                    p.a,
                    p.b,
                    p.n,
                    "—" if p.difference is None else f"{p.difference * 100:+.1f} pts",
                    "—"
                    if p.interval is None
                    else f"{p.interval[0] * 100:+.1f} to {p.interval[1] * 100:+.1f} pts",
                    (p.test or "—")
                    + (f" ({p.only_a} vs {p.only_b} discordant)" if p.only_a is not None else ""),
                    "—" if p.p_value is None else f"{p.p_value:.3g}",
                    "n/a (a cost nothing)" if p.cost_ratio is None else f"{p.cost_ratio:.2f}×",
                ]
                for p in report.pairs
            ],
        )
    if report.judge.executions:
        console.print(
            f"judge: {report.judge.executions} calls · {report.judge.tokens:,} tokens · "
            f"{format_cost(report.judge.cost_usd)} (not in the variants' cost)",
            soft_wrap=True,
        )
    if report.skipped:
        console.print(f"{len(report.skipped)} dataset lines skipped:", soft_wrap=True)
        for line in report.skipped[:10]:
            console.print(f"  {escape(line)}", soft_wrap=True)
    if report.message:
        console.print(escape(report.message), soft_wrap=True)


def _ms(value: float | None) -> str:
    return "—" if value is None else format_duration(int(value))
