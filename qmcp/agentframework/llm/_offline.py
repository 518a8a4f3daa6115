"""The offline models: `test` (deterministic, role-aware) and `ScriptedModel` (latency, failures).

Both are pydantic-ai `FunctionModel`s, so they go through exactly the same model layer as the
real providers. Neither touches the network or needs a key.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.exceptions import (
    ModelAuthenticationError,
    ModelConnectionError,
    ModelHTTPError,
    ModelOverloadedError,
    ModelRateLimitError,
    ModelRequestRejectedError,
    ModelServerError,
    ModelTimeoutError,
)
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
    _estimate_usage,
)
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.usage import RequestUsage

from ._prompts import requested_schema

__all__ = ["FAILURE_KINDS", "ScriptedCall", "ScriptedModel", "make_test_model", "prompt_text", "system_text"]

_ROLE_OPENINGS = {
    "planner": "Plan",
    "critic": "Critique",
    "reviewer": "Review",
    "synthesizer": "Synthesis",
    "proponent": "In favour",
    "opponent": "Against",
    "mediator": "Mediation",
    "judge": "Judgement",
    "writer": "Draft",
    "analyst": "Analysis",
    "researcher": "Findings",
    "commander": "Orders",
}


def prompt_text(messages: Sequence[ModelMessage]) -> str:
    """The text of the last user prompt in a message list."""
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            texts = [
                p.content
                for p in message.parts
                if isinstance(p, UserPromptPart) and isinstance(p.content, str)
            ]
            if texts:
                return "\n".join(texts)
    return ""


def system_text(messages: Sequence[ModelMessage]) -> str:
    parts: list[str] = []
    for message in messages:
        if isinstance(message, ModelRequest):
            parts.extend(p.content for p in message.parts if isinstance(p, SystemPromptPart))
            if message.instructions:
                parts.append(message.instructions)
    return "\n".join(parts)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_LEADING_LABEL = re.compile(r"^[A-Za-z][\w ]{0,30}:\s+")  # `Task: `, `Debate topic: `


def _task_excerpt(prompt: str, words: int = 10) -> str:
    """The first words of the prompt's first non-empty line, without its label: what the reply is about."""
    line = next((ln.strip() for ln in prompt.splitlines() if ln.strip()), "")
    line = _LEADING_LABEL.sub("", line, count=1).strip()
    cut = line.split()[:words]
    return " ".join(cut) + (" ..." if len(line.split()) > words else "")


