"""The tools the server offers at `/v1/tools`: its built-ins and the Python tools registered for tool_use.

Built-ins, in upstream's shapes:
* `echo{message}` returns the message.
* `planner{goal, context?}` asks a planner agent for the steps that reach the goal.
* `executor{plan, dry_run?}` lists what a plan would do (`dry_run`, the default), or has an executor
  agent carry out each step and report its result.
* `reviewer{result, criteria?, items?}` has a reviewer agent check a result against each criterion.

The agents run on `QMCP_TOOLS_MODEL` (else the default model, or the server's model override), as
one-off steps recorded nowhere but in the invocation history. Every call is a `tool_invocations`
row: pending while it runs, then success or failed.
"""

from __future__ import annotations

import contextvars
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_jsonable_python

from ..agentframework.errors import QmcpError, StepFailedError
from ..agentframework.llm import effective_model, run_override
from ..agentframework.mixins import python_tool, registered_tools
from ..agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    InvocationStatus,
    ToolInvocation,
    json_problem,
    utcnow,
)
from ..agentframework.store import Database, MemoryStepStore
from ..agentframework.topologies import StepContext
from ..config import settings
from .metrics import HTTP

__all__ = ["TOOLS_MODEL", "ServerTool", "ToolFailure", "invoke_tool", "server_tools"]


class ToolFailure(Exception):
    """A tool ran and failed: the invocation answers 200 with `error` set, as upstream's does."""


@dataclass(frozen=True)
class ServerTool:
    name: str
    description: str
    input_schema: dict[str, Any]
    call: Callable[[dict[str, Any]], Awaitable[Any]]


class _Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(description="The message to echo back")


class _Planner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    goal: str = Field(min_length=1, description="The goal to create a plan for")
    context: str | None = Field(default=None, description="Optional context to inform planning")


class _Executor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: dict[str, Any] = Field(description="The plan to execute (a planner's result: its `steps`)")
    dry_run: bool = Field(default=True, description="List what would be done without doing it")


class _Reviewer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    result: Any = Field(description="The result to review")
    criteria: list[str] | None = Field(default=None, description="What to check [completeness, correctness]")
    items: list[Any] | None = Field(default=None, description="Specific parts of the result to look at")


_PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"action": {"type": "string"}, "description": {"type": "string"}},
                "required": ["action", "description"],
            },
        }
    },
    "required": ["steps"],
}


TOOLS_MODEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("qmcp_tools_model", default=None)
"""The server's model override (`qmcp --model test serve`), set around each invocation."""


def _tools_model() -> str:
    return effective_model(AgentConfig(model=settings().tools_model), run_override(TOOLS_MODEL.get())).model


async def _ask(role: AgentRole, tool: str, prompt: str, schema: dict[str, Any] | None = None) -> Any:
    """One agent step outside any execution: the tool's own agent, on the tools model."""
    agent = AgentType(
        name=f"qmcp-{tool}",
        role=role,
        description=f"the QMCP server's {tool} tool",
        config=AgentConfig(model=_tools_model()).model_dump(),
    )
    ctx = StepContext(execution_id=uuid.uuid4(), agents={tool: agent}, store=MemoryStepStore())
    try:
        result = await ctx.invoke(tool, prompt, key=tool, schema=schema)
    except StepFailedError as failed:
        raise ToolFailure(str(failed)) from None
    return result.data if schema is not None else result.text


async def _echo(args: dict[str, Any]) -> Any:
    return _Echo.model_validate(args).message


async def _planner(args: dict[str, Any]) -> Any:
    given = _Planner.model_validate(args)
    context = f"\n\nContext: {given.context}" if given.context else ""
    data = await _ask(
        AgentRole.PLANNER,
        "planner",
        f"Goal: {given.goal}{context}\n\nBreak the goal into the ordered steps that reach it.",
        _PLAN_SCHEMA,
    )
    steps = [
        {
            "step": index,
            "action": str(step.get("action", "")),
            "description": str(step.get("description", "")),
        }
        for index, step in enumerate(data.get("steps", []), start=1)
        if isinstance(step, dict)
    ]
    return {"goal": given.goal, "steps": steps, "estimated_steps": len(steps)}


async def _executor(args: dict[str, Any]) -> Any:
    given = _Executor.model_validate(args)
    steps = [step for step in given.plan.get("steps", []) if isinstance(step, dict)]
    results = []
    for index, step in enumerate(steps, start=1):
        entry = {"step": step.get("step", index), "action": step.get("action")}
        if given.dry_run:
            results.append(entry | {"status": "simulated"})
            continue
        output = await _ask(
            AgentRole.EXECUTOR,
            "executor",
            f"Carry out this step of a plan and report what you did.\n\nStep {entry['step']}: "
            f"{step.get('action')}\n{step.get('description', '')}\n\nWhole plan: {json.dumps(given.plan)}",
        )
        results.append(entry | {"status": "completed", "output": output})
    return {
        "mode": "dry_run" if given.dry_run else "live",
        "steps_executed": len(results),
        "results": results,
        "success": True,
    }


