"""qmcp: durable teams of LLM agents in topologies, run in-process, concurrently or on Metaflow.

`from qmcp import AsyncRunner, AgentType, Topology, ...`: the names a program needs, from the
layers that define them (`qmcp.agentframework.{models,llm,store,mixins,topologies,runners}`;
the command line is `qmcp.cli`). They are imported on first use, so `import qmcp` itself loads
nothing heavy, and the command line starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agentframework.errors import QmcpError, RunError, UserInputError
    from .agentframework.llm import register_model
    from .agentframework.mixins import BaseMixin, mixin
    from .agentframework.models import (
        AgentConfig,
        AgentRole,
        AgentType,
        ChainOfCommandConfig,
        CompoundConfig,
        CrossCheckConfig,
        DebateConfig,
        DelegationConfig,
        EnsembleConfig,
        Execution,
        ExecutionStatus,
        ModelConfig,
        Models,
        PipelineConfig,
        Topology,
        TopologyType,
        Usage,
    )
    from .agentframework.runners import (
        AsyncRunner,
        BaseRunner,
        LocalRunner,
        MetaflowRunner,
        RunConfig,
        RunResult,
        runner,
    )
    from .agentframework.store import Database, close_engines
    from .agentframework.topologies import BaseTopology, StepContext, topology

    __version__: str

_EXPORTS: dict[str, str] = {
    # Running a team
    "AsyncRunner": "runners",
    "LocalRunner": "runners",
    "MetaflowRunner": "runners",
    "RunConfig": "runners",
    "RunResult": "runners",
    "Usage": "models",
    # Defining a team
    "AgentConfig": "models",
    "AgentRole": "models",
    "AgentType": "models",
    "Models": "models",
    "ModelConfig": "models",
    "Topology": "models",
    "TopologyType": "models",
    "PipelineConfig": "models",
    "EnsembleConfig": "models",
    "DebateConfig": "models",
    "CrossCheckConfig": "models",
    "ChainOfCommandConfig": "models",
    "DelegationConfig": "models",
    "CompoundConfig": "models",
    # What runs left behind
    "Database": "store",
    "Execution": "models",
    "ExecutionStatus": "models",
    "close_engines": "store",
    # Extending qmcp
    "BaseTopology": "topologies",
    "StepContext": "topologies",
    "topology": "topologies",
    "BaseMixin": "mixins",
    "mixin": "mixins",
    "BaseRunner": "runners",
    "runner": "runners",
    "register_model": "llm",
    # Errors
    "QmcpError": "errors",
    "UserInputError": "errors",
    "RunError": "errors",
}

__all__ = [
    "AgentConfig",
    "AgentRole",
    "AgentType",
    "AsyncRunner",
    "BaseMixin",
    "BaseRunner",
    "BaseTopology",
    "ChainOfCommandConfig",
    "CompoundConfig",
    "CrossCheckConfig",
    "Database",
    "DebateConfig",
    "DelegationConfig",
    "EnsembleConfig",
    "Execution",
    "ExecutionStatus",
    "LocalRunner",
    "MetaflowRunner",
    "ModelConfig",
    "Models",
    "PipelineConfig",
    "QmcpError",
    "RunConfig",
    "RunError",
    "RunResult",
    "StepContext",
    "Topology",
    "TopologyType",
    "Usage",
    "UserInputError",
    "__version__",
    "close_engines",
    "mixin",
    "register_model",
    "runner",
    "topology",
]


if not TYPE_CHECKING:  # mypy reads the imports above: a name not among them stays an error

    def __getattr__(name: str) -> Any:
        if name == "__version__":
            value: Any = _version()
        elif (layer := _EXPORTS.get(name)) is not None:
            value = getattr(importlib.import_module(f"qmcp.agentframework.{layer}"), name)
        else:
            raise AttributeError(f"module 'qmcp' has no attribute {name!r}")
        globals()[name] = value  # the next access is a plain lookup
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _version() -> str:
    """Read from the installed metadata on first use: the lookup costs tens of milliseconds, which
    `qmcp --help` would pay on every start."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qmcp")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"
