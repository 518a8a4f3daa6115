"""Evals (`qmcp eval`): read only. A remote caller lists evals, reads one's report and pages through its
matrix of samples × variants; starting an eval is the operator's (`qmcp eval` on the server's machine:
its dataset and `python:` scorers are files and code there), so no route starts or resumes one."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...app import EvalList, EvalMatrix, eval_matrix, list_evals
from ...eval import EvalReport
from ..eval_reports import EvalReports
from ..problems import problems
from ._deps import Db, FiniteJsonRoute, Limit, Offset

router = APIRouter(tags=["evals"], route_class=FiniteJsonRoute)


@router.get("/v1/evals", responses=problems(422, 503))
async def get_evals(db: Db, limit: Limit = 50, offset: Offset = 0) -> EvalList:
    """Evals, newest first: their variants and how many cells each recorded."""
    return await list_evals(db, limit=limit, offset=offset)


@router.get("/v1/evals/{eval_id}", responses=problems(404, 503))
async def get_eval(eval_id: str, request: Request, db: Db) -> EvalReport:
    """The eval's report as its rows stand now (a running eval's is partial): per variant accuracy
    with a 95 % interval, tokens, cost, latency p50/p95 and failures; each pair of variants compared on
    the same samples. Its cells, page by page: `/v1/evals/{eval_id}/samples`."""
    reports: EvalReports = request.app.state.eval_reports
    return await reports.report(db, eval_id)


@router.get("/v1/evals/{eval_id}/samples", responses=problems(404, 422, 503))
async def get_eval_samples(eval_id: str, db: Db, limit: Limit = 100, offset: Offset = 0) -> EvalMatrix:
    """A page of the eval's samples, each with its cells (score, explanation, execution and its status)
    in the order of `columns`."""
    return await eval_matrix(db, eval_id, limit=limit, offset=offset)
