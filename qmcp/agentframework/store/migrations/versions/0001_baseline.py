"""Baseline: the schema qmcp made with `create_all` before it had migrations.

A database made by that qmcp has some or all of these tables (older ones lacked the newer tables):
the tables it has are kept with their rows and checked for every column, the missing ones are
created. A table lacking a column predates even that schema and is refused.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from qmcp.agentframework.store import PreBaselineSchemaError

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}
_ROLES = (
    "GENERALIST", "PLANNER", "EXECUTOR", "RESEARCHER", "ANALYST", "WRITER", "SPECIALIST", "CRITIC",
    "REVIEWER", "CHECKER", "VALIDATOR", "SYNTHESIZER", "PROPONENT", "OPPONENT", "MEDIATOR", "JUDGE",
    "COMMANDER", "LIEUTENANT", "WORKER", "ROUTER",
)  # fmt: skip
_TOPOLOGY_TYPES = (
    "PIPELINE",
    "ENSEMBLE",
    "DEBATE",
    "CROSSCHECK",
    "CHAIN_OF_COMMAND",
    "DELEGATION",
    "COMPOUND",
)
_EXECUTION_STATUSES = ("PENDING", "RUNNING", "PAUSED", "COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED")


def _when(name: str, nullable: bool = False, index: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, index=index)


def _text(
    name: str, length: int | None = None, nullable: bool = False, index: bool = False
) -> sa.Column[Any]:
    return sa.Column(name, sa.String(length), nullable=nullable, index=index)


def _json(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.JSON(), nullable=nullable)


def _int(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.Integer(), nullable=nullable)


def _float(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.Float(), nullable=nullable)


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _schema() -> sa.MetaData:
    """The tables as that qmcp made them, in plain SQLAlchemy (not the models: they move on)."""
    meta = sa.MetaData(naming_convention=_NAMING)
    sa.Table(
        "agent_types", meta, _id(),
        _text("name", 64), _text("description", 10_000),
        sa.Column("role", sa.Enum(*_ROLES, name="agentrole"), nullable=False),
        _json("config"), _when("created_at"), _when("updated_at"),
        sa.Index("ix_agent_types_name", "name", unique=True),
    )  # fmt: skip
    sa.Table(
        "topologies", meta, _id(),
        _text("name", 64), _text("description", 10_000),
        sa.Column("topology_type", sa.Enum(*_TOPOLOGY_TYPES, name="topologytype"), nullable=False),
        _json("config"), _when("created_at"), _when("updated_at"),
        sa.Index("ix_topologies_name", "name", unique=True),
    )  # fmt: skip
    sa.Table(
        "topology_memberships", meta, _id(),
        sa.Column("topology_id", sa.Integer(), sa.ForeignKey("topologies.id"), nullable=False, index=True),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agent_types.id"), nullable=False, index=True),
        _text("slot_name", 64), _int("position"),
        sa.UniqueConstraint("topology_id", "slot_name"),
    )  # fmt: skip
    sa.Table(
        "executions", meta,
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("topology_id", sa.Integer(), sa.ForeignKey("topologies.id"), nullable=True, index=True),
        _text("topology_name", 64, index=True), _text("topology_type", 32),
        sa.Column("status", sa.Enum(*_EXECUTION_STATUSES, name="executionstatus"), nullable=False, index=True),
        _text("runner_type", 64), _text("origin", 32, index=True),
        _text("correlation_id", 200, nullable=True, index=True),
        _json("input_data"), _json("output_data", nullable=True), _text("error", nullable=True),
        _json("topology_snapshot"), _json("agents_snapshot"), _json("teams_snapshot"),
        _json("run_config"), _json("runner_options"), _text("external_run_id", 300, nullable=True),
        _text("owner_token", 100, nullable=True), _text("owner_host", 255, nullable=True),
        _int("owner_pid", nullable=True), _int("owner_pid_start", nullable=True),
        _when("lease_until", nullable=True), _when("heartbeat_at", nullable=True),
        _when("cancel_requested_at", nullable=True), _json("history"),
        _int("input_tokens"), _int("output_tokens"), _float("cost_usd"), _int("attempts"),
        _when("created_at"), _when("started_at"), _when("completed_at", nullable=True),
        _int("duration_ms", nullable=True),
    )  # fmt: skip
    sa.Table(
        "execution_steps", meta, _id(),
        sa.Column("execution_id", sa.Uuid(), sa.ForeignKey("executions.id"), nullable=False),
        _text("key", 1000), _text("slot", 64), _text("agent_name", 64), _text("model", 300),
        sa.Column("status", sa.Enum("COMPLETED", "FAILED", name="stepstatus"), nullable=False),
        _json("request"), _text("response", nullable=True), _json("output", nullable=True),
        _int("input_tokens"), _int("output_tokens"), _float("cost_usd"), _float("latency_ms"),
        _int("attempts"), _text("error", nullable=True), _when("started_at"),
        _when("completed_at", nullable=True),
        sa.UniqueConstraint("execution_id", "key"),
    )  # fmt: skip
    sa.Table(
        "tool_invocations", meta,
        _text("id", 64), _text("tool_name", 200, index=True), _json("input_params"),
        _json("result", nullable=True), _text("error", nullable=True), _text("status", 32, index=True),
        _int("duration_ms", nullable=True), _when("created_at", index=True),
        _when("completed_at", nullable=True), _text("correlation_id", 200, nullable=True, index=True),
        sa.PrimaryKeyConstraint("id"),
    )  # fmt: skip
    sa.Table(
        "trust_records", meta, _id(),
        _text("agent_name", 64, index=True), _text("sha256", 64), _json("items"),
        _text("trusted_by", 200), _text("via", 100), _when("trusted_at"),
        sa.UniqueConstraint("agent_name", "sha256"),
    )  # fmt: skip
    sa.Table(
        "agent_memories", meta, _id(),
        _text("agent_name", 64, index=True), _text("content"), _json("tags"), _float("importance"),
        _when("created_at"), _when("last_accessed_at"), _int("access_count"),
    )  # fmt: skip
    sa.Table(
        "human_requests", meta,
        _text("id", 300), _text("request_type", 32, index=True), _text("prompt"),
        _json("options", nullable=True), _json("context"), _float("timeout_seconds", nullable=True),
        _text("status", 32, index=True), _text("correlation_id", 200, nullable=True, index=True),
        sa.Column("execution_id", sa.Uuid(), sa.ForeignKey("executions.id"), nullable=True, index=True),
        _text("key", 1000, nullable=True), _when("created_at", index=True),
        _when("expires_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )  # fmt: skip
    sa.Table(
        "human_responses", meta,
        _text("id", 64),
        sa.Column("request_id", sa.String(300), sa.ForeignKey("human_requests.id"), nullable=False, unique=True),
        _text("response"), _text("responded_by", 200, nullable=True), _json("response_metadata"),
        _when("created_at", index=True),
        sa.PrimaryKeyConstraint("id"),
    )  # fmt: skip
    return meta


def upgrade() -> None:
    bind = op.get_bind()
    schema = _schema()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    missing_columns = [
        f"{table.name}.{column.name}"
        for table in schema.sorted_tables
        if table.name in present
        for column in table.columns
        if column.name not in {c["name"] for c in inspector.get_columns(table.name)}
    ]
    if missing_columns:
        raise PreBaselineSchemaError(missing_columns)
    schema.create_all(
        bind, tables=[t for t in schema.sorted_tables if t.name not in present], checkfirst=True
    )


def downgrade() -> None:
    _schema().drop_all(op.get_bind())
