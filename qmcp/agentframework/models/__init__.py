"""Tables and schemas: agents, topologies, executions, steps, and the model registry."""

from ._agent import AgentConfig, AgentType, utcnow
from ._base import TableModel, metadata, new_row, table_of
from ._enums import AgentCapability, AgentRole, ExecutionStatus, StepStatus, TopologyType
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
from ._json import JSON_TOO_DEEP, MAX_JSON_BYTES, MAX_JSON_DEPTH, check_json, json_depth, json_problem
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
from ._usage import Usage
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
