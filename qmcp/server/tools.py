"""The tools the server offers at `/v1/tools`: its built-ins and the Python tools registered for tool_use.

Built-ins, in upstream's shapes:
* `echo{message}` returns the message.
* `planner{goal (or prompt), context?}` asks a planner agent for the steps that reach the goal.
* `executor{plan, dry_run?}` lists what a plan would do (`dry_run`, the default), or has an executor
  agent carry out each step and report its result.
* `reviewer{result, criteria?, items?}` has a reviewer agent check a result against each criterion.

The agents run on `QMCP_TOOLS_MODEL` (else the default model, or the server's model override), as
one-off steps recorded nowhere but in the invocation history. Every call is a `tool_invocations`
row: pending while it runs, then success or failed.

Their spend is bounded like a run's (`ToolLimits`, from the `QMCP_TOOL_*` settings): a plan has at
most `QMCP_TOOL_MAX_PLAN_STEPS` steps (a longer one is refused before any model call, 413); one tool
call's model calls share a `Budget` of `QMCP_TOOL_MAX_TOKENS` / `QMCP_TOOL_MAX_COST_USD` (a call that
would not fit is not made, 422); the whole server's tools make at most
`QMCP_TOOL_MODEL_CALLS_PER_MINUTE` model calls of `QMCP_TOOL_TOKENS_PER_MINUTE` tokens a minute (429
with Retry-After); and every call waits its turn at the process's provider rate limits
(`llm.rate_limits()`), as a run's do. A refused call is recorded as failed, with the reason.
"""

from __future__ import annotations

import contextvars
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import to_jsonable_python

from ..agentframework.errors import (
    BudgetExceededError,
    PlanTooLargeError,
    QmcpError,
    RateLimitedError,
    StepFailedError,
)
from ..agentframework.llm import effective_model, rate_limits, run_override
from ..agentframework.mixins import python_tool, registered_tools
from ..agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    InvocationStatus,
    Models,
    ToolInvocation,
    json_problem,
    utcnow,
)
from ..agentframework.store import Database, MemoryStepStore
from ..agentframework.topologies import DEFAULT_MAX_OUTPUT, Budget, StepContext, estimate_prompt_tokens
from ..config import settings
from .metrics import HTTP

__all__ = ["TOOLS_MODEL", "ServerTool", "ToolFailure", "ToolLimits", "invoke_tool", "server_tools"]

_MINUTE = 60.0


class ToolFailure(Exception):
    """A tool ran and failed: the invocation answers 200 with `error` set, as upstream's does."""


@dataclass(frozen=True)
class ServerTool:
    name: str
    description: str
    input_schema: dict[str, Any]
    call: Callable[[dict[str, Any]], Awaitable[Any]]


# The inputs are as lenient as upstream's tools, whose clients and examples send them: fields a tool
# does not know are ignored, echo's message is any JSON value (absent: ""), the planner's goal may be
# called `prompt`, an executor without a plan does nothing. The spend bounds hold all the same.


