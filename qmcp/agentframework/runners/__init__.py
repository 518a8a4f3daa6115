"""Runners: the same durable execution of a topology, scheduled in-process, concurrently or on Metaflow."""

from ._async import AsyncRunner
from ._base import BaseRunner, RunnerRegistry, runner
from ._config import RunConfig, RunResult
from ._local import LocalRunner
from ._metaflow import MetaflowRunner, export_flow, flow_command

__all__ = [
    "AsyncRunner",
    "BaseRunner",
    "LocalRunner",
    "MetaflowRunner",
    "RunConfig",
    "RunResult",
    "RunnerRegistry",
    "export_flow",
    "flow_command",
    "runner",
]
