"""Runners: the same durable execution of a topology, scheduled in-process, concurrently or on Metaflow."""

from ._async import AsyncRunner
from ._base import BaseRunner, RunnerRegistry, runner
from ._config import RunConfig, RunResult
from ._local import LocalRunner

__all__ = [
    "AsyncRunner",
    "BaseRunner",
    "LocalRunner",
    "RunConfig",
    "RunResult",
    "RunnerRegistry",
    "runner",
]
