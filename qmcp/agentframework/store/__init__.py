"""Persistence: engines (SQLite, PostgreSQL), the durable step store, execution ownership and the record queries."""

from ._database import MAX_OFFSET, Database, check_page
from ._engine import (
    SCHEMA_READY_VARIABLE,
    EngineCache,
    as_storage_error,
    close_engines,
    create_engine,
    engine_cache,
    ensure_schema,
    is_sqlite,
    migrate,
    schema_ready_variables,
    schema_revision,
    storage_errors,
)
from ._executions import (
    TRANSITIONS,
    Action,
    CancelOutcome,
    Clock,
    ExecutionService,
    Lease,
    Owner,
    OwnerState,
    SystemClock,
    allowed,
    attempt_started,
    observed,
    owner_state,
)
from ._forks import fork_steps
from ._memory import MemoryStore, Recollection
from ._migrate import HEAD as SCHEMA_HEAD
from ._migrate import VERSION_TABLE as SCHEMA_VERSION_TABLE
from ._migrate import PreBaselineSchemaError
from ._reports import COST_GROUPS, CostLine, CostReport
from ._retention import (
    DEFAULT_PRUNE_STATUSES,
    PRUNABLE_STATUSES,
    PruneFilter,
    PruneResult,
    prune_executions,
)
from ._steps import MemoryStepStore, SqlStepStore, StepRecord, StepStore
from ._trust import add_trust, revoke_trust, trust_history, trusted_digests

__all__ = [
    "COST_GROUPS",
    "DEFAULT_PRUNE_STATUSES",
    "MAX_OFFSET",
    "PRUNABLE_STATUSES",
    "SCHEMA_HEAD",
    "SCHEMA_READY_VARIABLE",
    "SCHEMA_VERSION_TABLE",
    "TRANSITIONS",
    "Action",
    "CancelOutcome",
    "Clock",
    "CostLine",
    "CostReport",
    "Database",
    "EngineCache",
    "ExecutionService",
    "Lease",
    "MemoryStepStore",
    "MemoryStore",
    "Owner",
    "OwnerState",
    "PreBaselineSchemaError",
    "PruneFilter",
    "PruneResult",
    "Recollection",
    "SqlStepStore",
    "StepRecord",
    "StepStore",
    "SystemClock",
    "add_trust",
    "allowed",
    "as_storage_error",
    "attempt_started",
    "check_page",
    "close_engines",
    "create_engine",
    "engine_cache",
    "ensure_schema",
    "fork_steps",
    "is_sqlite",
    "migrate",
    "observed",
    "owner_state",
    "prune_executions",
    "revoke_trust",
    "schema_ready_variables",
    "schema_revision",
    "storage_errors",
    "trust_history",
    "trusted_digests",
]
