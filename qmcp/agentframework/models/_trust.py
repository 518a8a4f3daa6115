"""`TrustRecord`: who allowed which exact agent definition to run the code it names, and when.

An agent's definition can name code that runs on this machine (tools, MCP server commands, output
models, endpoints and keys). A stored definition may only run that code once someone trusted it:
`qmcp apply --trust` (or its confirmation), `qmcp trust ...`, or a Python program handing the
definition to a runner. The record keeps the SHA-256 of the definition's canonical content, so an
edited definition is a new one and needs trust again.

A record is revoked, never deleted: `qmcp untrust` revokes an agent's records, and so does every
write that changes (or creates, or deletes) the agent's stored definition. A digest alone would
match again when a client puts back content trusted before a change; a revoked record matches
nothing, so that content waits for trust like any other. Trusting it again revives the record.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import JSON, Field, UniqueConstraint

from ._agent import utcnow
from ._base import TableModel

__all__ = ["TrustRecord"]


class TrustRecord(TableModel, table=True):
    __tablename__ = "trust_records"
    __table_args__ = (UniqueConstraint("agent_name", "sha256"),)

    id: int | None = Field(default=None, primary_key=True)
    agent_name: str = Field(index=True, max_length=64)
    sha256: str = Field(max_length=64)
    items: list[str] = Field(default_factory=list, sa_type=JSON)
    """What the definition runs, as it was shown to the person who trusted it."""
    trusted_by: str = Field(max_length=200)
    """The operating-system user who trusted it."""
    via: str = Field(max_length=100)
    """How: `qmcp apply --trust`, `qmcp apply` (confirmed), `qmcp trust`, or `python` (a runner given objects)."""
    trusted_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    """When the trust ended: set, the record matches nothing (`qmcp untrust`, or a change of the definition)."""
    revoked_why: str | None = Field(default=None, max_length=200)
    """Why: `untrusted by USER`, or `definition changed`."""
