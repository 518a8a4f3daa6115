"""Tables and schemas: agents, topologies, executions, steps, and the model registry.

The enums, `Usage` and the JSON checks load with the package; the model registry (`Models`) and the
validation helpers, which need pydantic, on first use; the tables (and `TableModel`'s SQLAlchemy
`metadata`) on first use too, so that code above which uses no table (the model layer, `llm`, and
what registers models) runs without SQLAlchemy and SQLModel: a Metaflow task or a script pays for
them only when it reads or writes the database. The first table used loads them all, as importing
the package did: their foreign keys name each other's tables, and `metadata` is complete wherever
the schema is created or migrated."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._enums import AgentCapability, AgentRole, ExecutionStatus, StepStatus, TopologyType
from ._json import JSON_TOO_DEEP, MAX_JSON_BYTES, MAX_JSON_DEPTH, check_json, json_depth, json_problem
from ._usage import Usage

if TYPE_CHECKING:
    from ._agent import AgentConfig, AgentType, utcnow
    from ._base import TableModel, metadata, new_row, table_of
    from ._eval import EvalRun, EvalScore
    from ._execution import Execution, ExecutionStep, StepUsage
    from ._human import (
        HumanRequest,
        HumanRequestStatus,
        HumanRequestType,
        HumanResponse,
        gate_execution,
        gate_id_forms,
        gate_key,
        gate_request_id,
    )
    from ._memory import AgentMemory
    from ._model_config import ModelConfig, Models
    from ._tools import InvocationStatus, ToolInvocation
    from ._topology import (
        ChainOfCommandConfig,
        CompoundCondition,
        CompoundConfig,
        CrossCheckConfig,
        DebateConfig,
        DelegationConfig,
        EnsembleConfig,
        PipelineConfig,
        Topology,
        TopologyConfig,
        TopologyMembership,
        config_class_for,
    )
    from ._trust import TrustRecord
    from ._validation import (
        NAME_PATTERN,
        NUL,
        check_id,
        check_name,
        describe_validation_error,
        nul_field,
        nul_message,
        storable_text,
    )

_SCHEMAS = {
    "ModelConfig": "_model_config",
    "Models": "_model_config",
    "NAME_PATTERN": "_validation",
    "NUL": "_validation",
    "check_id": "_validation",
    "check_name": "_validation",
    "describe_validation_error": "_validation",
    "nul_field": "_validation",
    "nul_message": "_validation",
    "storable_text": "_validation",
}
"""The names that load pydantic (and nothing of SQLAlchemy) on first use: a Metaflow task's join reads
the enums and `Usage` without it (`flowcall`)."""

_TABLES = {
    "AgentConfig": "_agent",
    "AgentType": "_agent",
    "utcnow": "_agent",
    "TableModel": "_base",
    "metadata": "_base",
    "new_row": "_base",
    "table_of": "_base",
    "EvalRun": "_eval",
    "EvalScore": "_eval",
    "Execution": "_execution",
    "ExecutionStep": "_execution",
    "StepUsage": "_execution",
    "HumanRequest": "_human",
    "HumanRequestStatus": "_human",
    "HumanRequestType": "_human",
    "HumanResponse": "_human",
    "gate_execution": "_human",
    "gate_id_forms": "_human",
    "gate_key": "_human",
    "gate_request_id": "_human",
    "AgentMemory": "_memory",
    "InvocationStatus": "_tools",
    "ToolInvocation": "_tools",
    "ChainOfCommandConfig": "_topology",
    "CompoundCondition": "_topology",
    "CompoundConfig": "_topology",
    "CrossCheckConfig": "_topology",
    "DebateConfig": "_topology",
    "DelegationConfig": "_topology",
    "EnsembleConfig": "_topology",
    "PipelineConfig": "_topology",
    "Topology": "_topology",
    "TopologyConfig": "_topology",
    "TopologyMembership": "_topology",
    "config_class_for": "_topology",
    "TrustRecord": "_trust",
}
"""The names that load the tables (and so SQLAlchemy and SQLModel) on first use."""

__all__ = [
    "JSON_TOO_DEEP",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "NAME_PATTERN",
    "NUL",
    "AgentCapability",
    "AgentConfig",
    "AgentMemory",
    "AgentRole",
    "AgentType",
    "ChainOfCommandConfig",
    "CompoundCondition",
    "CompoundConfig",
    "CrossCheckConfig",
    "DebateConfig",
    "DelegationConfig",
    "EnsembleConfig",
    "EvalRun",
    "EvalScore",
    "Execution",
    "ExecutionStatus",
    "ExecutionStep",
    "HumanRequest",
    "HumanRequestStatus",
    "HumanRequestType",
    "HumanResponse",
    "InvocationStatus",
    "ModelConfig",
    "Models",
    "PipelineConfig",
    "StepStatus",
    "StepUsage",
    "TableModel",
    "ToolInvocation",
    "Topology",
    "TopologyConfig",
    "TopologyMembership",
    "TopologyType",
    "TrustRecord",
    "Usage",
    "check_id",
    "check_json",
    "check_name",
    "config_class_for",
    "describe_validation_error",
    "gate_execution",
    "gate_id_forms",
    "gate_key",
    "gate_request_id",
    "json_depth",
    "json_problem",
    "metadata",
    "new_row",
    "nul_field",
    "nul_message",
    "storable_text",
    "table_of",
    "utcnow",
]


if not TYPE_CHECKING:  # mypy reads the imports above: a name not among them stays an error

    def __getattr__(name: str) -> Any:
        module = _TABLES.get(name)
        if module is not None:
            for table_module in sorted(
                set(_TABLES.values())
            ):  # all at once: their foreign keys name each other
                importlib.import_module(f"{__name__}.{table_module}")
        else:
            module = _SCHEMAS.get(name)
            if module is None:
                raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
