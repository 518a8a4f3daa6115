"""Eval reports for the console and the API, kept once an eval has stopped.

A report is computed from every row of its eval, and its paired bootstraps are pure Python: about half a
second for 1,000 samples × 3 variants on this machine, on the server's event loop. An eval that has
stopped (`completed`, `stopped (budget)`, `interrupted`) does not change until it runs again, which
changes its status (and its `completed_at` when it ends again): its report is kept under those, and a
reload of its page reads the kept one. A running eval's report is computed on each request.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from ..agentframework.store import Database
from ..app import get_eval_run
from ..eval import EvalReport, eval_report

__all__ = ["EvalReports"]


class EvalReports:
    """The reports of the last `size` stopped evals asked for."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[str, str, datetime | None], EvalReport] = OrderedDict()

    async def report(self, db: Database, eval_id: str) -> EvalReport:
        run = await get_eval_run(db, eval_id)
        if run.status == "running":
            return await eval_report(db, run.id)
        key = (run.id, run.status, run.completed_at)
        kept = self._kept.get(key)
        if kept is None:
            kept = self._kept[key] = await eval_report(db, run.id)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(key)
        return kept