class _SchemaFiller:
    """Builds a deterministic instance of a JSON schema from a seed string.

    Strings are short sentences of the role about the task, naming the choices made before them in
    the same object (a verdict names its winner); an array no minimum asks for is empty when the
    object's yes/no before it said yes (an approval lists no issues)."""

    def __init__(self, seed: str, role: str, task: str = "") -> None:
        self._bytes = bytes.fromhex(_digest(seed))
        self._counter = itertools.count()
        self._seed = seed
        self._role = role
        self._task = task

    def _byte(self) -> int:
        return self._bytes[next(self._counter) % len(self._bytes)]

    def fill(
        self, schema: Mapping[str, Any], name: str = "", siblings: Mapping[str, Any] | None = None
    ) -> Any:
        siblings = siblings or {}
        if schema.get("enum"):
            return schema["enum"][self._byte() % len(schema["enum"])]
        kind = schema.get("type", "object" if "properties" in schema or not name else "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "string")
        if kind == "object":
            filled: dict[str, Any] = {}
            for key, sub in schema.get("properties", {}).items():
                filled[key] = self.fill(sub, key, filled)
            return filled
        if kind == "array":
            said_yes = any(value is True for value in siblings.values())
            least = int(schema.get("minItems", 0 if said_yes else 1))
            count = max(least, min(0 if said_yes else 2, int(schema.get("maxItems", 2))))
            item = schema.get("items", {"type": "string"})
            return [self.fill(item, f"{name} {index + 1}".strip()) for index in range(count)]
        if kind == "boolean":
            # Checkers approve three times in four, deterministically per input.
            return self._byte() % 4 != 0
        if kind == "number":
            return round(0.55 + (self._byte() % 41) / 100, 2)
        if kind == "integer":
            low, high = int(schema.get("minimum", 0)), int(schema.get("maximum", 9))
            return low + self._byte() % (high - low + 1)
        return self._sentence(name, siblings)

    def _sentence(self, name: str, siblings: Mapping[str, Any]) -> str:
        opening = _ROLE_OPENINGS.get(self._role, self._role.capitalize() or "Answer")
        about = f" on {self._task}" if self._task else ""
        chosen = [f"{key} {value}" for key, value in siblings.items() if isinstance(value, str | bool)]
        said = f": {', '.join(chosen)}" if chosen else ""
        tag = _digest(self._seed + name + str(next(self._counter)))[:6]
        return f"{opening}{about}{said} [{tag}]"


def _test_reply(role: str, messages: list[ModelMessage]) -> str:
    prompt = prompt_text(messages)
    seed = f"{role}\n{prompt}"
    schema = requested_schema(prompt)
    if schema is not None:
        return json.dumps(_SchemaFiller(seed, role, _task_excerpt(prompt, 8)).fill(schema), sort_keys=True)
    opening = _ROLE_OPENINGS.get(role, role.capitalize() if role else "Answer")
    digest = _digest(seed)
    confidence = 0.5 + int(digest[8:10], 16) / 512
    used = _tool_results(messages)
    tools = f"\nTool results: {'; '.join(used)}" if used else ""
    return f"{opening}: {_task_excerpt(prompt)} [{digest[:8]}]{tools}\nConfidence: {confidence:.2f}"


def _tool_results(messages: Sequence[ModelMessage]) -> list[str]:
    """`name: result` for each tool return in the request the model answers now."""
    last = messages[-1] if messages else None
    if not isinstance(last, ModelRequest):
        return []
    return [
        f"{part.tool_name}: {part.model_response_str()}"
        for part in last.parts
        if isinstance(part, ToolReturnPart)
    ]


def _tool_calls(role: str, messages: Sequence[ModelMessage], info: AgentInfo) -> list[ToolCallPart]:
    """As pydantic-ai's `TestModel`: offered tools, a first turn calls each once, with arguments made
    from its parameters' JSON schema; once the tools have answered (the request holds their returns),
    the reply is text. Arguments are a pure function of the role, prompt and tool, like the replies."""
    if not info.function_tools or _tool_results(messages):
        return []
    prompt = prompt_text(messages)
    return [
        ToolCallPart(
            tool.name,
            _tool_args(tool, f"{role}\n{prompt}\n{tool.name}", role, prompt),
            tool_call_id=f"test_{index}_{tool.name}",
        )
        for index, tool in enumerate(info.function_tools)
    ]


def _tool_args(tool: ToolDefinition, seed: str, role: str, prompt: str) -> dict[str, Any]:
    args = _SchemaFiller(seed, role, _task_excerpt(prompt, 8)).fill(tool.parameters_json_schema)
    return args if isinstance(args, dict) else {}


class OfflineModel(FunctionModel):
    """A `FunctionModel` that streams too, and counts a streamed reply's tokens as an unstreamed one's
    (pydantic-ai's estimate of a stream leaves the prompt out), so a step's row is the same either way."""

    def streamed_usage(self, messages: list[ModelMessage], response: ModelResponse) -> RequestUsage:
        return _estimate_usage([*messages, response])


def _pieces(text: str) -> list[str]:
    """The reply in word-sized pieces, as a provider streams it (joined, they are the reply)."""
    return re.findall(r"\S+\s*|\s+", text) or [text]


def make_test_model(role: str = "generalist") -> FunctionModel:
    """The offline `test` model for an agent of `role`.

    Offered tools, it calls each once (arguments made from the tool's JSON schema), then answers in
    text with their results, as pydantic-ai's `TestModel` does.
    The reply is a pure function of the role and the prompt: a role-specific opening, the
    first words of the task, a short digest and a 'Confidence: 0.xx' line, so outputs are
    stable and checkable, and agents of one role given one prompt agree (votes mean something).
    When the prompt carries a JSON schema (`json_instruction`), the reply is a valid instance
    of it: checker verdicts, judge decisions and plans parse as the topologies expect.
    """

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if calls := _tool_calls(role, messages, info):
            return ModelResponse(parts=list(calls))
        return ModelResponse(parts=[TextPart(_test_reply(role, messages))])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if calls := _tool_calls(role, messages, info):
            yield {
                index: DeltaToolCall(call.tool_name, call.args_as_json_str(), tool_call_id=call.tool_call_id)
                for index, call in enumerate(calls)
            }
            return
        for piece in _pieces(_test_reply(role, messages)):
            yield piece

    return OfflineModel(reply, stream_function=stream, model_name="test")


FAILURE_KINDS = ("rate_limit", "overloaded", "server_error", "timeout", "disconnect", "auth", "bad_request")


def _raise_failure(kind: str, model_name: str) -> None:
    """Raise the pydantic-ai error a real provider adapter raises for this kind of failure."""
    # Each a category `for_category` takes; as a dict mypy would join them to their common base.
    http: dict[str, tuple[Any, int, dict[str, str] | None]] = {
        "rate_limit": (ModelRateLimitError, 429, {"retry-after": "0.01"}),
        "overloaded": (ModelOverloadedError, 529, None),
        "server_error": (ModelServerError, 503, None),
        "auth": (ModelAuthenticationError, 401, None),
        "bad_request": (ModelRequestRejectedError, 400, None),
    }
    if kind in http:
        category, status, headers = http[kind]
        body = {"error": f"scripted {kind}"}
        raise ModelHTTPError.for_category(
            category, status_code=status, model_name=model_name, body=body, headers=headers
        )
    if kind == "timeout":
        raise ModelTimeoutError(model_name, "scripted: request timed out")
    if kind == "disconnect":
        raise ModelConnectionError(model_name, "scripted: server disconnected without sending a response")
    raise ValueError(f"unknown failure kind {kind!r}; choose one of {FAILURE_KINDS}")


@dataclass(frozen=True)
class ScriptedCall:
    """What the scripted model saw on one call."""

    index: int
    prompt: str
    system: str
    failed: str | None


@dataclass
class ScriptedModel:
    """A scripted model for tests and benchmarks, exposed as a pydantic-ai model via `.model`.

    * `replies`: a function of the prompt (and call index) or a list cycled through; default
      echoes a digest like the `test` model.
    * `latency`: seconds slept per call (cancellable, like a network wait).
    * `chunk_delay`: when streamed, seconds slept before each word-sized piece of the reply.
    * `failures`: call index → failure kind (see `FAILURE_KINDS`), or `failure_rate` with a
      seeded RNG for random transient faults.
    Every call is recorded in `calls`; `max_in_flight` records the peak concurrency seen.
    """

    replies: Callable[[str, int], str] | Sequence[str] | None = None
    latency: float = 0.0
    chunk_delay: float = 0.0
    failures: Mapping[int, str] = field(default_factory=dict)
    failure_rate: float = 0.0
    failure_kinds: Sequence[str] = ("rate_limit", "server_error", "timeout", "disconnect")
    seed: int = 0
    name: str = "scripted"
    calls: list[ScriptedCall] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self.model = OfflineModel(self._respond, stream_function=self._stream, model_name=self.name)

    def _reply_for(self, prompt: str, index: int) -> str:
        if self.replies is None:
            return f"reply to: {_task_excerpt(prompt)} [{_digest(prompt)[:8]}]"
        if callable(self.replies):
            return self.replies(prompt, index)
        return self.replies[index % len(self.replies)]

    async def _respond(self, messages: list[ModelMessage], _info: AgentInfo) -> ModelResponse:
        prompt, system = prompt_text(messages), system_text(messages)
        with self._lock:
            index = len(self.calls)
            failure = self.failures.get(index)
            if failure is None and self.failure_rate and self._rng.random() < self.failure_rate:
                failure = self._rng.choice(list(self.failure_kinds))
            self.calls.append(ScriptedCall(index, prompt, system, failure))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if failure is not None:
                _raise_failure(failure, self.name)
            return ModelResponse(parts=[TextPart(self._reply_for(prompt, index))])
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        response = await self._respond(messages, info)
        text = "".join(p.content for p in response.parts if isinstance(p, TextPart))
        for piece in _pieces(text):
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            yield piece

    @property
    def prompts(self) -> list[str]:
        return [c.prompt for c in self.calls]
