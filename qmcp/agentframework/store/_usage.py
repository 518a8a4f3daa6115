"""An execution's totals are the sum of its usage rows: what every step attempt paid, displaced ones too.

The step store appends a `step_usage` row with every step row it writes, in the same transaction,
and appends it even when the fence refuses the step row (its owner lost the execution: the row is
`displaced`). The execution's `requests`, tokens and cost are then brought to the sum of its rows
by the writes that end or hand over an attempt (claim, finish, cancel) and, after a displaced write,
by the step store itself: a killed attempt's calls are counted by the claim that resumes it, a
displaced owner's by its own write even when the new owner has finished already.

Every count sets the totals to the whole sum (never adds), so counting twice changes nothing. On
PostgreSQL the execution's row is locked first (`FOR UPDATE`), in a statement of its own: the sum
is then read by a later statement, whose snapshot holds every usage row committed before the lock
was granted (a step write holds `FOR SHARE` on the row until its usage rows are committed).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sqlalchemy import Select, func, literal_column, select
from sqlmodel import col

from ..models import Execution, StepUsage, Usage

__all__ = ["TOTALS", "lock_execution", "summed_totals", "totals_of"]

TOTALS = ("requests", "input_tokens", "output_tokens", "cost_usd")
"""The execution's columns that hold the sum of its usage rows, in `Usage` order."""


@functools.cache
def summed_totals() -> Mapping[str, Any]:
    """The values of an `UPDATE executions` that set its totals to the sum of its usage rows.

    Built once: building these four subqueries cost 0.7 ms, paid by every run's end (and its step
    store) when they were made per call; SQLAlchemy expressions are immutable, so they are shared."""
    return MappingProxyType(
        {
            name: select(func.coalesce(func.sum(getattr(StepUsage, name)), literal_column("0")))
            .where(col(StepUsage.execution_id) == col(Execution.id))
            .scalar_subquery()
            for name in TOTALS
        }
    )


def lock_execution(execution_id: uuid.UUID) -> Select[Any]:
    """Lock an execution's row (PostgreSQL) before summing its usage: see the module's docstring."""
    return select(col(Execution.id)).where(col(Execution.id) == execution_id).with_for_update()


def totals_of(row: Any) -> Usage:
    """The `Usage` of a row returning `TOTALS`."""
    return Usage(int(row[0]), int(row[1]), int(row[2]), float(row[3]))
