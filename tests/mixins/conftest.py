"""Fixtures for the mixin tests: one-stage runs, tool-calling models and bare hook contexts."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from qmcp.agentframework.llm import register_model, unregister_model
from qmcp.agentframework.mixins import MixinContext, RunResources
from qmcp.agentframework.models import AgentType, ExecutionStep, Topology, TopologyType
from qmcp.agentframework.runners import LocalRunner, RunConfig, RunResult
from qmcp.agentframework.store import Database

ToolCalls = Sequence[tuple[str, dict[str, Any]]]


@dataclass
class ToolModel:
    """A model that makes the scripted tool calls, one turn at a time, then reports what came back."""

    turns: Sequence[ToolCalls]
    name: str = field(default_factory=lambda: f"tools:{uuid.uuid4().hex[:8]}")
    offered: list[list[str]] = field(default_factory=list)
    systems: list[str] = field(default_factory=list)

    def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.offered.append([tool.name for tool in info.function_tools])
        self.systems.append(
            "\n".join(
                part.content
                for message in messages
                if isinstance(message, ModelRequest)
                for part in message.parts
                if isinstance(part, SystemPromptPart)
            )
        )
        turn = sum(isinstance(m, ModelResponse) for m in messages)
        if turn < len(self.turns) and info.function_tools:
            return ModelResponse(parts=[ToolCallPart(tool, args) for tool, args in self.turns[turn]])
        returns = [
            f"{part.tool_name}={part.content}"
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, ToolReturnPart | RetryPromptPart) and part.tool_name
        ]
        return ModelResponse(parts=[TextPart("results: " + "; ".join(returns))])


@pytest.fixture
def tool_model() -> Iterator[Callable[..., ToolModel]]:
    """tool_model(turn, turn, ...): a registered `ToolModel`; each turn is a list of (tool, args)."""
    names: list[str] = []

    def make(*turns: ToolCalls) -> ToolModel:
        model = ToolModel(list(turns))
        register_model(model.name, FunctionModel(model.respond, model_name=model.name))
        names.append(model.name)
        return model

    yield make
    for name in names:
        unregister_model(name)


RunOne = Callable[..., Awaitable[tuple[RunResult, list[ExecutionStep]]]]


@pytest.fixture
def run_one() -> RunOne:
    """run_one(db_url, agent, prompt): a one-stage pipeline; returns the result and the stored steps."""

    async def run(
        db_url: str, agent: AgentType, prompt: str = "the task", name: str = "solo"
    ) -> tuple[RunResult, list[ExecutionStep]]:
        runner = LocalRunner(config=RunConfig(retry_backoff_seconds=0.001), db_url=db_url)
        topology = Topology(name=name, topology_type=TopologyType.PIPELINE)
        result = await runner.run(topology, {"s": agent}, {"prompt": prompt})
        async with Database(db_url) as db:
            steps = list(await db.list_steps(result.execution_id))
        return result, steps

    return run


@pytest.fixture
def hook_context() -> Callable[..., MixinContext]:
    """hook_context(agent, **fields): a bare `MixinContext` to call one mixin's hooks directly."""

    def make(agent: AgentType, **fields: Any) -> MixinContext:
        fields.setdefault("resources", RunResources())
        return MixinContext(
            execution_id=uuid.uuid4(),
            key="solo/0:s",
            slot="s",
            agent=agent,
            config=agent.agent_config,
            model="test",
            **fields,
        )

    return make
