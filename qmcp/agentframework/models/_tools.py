"""`ToolInvocation`: one call of a tool through the QMCP server, kept for audit (`/v1/invocations`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlmodel import JSON, Field

from ._agent import utcnow
from ._base import TableModel

__all__ = ["InvocationStatus", "ToolInvocation"]


class InvocationStatus(StrEnum):
    PENDING = "pending"
    SUCCESS = "success"
    FAILED = "failed"


class ToolInvocation(TableModel, table=True):
    __tablename__ = "tool_invocations"

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=64)
    tool_name: str = Field(index=True, max_length=200)
    input_params: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    result: Any | None = Field(default=None, sa_type=JSON)
    error: str | None = None
    status: str = Field(default=InvocationStatus.PENDING, index=True, max_length=32)
    duration_ms: int | None = None
    created_at: datetime = Field(default_factory=utcnow, index=True)
    completed_at: datetime | None = None
    correlation_id: str | None = Field(default=None, index=True, max_length=200)
