"""The console's eval pages: the list of evals, and one eval's matrix of samples × variants (× repeats),
each cell coloured by its score, saying it in text too, and opening the execution that answered it.

The matrix is read a page of samples at a time (`qmcp.app.eval_matrix`): an eval of a thousand samples
renders as pages of `MATRIX_PAGE` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ...agentframework.errors import QmcpError
from ...app import EvalCell, eval_matrix, format_cost, format_duration, list_evals
from ...eval import EvalReport
from ..eval_reports import EvalReports
from ._routes import PAGE_SIZE, _db, _error, _render

__all__ = ["MATRIX_PAGE", "CellView", "cell_view", "report_tables", "router"]

router = APIRouter(include_in_schema=False)

MATRIX_PAGE = 100
"""Samples per page of the matrix (a row holds a cell per variant and repeat)."""


@dataclass(frozen=True)
class CellView:
    """How one cell reads: its text, the colour class of its score, its link and the sentence a title
    and a screen reader give (the colour is never the only way the score is told)."""

    text: str
    tone: str
    href: str | None
    label: str


def cell_view(sample_id: str, cell: EvalCell, repeats: bool) -> CellView:
    where = f"sample {sample_id}, {cell.variant}" + (f" repeat {cell.repeat + 1}" if repeats else "")
    href = f"/executions/{cell.execution_id}" if cell.execution_id else None
    if not cell.scored:
        if cell.execution_id is None:
            return CellView("·", "missing", None, f"{where}: not run yet")
        tone = "running" if cell.status in ("pending", "running") else "missing"
        return CellView(
            "…" if tone == "running" else "·", tone, href, f"{where}: not scored yet ({cell.status})"
        )
    if cell.score is None:
        tone, text, said = "none", "–", f"no score ({cell.status or 'no execution'})"
    else:
        tone = "pass" if cell.score >= 1 else "fail" if cell.score <= 0 else "part"
        text = f"{cell.score:g}" if cell.score in (0, 1) else f"{cell.score:.2f}"
        said = f"score {cell.score:.2f}"
    why = f": {cell.explanation}" if cell.explanation else ""
    return CellView(text, tone, href, f"{where}: {said}{why}")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _points(value: float) -> str:
    return f"{value * 100:+.1f}"


def report_tables(report: EvalReport) -> dict[str, list[list[str]]]:
    """The report's two tables as the page shows them (the CLI's `qmcp eval show` reads the same):
    one row per variant, one per pair of variants."""
    variants = [
        [
            v.variant + (f" (one call to {v.agent})" if v.kind == "single-call" and v.agent else ""),
            str(v.n),
            _pct(v.accuracy),
            "–"
            if v.interval is None
            else f"{_pct(v.interval[0])} – {_pct(v.interval[1])} ({v.interval_method})",
            str(v.failures),
            f"{v.total_tokens:,}" + ("" if v.mean_tokens is None else f" ({v.mean_tokens:,.0f} a cell)"),
            format_cost(v.total_cost_usd),
            f"{format_duration(v.latency_p50_ms)} / {format_duration(v.latency_p95_ms)}",
            "n/a (no cost)" if v.accuracy_per_dollar is None else f"{v.accuracy_per_dollar:,.1f}",
        ]
        for v in report.variants
    ]
    pairs = [
        [
            f"{p.b} against {p.a}",
            str(p.n),
            "–" if p.difference is None else f"{_points(p.difference)} pts",
            "–" if p.interval is None else f"{_points(p.interval[0])} to {_points(p.interval[1])} pts",
            (p.test or "–") + (f" ({p.only_a} vs {p.only_b} discordant)" if p.only_a is not None else ""),
            "–" if p.p_value is None else f"{p.p_value:.3g}",
            "–" if p.cost_ratio is None else f"{p.cost_ratio:.2f}×",
        ]
        for p in report.pairs
    ]
    return {"variants": variants, "pairs": pairs}


@router.get("/evals")
async def evals_page(request: Request, page: int = 1) -> HTMLResponse:
    page = max(page, 1)
    try:
        found = await list_evals(_db(request), limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    except QmcpError as error:  # a page beyond what a database can count to
        return _error(request, error)
    return _render(
        request,
        "evals.html",
        evals=found.evals,
        total=found.total,
        page=page,
        pages=_pages(found.total, PAGE_SIZE),
    )


@router.get("/evals/{eval_id}")
async def eval_page(request: Request, eval_id: str, page: int = 1) -> HTMLResponse:
    page = max(page, 1)
    db = _db(request)
    try:
        reports: EvalReports = request.app.state.eval_reports
        report = await reports.report(db, eval_id)
        matrix = await eval_matrix(db, eval_id, limit=MATRIX_PAGE, offset=(page - 1) * MATRIX_PAGE)
    except QmcpError as error:
        return _error(request, error)
    repeats = any(column.repeat > 0 for column in matrix.columns)
    rows: list[tuple[str, list[CellView]]] = [
        (row.sample_id, [cell_view(row.sample_id, cell, repeats) for cell in row.cells])
        for row in matrix.rows
    ]
    values: dict[str, Any] = {
        "report": report,
        "tables": report_tables(report),
        "matrix": matrix,
        "rows": rows,
        "repeats": repeats,
        "page": page,
        "pages": _pages(matrix.total, MATRIX_PAGE),
    }
    return _render(request, "eval.html", **values)


def _pages(total: int, size: int) -> int:
    return max(1, -(-total // size))
