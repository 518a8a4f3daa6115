"""Runners: the same durable execution of a topology, scheduled in-process, concurrently or on Metaflow."""

from ._async import AsyncRunner
from ._base import BaseRunner, RunnerRegistry, runner
from ._config import OWNED_PROCESS_FREEZE, RateLimitConfig, RunConfig, RunResult
from ._local import LocalRunner
from ._metaflow import MetaflowRunner, export_flow, flow_command
from ._team import Team, collect_teams, prepare_team
from ._trust import (
    Untrusted,
    definition_digest,
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
    "AsyncRunner",
    "BaseRunner",
    "LocalRunner",
    "MetaflowRunner",
    "RateLimitConfig",
    "RunConfig",
    "RunResult",
    "RunnerRegistry",
    "Team",
    "Untrusted",
    "collect_teams",
    "definition_digest",
    "executable_items",
    "export_flow",
    "flow_command",
    "prepare_team",
    "require_trusted",
    "require_trusted_execution",
    "runner",
    "snapshot_agents",
    "trust",
    "trusted_by",
    "untrusted",
]
