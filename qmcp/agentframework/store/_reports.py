"""What was spent: tokens and cost summed by model, topology or agent, from the step rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import func
from sqlmodel import col, select

from ..errors import UserInputError
from ..models import Execution, ExecutionStep

if TYPE_CHECKING:
    from ._database import Database

__all__ = ["COST_GROUPS", "CostLine", "CostReport", "cost_report"]

CostGroup = Literal["model", "topology", "agent"]
COST_GROUPS: tuple[CostGroup, ...] = ("model", "topology", "agent")


@dataclass(frozen=True)
class CostLine:
    """One group's spend: how many executions and steps, their tokens and their cost."""

    group: str
    executions: int
    steps: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class CostReport:
    by: CostGroup
    since: datetime | None
    lines: list[CostLine]
    total: CostLine

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since.isoformat() if self.since else None,
            "lines": [asdict(line) for line in self.lines],
            "total": asdict(self.total),
        }


async def cost_report(db: Database, *, since: datetime | None = None, by: CostGroup = "model") -> CostReport:
    """Tokens and cost of the steps started since `since`, by model, topology or agent, most expensive first.

    Each step counts once, with what its recorded attempt used: a failed step that a resume ran
    again counts as its new row. The executions' own totals (`executions list`) count every paid call.
    """
    if by not in COST_GROUPS:
        raise UserInputError(f"cannot group costs by {by!r}; choose one of: {', '.join(COST_GROUPS)}")
    group = {
        "model": col(ExecutionStep.model),
        "agent": col(ExecutionStep.agent_name),
        "topology": col(Execution.topology_name),
    }[by]
    query = (
        select(  # type: ignore[call-overload]  # six columns: more than select()'s typed overloads take
            group,
            func.count(func.distinct(ExecutionStep.execution_id)),
            func.count(),
            func.coalesce(func.sum(ExecutionStep.input_tokens), 0),
            func.coalesce(func.sum(ExecutionStep.output_tokens), 0),
            func.coalesce(func.sum(ExecutionStep.cost_usd), 0.0),
        )
        .join(Execution, col(Execution.id) == col(ExecutionStep.execution_id))
        .group_by(group)
    )
    totals = select(  # type: ignore[call-overload]  # five columns: more than the typed overloads take
        func.count(func.distinct(ExecutionStep.execution_id)),
        func.count(),
        func.coalesce(func.sum(ExecutionStep.input_tokens), 0),
        func.coalesce(func.sum(ExecutionStep.output_tokens), 0),
        func.coalesce(func.sum(ExecutionStep.cost_usd), 0.0),
    )
    if since is not None:
        query = query.where(col(ExecutionStep.started_at) >= since)
        totals = totals.where(col(ExecutionStep.started_at) >= since)
    async with db.sessions() as session:
        rows = (await session.exec(query)).all()
        total = (await session.exec(totals)).one()
    lines = sorted(
        (
            CostLine(str(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), float(row[5]))
            for row in rows
        ),
        key=lambda line: (-line.cost_usd, -(line.input_tokens + line.output_tokens), line.group),
    )
    return CostReport(
        by,
        since,
        lines,
        CostLine("total", int(total[0]), int(total[1]), int(total[2]), int(total[3]), float(total[4])),
    )
