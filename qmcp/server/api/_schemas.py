"""Request and response bodies of the API: upstream's shapes for tools and human requests, and the
orchestration's (agents, topologies, executions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...agentframework.models import NAME_PATTERN, HumanRequest, HumanResponse
from ...app import ExecutionOut, StepOut

__all__ = [
    "AgentBody",
    "AgentListOut",
    "AgentOut",
    "DagOut",
    "ExecutionListOut",
    "ForkBody",
    "HealthOut",
    "HumanRequestDetailOut",
    "HumanRequestIn",
    "HumanRequestListOut",
    "HumanRequestOut",
    "HumanRequestRowOut",
    "HumanResponseIn",
    "HumanResponseOut",
    "HumanResponseRowOut",
    "InvocationListOut",
    "InvocationOut",
    "RunBody",
    "StepListOut",
    "ToolDefinitionOut",
    "ToolInvokeIn",
    "ToolInvokeOut",
    "ToolListOut",
    "TopologyBody",
    "TopologyDefinitionOut",
    "TopologyListOut",
    "TopologyOut",
    "human_request_out",
    "human_response_out",
]


_NAME: dict[str, Any] = {"pattern": NAME_PATTERN}
"""Documented, not checked by the body's model: the definition's own check refuses other names (400),
with the sentence that says how to fix them."""


class HealthOut(BaseModel):
    status: str
    version: str


class ToolDefinitionOut(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]


class ToolListOut(BaseModel):
    tools: list[ToolDefinitionOut]


class ToolInvokeIn(BaseModel):
    input: dict[str, Any] = Field(default_factory=dict, description="Tool input parameters")
    correlation_id: str | None = Field(default=None, max_length=200)


class ToolInvokeOut(BaseModel):
    result: Any = None
    error: str | None = None
    invocation_id: str | None = None


_NOT_SHOWN = (
    "a JSON value, or a one-line note in its place when it cannot be shown as JSON (`app.shown_json`)"
)


class InvocationOut(BaseModel):
    """One call of a tool, as recorded (`ToolInvocation`'s row)."""

    id: str
    tool_name: str
    input_params: dict[str, Any] | str = Field(description=_NOT_SHOWN)
    result: Any = Field(default=None, description=_NOT_SHOWN)
    error: str | None
    status: Literal["pending", "success", "failed"]
    duration_ms: int | None
    created_at: datetime
    completed_at: datetime | None
    correlation_id: str | None


class InvocationListOut(BaseModel):
    invocations: list[InvocationOut]
    count: int


class HumanRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=300, description="Client-chosen unique id")
    request_type: str = Field(
        pattern=r"^[A-Za-z0-9_.:-]{1,32}$",
        description="approval, input or review (runs' gates use approval and input); like upstream, another "
        "type is taken: up to 32 letters, digits, `_`, `.`, `:` or `-`",
    )
    prompt: str = Field(min_length=1)
    options: list[str] | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: int = Field(default=3600, ge=60, le=86_400)
    correlation_id: str | None = Field(default=None, max_length=200)
    run_token: str | None = Field(
        default=None,
        max_length=200,
        description="A run's gate on a server sharing its database: the execution's owner token, which "
        "alone lets an id of the gates' form `{execution id}:{step}` be created",
    )


class HumanRequestOut(BaseModel):
    id: str
    request_type: str
    prompt: str
    status: str
    created_at: datetime
    expires_at: datetime | None


class HumanResponseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=300)
    response: str
    responded_by: str | None = Field(default=None, max_length=200)
    response_metadata: dict[str, Any] = Field(default_factory=dict)


class HumanResponseOut(BaseModel):
    id: str
    request_id: str
    response: str
    responded_by: str | None
    created_at: datetime


class HumanRequestRowOut(BaseModel):
    """A human request, as recorded (`HumanRequest`'s row): a run's gate names its execution and step."""

    id: str
    request_type: str
    prompt: str
    options: list[str] | str | None = Field(description=_NOT_SHOWN)
    context: dict[str, Any] | str = Field(description=_NOT_SHOWN)
    timeout_seconds: int | float | None
    status: Literal["pending", "responded", "expired", "cancelled"]
    correlation_id: str | None
    execution_id: str | None
    key: str | None
    created_at: datetime
    expires_at: datetime | None


