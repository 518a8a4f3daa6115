"""Request and response bodies of the API: upstream's shapes for tools and human requests, and the
orchestration's (agents, topologies, executions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...agentframework.models import HumanRequest, HumanResponse

__all__ = [
    "AgentBody",
    "HealthOut",
    "HumanRequestIn",
    "HumanRequestOut",
    "HumanResponseIn",
    "HumanResponseOut",
    "RunBody",
    "ToolDefinitionOut",
    "ToolInvokeIn",
    "ToolInvokeOut",
    "TopologyBody",
    "human_request_out",
    "human_response_out",
]


class HealthOut(BaseModel):
    status: str
    version: str


class ToolDefinitionOut(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]


class ToolInvokeIn(BaseModel):
    input: dict[str, Any] = Field(default_factory=dict, description="Tool input parameters")
    correlation_id: str | None = Field(default=None, max_length=200)


class ToolInvokeOut(BaseModel):
    result: Any = None
    error: str | None = None
    invocation_id: str | None = None


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


class AgentBody(BaseModel):
    """An agent definition, as `qmcp apply` files and `AgentType` hold it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    role: str = "generalist"
    config: dict[str, Any] = Field(default_factory=dict)


class TopologyBody(BaseModel):
    """A topology: its type and config, and the stored agent filling each slot (`{slot: agent name}`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    description: str = ""
    type: str = Field(alias="topology_type")
    config: dict[str, Any] = Field(default_factory=dict)
    agents: dict[str, str] = Field(default_factory=dict)


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
