"""Runners: the same durable execution of a topology, scheduled in-process, concurrently or on Metaflow."""

from ._async import AsyncRunner
from ._attempt import Attempt, Ending, run_result
from ._base import BaseRunner, RunnerRegistry, runner, start_execution
from ._config import (
    OWNED_PROCESS_FREEZE,
    PROCESS_FIELDS,
    RUN_OPTIONS,
    FieldScope,
    RateLimitConfig,
    RunConfig,
    RunResult,
    field_scope,
)
from ._fork import start_fork
from ._local import LocalRunner
from ._metaflow import MetaflowRunner, export_flow, flow_command
from ._team import Team, collect_teams, prepare_team
from ._trust import (
    SHORT_DIGEST,
    Untrusted,
    check_reviewed,
    definition_digest,
    effective_agent,
    executable_items,
    require_trusted,
    require_trusted_execution,
    snapshot_agents,
    trust,
    trusted_by,
    untrusted,
)

__all__ = [
    "OWNED_PROCESS_FREEZE",
    "PROCESS_FIELDS",
    "RUN_OPTIONS",
    "SHORT_DIGEST",
    "AsyncRunner",
    "Attempt",
    "BaseRunner",
    "Ending",
    "FieldScope",
    "LocalRunner",
    "MetaflowRunner",
    "RateLimitConfig",
    "RunConfig",
    "RunResult",
    "RunnerRegistry",
    "Team",
    "Untrusted",
    "check_reviewed",
    "collect_teams",
    "definition_digest",
    "effective_agent",
    "executable_items",
    "export_flow",
    "field_scope",
    "flow_command",
    "prepare_team",
    "require_trusted",
    "require_trusted_execution",
    "run_result",
    "runner",
    "snapshot_agents",
    "start_execution",
    "start_fork",
    "trust",
    "trusted_by",
    "untrusted",
]
