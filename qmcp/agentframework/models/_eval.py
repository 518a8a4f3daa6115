"""`qmcp eval` runs: `EvalRun`, one row per evaluation, and `EvalScore`, one row per sample × variant ×
repeat. Each cell is an ordinary execution (`Execution.eval_id`), so it is stored, resumed and listed
like any run; these rows hold what only the evaluation knows: its dataset and options, and the scores.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlmodel import JSON, Field, UniqueConstraint

from ._agent import utcnow
from ._base import TableModel

__all__ = ["EvalRun", "EvalScore"]


class EvalRun(TableModel, table=True):
    __tablename__ = "eval_runs"

    id: str = Field(primary_key=True, max_length=64)
    status: str = Field(default="running", max_length=32, index=True)
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """The dataset's samples and the options it ran with: what `qmcp eval resume` needs."""
    created_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None


class EvalScore(TableModel, table=True):
    """The score of one cell: a sample answered by one variant (a topology, or one call) once."""

    __tablename__ = "eval_scores"
    __table_args__ = (UniqueConstraint("eval_id", "sample_id", "variant", "repeat"),)

    id: int | None = Field(default=None, primary_key=True)
    eval_id: str = Field(foreign_key="eval_runs.id", max_length=64)
    sample_id: str = Field(max_length=200)
    variant: str = Field(max_length=200)
    repeat: int = 0
    execution_id: uuid.UUID | None = Field(default=None, foreign_key="executions.id", index=True)
    score: float | None = None
    """0..1; None when the cell's execution did not finish."""
    explanation: str | None = None
    scored_at: datetime = Field(default_factory=utcnow)
