"""`AgentMemory`: what an agent remembers, kept per agent name across executions."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import JSON, Field

from ._agent import utcnow
from ._base import TableModel

__all__ = ["AgentMemory"]


class AgentMemory(TableModel, table=True):
    """One remembered fact. Keyed by agent name (not id) so a redefined agent keeps its memory."""

    __tablename__ = "agent_memories"

    id: int | None = Field(default=None, primary_key=True)
    agent_name: str = Field(index=True, max_length=64)
    content: str
    tags: list[str] = Field(default_factory=list, sa_type=JSON)
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    created_at: datetime = Field(default_factory=utcnow)
    last_accessed_at: datetime = Field(default_factory=utcnow)
    access_count: int = 0
