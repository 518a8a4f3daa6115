"""Enumerations shared by the tables and the config schemas."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AgentCapability", "AgentRole", "ExecutionStatus", "StepStatus", "TopologyType"]


class AgentRole(StrEnum):
    """What an agent does in a team; the offline `test` model answers in character."""

    GENERALIST = "generalist"
    PLANNER = "planner"
    EXECUTOR = "executor"
    RESEARCHER = "researcher"
    ANALYST = "analyst"
    WRITER = "writer"
    SPECIALIST = "specialist"
    CRITIC = "critic"
    REVIEWER = "reviewer"
    CHECKER = "checker"
    VALIDATOR = "validator"
    SYNTHESIZER = "synthesizer"
    PROPONENT = "proponent"
    OPPONENT = "opponent"
    MEDIATOR = "mediator"
    JUDGE = "judge"
    COMMANDER = "commander"
    LIEUTENANT = "lieutenant"
    WORKER = "worker"
    ROUTER = "router"


class AgentCapability(StrEnum):
    """The built-in mixins' names, as constants. `AgentConfig.capabilities` takes any name in the
    mixin registry (`@mixin` adds yours), so this enum lists, it does not limit."""

    TOOL_USE = "tool_use"
    MEMORY = "memory"
    REASONING = "reasoning"
    STRUCTURED_OUTPUT = "structured_output"
    HUMAN_IN_LOOP = "human_in_loop"


class TopologyType(StrEnum):
    """The built-in topology types' names, as constants. `Topology.topology_type` takes any name in
    the topology registry (`@topology` adds yours), so this enum lists, it does not limit."""

    PIPELINE = "pipeline"
    ENSEMBLE = "ensemble"
    DEBATE = "debate"
    CROSSCHECK = "crosscheck"
    CHAIN_OF_COMMAND = "chain"
    DELEGATION = "delegation"
    COMPOUND = "compound"


class ExecutionStatus(StrEnum):
    """Where an execution is; the allowed moves between them are `store/_executions.py`'s table."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    """Waiting for a person's answer to a human request."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    """Was running, and its owner is gone (killed, or its lease expired); resumable."""

    @property
    def is_terminal(self) -> bool:
        return self in (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED)

    @property
    def is_resumable(self) -> bool:
        return self is not ExecutionStatus.COMPLETED


class StepStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
