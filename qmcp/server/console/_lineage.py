"""What the console shows of an execution's lineage: the execution it was forked from and where, the
forks made of it, and how each of its steps came to be (run here, inherited, or inherited and edited
by a person).

The steps a fork inherits are the store's rule (`fork_steps`: the completed steps that started before
the fork point, in the order they started), read here rather than restated, so the form offers exactly
the replies a fork may edit (`NotFoundError` for a step the execution did not record).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...agentframework.errors import NotFoundError
from ...agentframework.models import Execution, ExecutionStep
from ...agentframework.store import Database, fork_steps
from ...app import Lineage, lineage

__all__ = ["editable_steps", "family", "step_mark"]


async def family(db: Database, execution: Execution) -> Lineage | None:
    """The execution's lineage; None when one of its ancestors is no longer stored (a database
    without foreign keys lets a parent go): the page then names the parent without a link."""
    try:
        return await lineage(db, execution.id)
    except NotFoundError:
        return None


def step_mark(step: ExecutionStep) -> str | None:
    """`edited` for an inherited step whose reply a person replaced, `inherited` for another inherited
    step, None for a step this execution ran."""
    if not step.inherited:
        return None
    return "edited" if (step.output or {}).get("edited") else "inherited"


def editable_steps(execution: Execution, steps: Sequence[ExecutionStep], at: str) -> list[ExecutionStep]:
    """The steps whose reply a fork of `execution` at `at` may set: the ones it inherits, then `at`."""
    by_key = {step.key: step for step in steps}
    return [by_key[step.key] for step in fork_steps(steps, at, execution.id)] + [by_key[at]]