class _Echo(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: Any = Field(default="", description="The message to echo back (any JSON value)")


class _Planner(BaseModel):
    model_config = ConfigDict(extra="ignore")
    goal: str | None = Field(default=None, description="The goal to create a plan for")
    prompt: str | None = Field(default=None, description="Another name for the goal (upstream's examples)")
    context: str | None = Field(default=None, description="Optional context to inform planning")

    @model_validator(mode="after")
    def _a_goal(self) -> _Planner:
        if not (self.goal or self.prompt):
            raise ValueError("give the goal to plan for, as goal (or prompt)")
        return self

    @property
    def aim(self) -> str:
        return self.goal or self.prompt or ""


class _Executor(BaseModel):
    model_config = ConfigDict(extra="ignore")
    plan: dict[str, Any] = Field(
        default_factory=dict, description="The plan to execute (a planner's result: its `steps`)"
    )
    dry_run: bool = Field(default=True, description="List what would be done without doing it")


class _Reviewer(BaseModel):
    model_config = ConfigDict(extra="ignore")
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


@dataclass
class ToolLimits:
    """The server's bounds on its tools' spend (the `QMCP_TOOL_*` settings), and the model calls of
    the last minute that the per-minute caps count; one per server, on the event loop that serves it."""

    max_plan_steps: int
    max_tokens: int
    max_cost_usd: float
    calls_per_minute: int
    tokens_per_minute: int
    _recent: deque[tuple[float, int]] = field(default_factory=deque, init=False, repr=False)
    """(when, estimated tokens) of the calls admitted in the last minute, oldest first."""

    @classmethod
    def from_settings(cls) -> ToolLimits:
        current = settings()
        return cls(
            current.tool_max_plan_steps,
            current.tool_max_tokens,
            current.tool_max_cost_usd,
            current.tool_model_calls_per_minute,
            current.tool_tokens_per_minute,
        )

    def budget(self) -> Budget:
        """One tool call's budget, shared by all its model calls."""
        return Budget(
            "tool call",
            self.max_tokens,
            self.max_cost_usd,
            scope="the tool call",
            settings=("QMCP_TOOL_MAX_TOKENS", "QMCP_TOOL_MAX_COST_USD"),
        )

    def check_plan(self, tool: str, steps: int) -> None:
        if steps > self.max_plan_steps:
            raise PlanTooLargeError(
                f"the plan given to {tool} has {steps:,} steps; this server takes at most "
                f"{self.max_plan_steps:,} (QMCP_TOOL_MAX_PLAN_STEPS)"
            )

    def admit(self, tokens: int, now: float | None = None) -> None:
        """Count one model call of about `tokens` tokens against the per-minute caps, or refuse it:
        refused rather than queued, so a flood of tool calls holds no connections open."""
        now = time.monotonic() if now is None else now
        while self._recent and self._recent[0][0] <= now - _MINUTE:
            self._recent.popleft()
        if len(self._recent) >= self.calls_per_minute:
            wait = self._recent[0][0] + _MINUTE - now
            raise RateLimitedError(
                f"too many tool model calls: this server's tools make at most {self.calls_per_minute:,} "
                f"a minute (QMCP_TOOL_MODEL_CALLS_PER_MINUTE); try again in {wait:.0f}s",
                retry_after=wait,
            )
        held = sum(used for _, used in self._recent)
        if held + tokens > self.tokens_per_minute:
            wait = _MINUTE  # a call larger than the whole cap waits a full minute, and is refused again
            for when, used in self._recent:
                held -= used
                if held + tokens <= self.tokens_per_minute:
                    wait = when + _MINUTE - now
                    break
            raise RateLimitedError(
                f"too many tool tokens: this server's tools take at most {self.tokens_per_minute:,} tokens "
                f"a minute (QMCP_TOOL_TOKENS_PER_MINUTE) and the next call needs about {tokens:,}; "
                f"try again in {wait:.0f}s",
                retry_after=wait,
            )
        self._recent.append((now, tokens))


@dataclass(frozen=True)
class _ToolCall:
    limits: ToolLimits
    budget: Budget


_CALL: contextvars.ContextVar[_ToolCall | None] = contextvars.ContextVar("qmcp_tool_call", default=None)
"""The limits and budget of the tool call in progress, set by `invoke_tool`."""


def _current_call() -> _ToolCall:
    call = _CALL.get()
    assert call is not None, "the server's tools run through invoke_tool"
    return call


def _tools_model() -> str:
    return effective_model(AgentConfig(model=settings().tools_model), run_override(TOOLS_MODEL.get())).model


async def _ask(role: AgentRole, tool: str, prompt: str, schema: dict[str, Any] | None = None) -> Any:
    """One agent step outside any execution: the tool's own agent, on the tools model, within the
    tool call's budget, the server's per-minute caps and the process's rate limits."""
    call = _current_call()
    model = _tools_model()
    config = Models.get(model)
    # a reply of at most DEFAULT_MAX_OUTPUT tokens: else a call is estimated (and budgeted) at the
    # model's whole output window, 64,000 tokens for some, and a small budget refuses every call
    output = min(config.max_output_tokens, DEFAULT_MAX_OUTPUT) if config is not None else DEFAULT_MAX_OUTPUT
    call.limits.admit(estimate_prompt_tokens(None, [prompt]) + output)
    agent = AgentType(
        name=f"qmcp-{tool}",
        role=role,
        description=f"the QMCP server's {tool} tool",
        config=AgentConfig(model=model, max_tokens=output).model_dump(),
    )
    ctx = StepContext(
        execution_id=uuid.uuid4(),
        agents={tool: agent},
        store=MemoryStepStore(),
        budget=call.budget,
        rate_limits=rate_limits(),
    )
    try:
        result = await ctx.invoke(tool, prompt, key=tool, schema=schema)
    except StepFailedError as failed:
        if isinstance(failed.cause, BudgetExceededError):
            raise failed.cause from None
        raise ToolFailure(str(failed)) from None
    return result.data if schema is not None else result.text


async def _echo(args: dict[str, Any]) -> Any:
    return _Echo.model_validate(args).message


async def _planner(args: dict[str, Any]) -> Any:
    given = _Planner.model_validate(args)
    context = f"\n\nContext: {given.context}" if given.context else ""
    most = _current_call().limits.max_plan_steps
    data = await _ask(
        AgentRole.PLANNER,
        "planner",
        f"Goal: {given.aim}{context}\n\nBreak the goal into the ordered steps that reach it "
        f"(at most {most}).",
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
    ][:most]  # a longer plan would only be refused by the executor
    return {"goal": given.aim, "steps": steps, "estimated_steps": len(steps)}


async def _executor(args: dict[str, Any]) -> Any:
    given = _Executor.model_validate(args)
    raw = given.plan.get("steps", [])
    _current_call().limits.check_plan("executor", len(raw) if isinstance(raw, list) else 0)
    steps = [step for step in raw if isinstance(step, dict)] if isinstance(raw, list) else []
    goal = given.plan.get("goal")
    aim = f" toward the goal: {goal}" if isinstance(goal, str) and goal else ""
    results = []
    for index, step in enumerate(steps, start=1):
        entry = {"step": step.get("step", index), "action": step.get("action")}
        if given.dry_run:
            results.append(entry | {"status": "simulated"})
            continue
        # the step and the plan's goal, not the whole plan: each prompt stays the size of one step
        output = await _ask(
            AgentRole.EXECUTOR,
            "executor",
            f"Carry out step {index} of {len(steps)} of a plan{aim}, and report what you did.\n\n"
            f"Step {entry['step']}: {step.get('action')}\n{step.get('description', '')}",
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
    limits: ToolLimits,
    model_override: str | None = None,
) -> ToolInvocation:
    """Run `tool` on `arguments`, recorded as a `tool_invocations` row from start to end; a call over
    one of `limits` is recorded as failed and its error raised (the caller answers 4xx or 429)."""
    invocation = ToolInvocation(tool_name=tool.name, input_params=arguments, correlation_id=correlation_id)
    await db.add_tool_invocation(invocation)
    started = time.perf_counter()
    token = TOOLS_MODEL.set(model_override)
    call = _CALL.set(_ToolCall(limits, limits.budget()))
    refused: QmcpError | None = None
    try:
        result = to_jsonable_python(await tool.call(arguments), fallback=str)
        problem = json_problem(result)
        if problem is not None:  # stored, it would break the invocation list for everyone
            raise ToolFailure(f"the result {problem}")
        invocation.result = result
        invocation.status = InvocationStatus.SUCCESS
    except (PlanTooLargeError, BudgetExceededError, RateLimitedError) as refusal:
        refused = refusal
        invocation.error = f"Tool call refused: {refusal}"
    except ValidationError as invalid:
        invocation.error = f"invalid input for {tool.name}: {_first_error(invalid)}"
    except (ToolFailure, QmcpError) as failure:
        invocation.error = f"Tool execution failed: {failure}"
    except Exception as failure:  # the tool's own code failed: that is its result, not the server's error
        invocation.error = f"Tool execution failed: {type(failure).__name__}: {failure}"
    finally:
        _CALL.reset(call)
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
    if refused is not None:
        raise refused
    return invocation


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first['msg']}" if where else first["msg"]