class HumanResponseRowOut(BaseModel):
    """The answer to a human request, as recorded (`HumanResponse`'s row)."""

    id: str
    request_id: str
    response: str
    responded_by: str | None
    response_metadata: dict[str, Any] | str = Field(description=_NOT_SHOWN)
    created_at: datetime


class HumanRequestDetailOut(BaseModel):
    request: HumanRequestRowOut
    response: HumanResponseRowOut | None


class HumanRequestListOut(BaseModel):
    requests: list[HumanRequestRowOut]
    count: int


class AgentBody(BaseModel):
    """An agent definition, as `qmcp apply` files and `AgentType` hold it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(json_schema_extra=_NAME)
    description: str = ""
    role: str = "generalist"
    config: dict[str, Any] = Field(default_factory=dict)


class TopologyBody(BaseModel):
    """A topology: its type and config, and the stored agent filling each slot (`{slot: agent name}`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(json_schema_extra=_NAME)
    description: str = ""
    type: str = Field(alias="topology_type")
    config: dict[str, Any] = Field(default_factory=dict)
    agents: dict[str, str] = Field(default_factory=dict)


class AgentOut(BaseModel):
    """An agent's definition (`AgentType.definition()`), as `AgentBody` takes it."""

    name: str
    description: str
    role: str
    config: dict[str, Any]


class AgentListOut(BaseModel):
    agents: list[AgentOut]
    count: int


class TopologyDefinitionOut(BaseModel):
    """A topology's definition (`Topology.definition()`)."""

    name: str
    description: str
    topology_type: str
    config: dict[str, Any]


class TopologyOut(TopologyDefinitionOut):
    """A stored topology and the agent filling each of its slots (`{slot: agent name}`)."""

    agents: dict[str, str]


class TopologyListOut(BaseModel):
    topologies: list[TopologyOut]
    count: int


class DagNodeOut(BaseModel):
    id: str
    kind: Literal["input", "output", "step", "join", "agent"]
    label: str
    slot: str | None = None
    agent: str | None = None
    group: str | None = Field(default=None, description="The sub-topology (compound) the node belongs to")


class DagEdgeOut(BaseModel):
    source: str
    target: str
    label: str | None = None


class DagGroupOut(BaseModel):
    id: str
    label: str
    parent: str | None = None


class DagOut(BaseModel):
    """A topology's graph (`Dag.to_dict()`): a field without a value is left out."""

    nodes: list[DagNodeOut]
    edges: list[DagEdgeOut]
    groups: list[DagGroupOut]


class ExecutionListOut(BaseModel):
    executions: list[ExecutionOut]
    count: int
    total: int = Field(description="Executions matching the filters, on every page")


class StepListOut(BaseModel):
    steps: list[StepOut]
    count: int


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict)
    runner: Literal["local", "async", "metaflow"] = "local"
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Run options a client may set (timeout_seconds, max_cost_usd, max_tokens, "
        "max_concurrent, max_retries, correlation_id, a model_override the server allows); the others are "
        "the operator's (403): see RUN_OPTION_POLICY",
    )


class ForkBody(BaseModel):
    """A fork of an execution from one of its steps (`qmcp.app.ForkRequest`)."""

    model_config = ConfigDict(extra="forbid")

    at: str = Field(min_length=1, max_length=1000, description="The step key to run again from")
    model: str | None = Field(
        default=None, max_length=300, description="A model override the server allows (else the parent's)"
    )
    agents: dict[str, str] = Field(
        default_factory=dict, description="Slot → a stored, trusted agent that fills it from the fork step on"
    )
    input: dict[str, Any] | None = Field(default=None, description="A new input (else the parent's)")
    set_output: dict[str, str] = Field(
        default_factory=dict, description="Step key → the reply to put in its place before going on"
    )


def human_request_out(request: HumanRequest) -> HumanRequestOut:
    return HumanRequestOut(
        id=request.id,
        request_type=request.request_type,
        prompt=request.prompt,
        status=request.status,
        created_at=request.created_at,
        expires_at=request.expires_at,
    )


def human_response_out(response: HumanResponse) -> HumanResponseOut:
    return HumanResponseOut(
        id=response.id,
        request_id=response.request_id,
        response=response.response,
        responded_by=response.responded_by,
        created_at=response.created_at,
    )
