"""Topologies: plain async code over one `StepContext`; every agent call is a durable step."""

from ..flowcall import output_text
from ._aggregate import (
    AGGREGATION_METHODS,
    CONSENSUS_METHODS,
    aggregate_results,
    determine_consensus,
    synthesis_prompt,
)
from ._base import BaseTopology, TopologyRegistry, topology
from ._budget import DEFAULT_MAX_OUTPUT, Budget, estimate_prompt_tokens
from ._chain import PLAN_SCHEMA, ChainOfCommandTopology
from ._compound import CompoundTopology, referenced_topologies
from ._context import (
    ConcurrentScheduler,
    RetryPolicy,
    Scheduler,
    SequentialScheduler,
    StepContext,
    StepEvent,
    StepResult,
    input_text,
)
from ._crosscheck import CrossCheckTopology
from ._dag import Dag, DagEdge, DagGroup, DagNode, topology_dag
from ._debate import AGREEMENT_MARKER, DebateTopology
from ._delegation import ROUTER_SLOT, DelegationTopology
from ._ensemble import AGGREGATOR_SLOT, EnsembleTopology
from ._heap import freeze_start_up_heap
from ._parsing import extract_confidence, extract_json, extract_number, normalize_answer, validate_json
from ._pipeline import PipelineTopology
from ._plan import AgentCall, ParallelCalls, StepPlan
from ._replaycheck import ReplayCheck, prompt_difference, recorded_prompt
from ._svg import execution_diagram
from ._verdict import VALIDATION_SCHEMA, parse_verdict

__all__ = [
    "AGGREGATION_METHODS",
    "AGGREGATOR_SLOT",
    "AGREEMENT_MARKER",
    "CONSENSUS_METHODS",
    "DEFAULT_MAX_OUTPUT",
    "PLAN_SCHEMA",
    "ROUTER_SLOT",
    "VALIDATION_SCHEMA",
    "AgentCall",
    "BaseTopology",
    "Budget",
    "ChainOfCommandTopology",
    "CompoundTopology",
    "ConcurrentScheduler",
    "CrossCheckTopology",
    "Dag",
    "DagEdge",
    "DagGroup",
    "DagNode",
    "DebateTopology",
    "DelegationTopology",
    "EnsembleTopology",
    "ParallelCalls",
    "PipelineTopology",
    "ReplayCheck",
    "RetryPolicy",
    "Scheduler",
    "SequentialScheduler",
    "StepContext",
    "StepEvent",
    "StepPlan",
    "StepResult",
    "TopologyRegistry",
    "aggregate_results",
    "determine_consensus",
    "estimate_prompt_tokens",
    "execution_diagram",
    "extract_confidence",
    "extract_json",
    "extract_number",
    "freeze_start_up_heap",
    "input_text",
    "normalize_answer",
    "output_text",
    "parse_verdict",
    "prompt_difference",
    "recorded_prompt",
    "referenced_topologies",
    "synthesis_prompt",
    "topology",
    "topology_dag",
    "validate_json",
]