async def _reviewer(args: dict[str, Any]) -> Any:
    given = _Reviewer.model_validate(args)
    criteria = given.criteria or ["completeness", "correctness"]
    check = {
        "type": "object",
        "properties": {"passed": {"type": "boolean"}, "notes": {"type": "string"}},
        "required": ["passed", "notes"],
    }
    schema = {
        "type": "object",
        "properties": {
            "checks": {"type": "object", "properties": dict.fromkeys(criteria, check), "required": criteria},
            "recommendation": {"type": "string"},
        },
        "required": ["checks", "recommendation"],
    }
    items = f"\n\nLook in particular at: {json.dumps(given.items)}" if given.items else ""
    data = await _ask(
        AgentRole.REVIEWER,
        "reviewer",
        f"Review this result against each criterion ({', '.join(criteria)}).\n\n"
        f"Result: {json.dumps(given.result, default=str)}{items}",
        schema,
    )
    verdicts = data.get("checks", {})
    checks = [
        {
            "criterion": criterion,
            "status": "passed" if verdicts.get(criterion, {}).get("passed") else "failed",
            "notes": str(verdicts.get(criterion, {}).get("notes", "")),
        }
        for criterion in criteria
    ]
    return {
        "reviewed_result": given.result,
        "checks": checks,
        "overall_status": "approved" if all(c["status"] == "passed" for c in checks) else "changes_requested",
        "recommendation": str(data.get("recommendation", "")),
    }


_BUILTINS = [
    ServerTool("echo", "Echo the input message back. Useful for testing.", _Echo.model_json_schema(), _echo),
    ServerTool(
        "planner",
        "Create a step-by-step execution plan from a goal (a planner agent).",
        _Planner.model_json_schema(),
        _planner,
    ),
    ServerTool(
        "executor",
        "Execute an approved plan (dry run by default); returns what each step did.",
        _Executor.model_json_schema(),
        _executor,
    ),
    ServerTool(
        "reviewer",
        "Review a result against criteria (a reviewer agent); returns a check per criterion.",
        _Reviewer.model_json_schema(),
        _reviewer,
    ),
]


def server_tools() -> dict[str, ServerTool]:
    """Built-ins first, then every Python tool registered with `register_tool`, by name."""
    tools = {tool.name: tool for tool in _BUILTINS}
    for name in registered_tools():
        if name not in tools:
            spec = python_tool(name)
            tools[name] = ServerTool(
                name,
                spec.definition.description or "",
                dict(spec.definition.parameters_json_schema),
                spec.call,
            )
    return tools


async def invoke_tool(
    db: Database,
    tool: ServerTool,
    arguments: dict[str, Any],
    correlation_id: str | None,
    *,
    model_override: str | None = None,
) -> ToolInvocation:
    """Run `tool` on `arguments`, recorded as a `tool_invocations` row from start to end."""
    invocation = ToolInvocation(tool_name=tool.name, input_params=arguments, correlation_id=correlation_id)
    await db.add_tool_invocation(invocation)
    started = time.perf_counter()
    token = TOOLS_MODEL.set(model_override)
    try:
        result = to_jsonable_python(await tool.call(arguments), fallback=str)
        problem = json_problem(result)
        if problem is not None:  # stored, it would break the invocation list for everyone
            raise ToolFailure(f"the result {problem}")
        invocation.result = result
        invocation.status = InvocationStatus.SUCCESS
    except ValidationError as invalid:
        invocation.error = f"invalid input for {tool.name}: {_first_error(invalid)}"
    except (ToolFailure, QmcpError) as failure:
        invocation.error = f"Tool execution failed: {failure}"
    except Exception as failure:  # the tool's own code failed: that is its result, not the server's error
        invocation.error = f"Tool execution failed: {type(failure).__name__}: {failure}"
    finally:
        TOOLS_MODEL.reset(token)
    if invocation.error is not None:
        invocation.status = InvocationStatus.FAILED
    elapsed = time.perf_counter() - started
    invocation.duration_ms = int(elapsed * 1000)
    invocation.completed_at = utcnow()
    await db.finish_tool_invocation(
        invocation.id,
        result=invocation.result,
        error=invocation.error,
        status=invocation.status,
        duration_ms=invocation.duration_ms,
        completed_at=invocation.completed_at,
    )
    HTTP.tool_invocations.labels(tool.name, str(invocation.status)).inc()
    HTTP.tool_duration.labels(tool.name).observe(elapsed)
    return invocation


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first['msg']}" if where else first["msg"]
