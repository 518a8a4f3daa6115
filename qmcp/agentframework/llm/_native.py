"""The offline models, in qmcp's own types: `test` (deterministic, role-aware) and `ScriptedModel`.

Free of pydantic-ai: a plain-text call of an offline model (`test`, a `ScriptedModel`, a `recorded:`
fixture) is answered here, by `_calling.call_model`, without importing it (half of a new process's
start-up, and about 45 % of a pipeline step's cost when its model request went through it).
pydantic-ai is imported only when a step needs its machinery: a call with tools runs pydantic-ai's
tool loop over the same model wrapped as a pydantic-ai `FunctionModel` (`_offline.py`), which
answers with the very same functions (`OfflineModel.respond`), so both paths give one reply.

Token usage is estimated as pydantic-ai's `FunctionModel` estimates it (`estimate_usage`), so a
step's row is the same on either path; `tests/llm/test_offline_native.py` checks the two agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ModelError, PermanentModelError, TransientModelError
from ._prompts import requested_schema
from ._types import ChatMessage

if TYPE_CHECKING:
    from pydantic_ai.models.function import FunctionModel

__all__ = [
    "FAILURE_KINDS",
    "OfflineModel",
    "OfflineReply",
    "OfflineRequest",
    "OfflineTool",
    "OfflineToolCall",
    "ScriptedCall",
    "ScriptedFailure",
    "ScriptedModel",
    "TestModel",
    "estimate_tokens",
    "estimate_usage",
    "pieces",
    "scripted_failure",
    "test_model",
]


# -- what an offline model is asked, and what it answers ------------------------------------------


@dataclass(frozen=True)
class OfflineTool:
    """A tool offered to the model: its name and its parameters' JSON schema."""

    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class OfflineToolCall:
    name: str
    args: dict[str, Any]
    call_id: str


@dataclass(frozen=True)
class OfflineRequest:
    """One request: the last user prompt, the system text, the tools offered and, when the request
    carries tool returns, their `name: result` lines (only the tool loop, through pydantic-ai, has them)."""

    prompt: str
    system: str = ""
    tools: tuple[OfflineTool, ...] = ()
    tool_results: tuple[str, ...] = ()


@dataclass(frozen=True)
class OfflineReply:
    """Text, or tool calls; tokens when the model knows them (a recording), else 0 and 0: estimated."""

    text: str = ""
    tool_calls: tuple[OfflineToolCall, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0


class OfflineModel(ABC):
    """A model answered in-process, without network or key. Subclasses implement `respond`.

    Register one with `register_model(name, model)`; `call_model` answers its plain-text calls
    natively and its calls with tools through pydantic-ai (`pydantic_model`).
    """

    name: str = "offline"

    def waits(self, streamed: bool) -> bool:
        """Whether answering may wait on anything (sleep, I/O). One that does not cannot be timed out
        (a timeout is delivered at an await), so `call_model` sets none for it: no timer per call."""
        return True

    def may_outlast(self, seconds: float, streamed: bool) -> bool:
        """Whether answering may take `seconds` or longer: only then does `call_model` set a timer for
        its timeout (one timer per call, in the event loop's heap of timers)."""
        return self.waits(streamed)

    def always_waits(self, streamed: bool) -> bool:
        """Whether answering surely suspends (a sleep) before it replies or fails. `call_model` first
        lets the loop run its other tasks for a model that may answer at once; one that always waits
        starts its wait at once instead, as a provider's request does."""
        return False

    @abstractmethod
    async def respond(self, request: OfflineRequest) -> OfflineReply:
        """The whole reply to `request`."""

    async def stream(self, request: OfflineRequest) -> AsyncIterator[str]:
        """The reply in word-sized pieces, as a provider streams it (joined, they are the reply's text)."""
        reply = await self.respond(request)
        for piece in pieces(reply.text):
            yield piece

    @property
    def pydantic_model(self) -> FunctionModel:
        """This model as a pydantic-ai `FunctionModel` (imports pydantic-ai): for the tool loop."""
        cached: FunctionModel | None = self.__dict__.get("_pydantic_model")
        if cached is None:
            from ._offline import function_model

            cached = self.__dict__["_pydantic_model"] = function_model(self)
        return cached


# -- token estimate ------------------------------------------------------------------------------

_PUNCTUATION = '",.:'
"""What pydantic-ai's estimate splits on besides whitespace (its pattern is `[\\s",.:]+`)."""

ESTIMATE_OVERHEAD_TOKENS = 50
"""What pydantic-ai's estimate adds to every request's input (its "overhead of Gemini and OpenAI calls")."""


def estimate_tokens(text: str) -> int:
    """Tokens of `text` as pydantic-ai's test models count them: pieces split on whitespace and
    `",.:`, an empty text none, a blank one 1 (`pydantic_ai._utils.estimate_string_tokens`)."""
    if not text:
        return 0
    stripped = text.strip()
    if not stripped:
        return 1
    # Its regular expression's split, counted 3x faster (a step counts its system prompt, prompt and
    # reply): the punctuation made spaces, `str.split` counts the pieces between whitespace runs
    # (`str.split` and `\s` agree on every code point), and a text that begins or ends with
    # punctuation has an empty piece there.
    spaced = stripped.replace('"', " ").replace(",", " ").replace(".", " ").replace(":", " ")
    return len(spaced.split()) + (stripped[0] in _PUNCTUATION) + (stripped[-1] in _PUNCTUATION)


def estimate_usage(system: str | None, messages: Sequence[ChatMessage], reply: str) -> tuple[int, int]:
    """(input, output) tokens of a plain call, as pydantic-ai's `FunctionModel` estimates them
    (`pydantic_ai.models.function._estimate_usage`): the system text and user messages are input,
    on top of 50; the history's assistant messages and the reply are output."""
    input_tokens = ESTIMATE_OVERHEAD_TOKENS + (estimate_tokens(system) if system else 0)
    output_tokens = estimate_tokens(reply)
    for message in messages:
        if message["role"] == "assistant":
            output_tokens += estimate_tokens(message["content"])
        else:
            input_tokens += estimate_tokens(message["content"])
    return input_tokens, output_tokens


def pieces(text: str) -> list[str]:
    """The reply in word-sized pieces, as a provider streams it (joined, they are the reply)."""
    return re.findall(r"\S+\s*|\s+", text) or [text]


# -- the `test` model ------------------------------------------------------------------------------

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


class TestModel(OfflineModel):
    """The offline `test` model for an agent of `role` (`test_model(role)`).

    The reply is a pure function of the role and the request: a role-specific opening, the first
    words of the task, a short digest and a 'Confidence: 0.xx' line, so outputs are stable and
    checkable, and agents of one role given one prompt agree (votes mean something). When the
    prompt carries a JSON schema (`json_instruction`), the reply is a valid instance of it: checker
    verdicts, judge decisions and plans parse as the topologies expect. Offered tools, it calls each
    once (arguments made from the tool's JSON schema), then answers in text with their results, as
    pydantic-ai's `TestModel` does.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, role: str = "generalist") -> None:
        self.role = role
        self.name = "test"

    def waits(self, streamed: bool) -> bool:
        return False

    def reply(self, request: OfflineRequest) -> OfflineReply:
        """The answer (synchronous: it waits on nothing)."""
        if request.tools and not request.tool_results:
            return OfflineReply(tool_calls=self._tool_calls(request))
        return OfflineReply(self._text(request))

    async def respond(self, request: OfflineRequest) -> OfflineReply:
        return self.reply(request)

    def _text(self, request: OfflineRequest) -> str:
        role, prompt = self.role, request.prompt
        seed = f"{role}\n{prompt}"
        schema = requested_schema(prompt)
        if schema is not None:
            return json.dumps(
                _SchemaFiller(seed, role, _task_excerpt(prompt, 8)).fill(schema), sort_keys=True
            )
        opening = _ROLE_OPENINGS.get(role, role.capitalize() if role else "Answer")
        digest = _digest(seed)
        confidence = 0.5 + int(digest[8:10], 16) / 512
        used = request.tool_results
        tools = f"\nTool results: {'; '.join(used)}" if used else ""
        return f"{opening}: {_task_excerpt(prompt)} [{digest[:8]}]{tools}\nConfidence: {confidence:.2f}"

    def _tool_calls(self, request: OfflineRequest) -> tuple[OfflineToolCall, ...]:
        """A first turn calls each offered tool once, with arguments made from its parameters' JSON
        schema: a pure function of the role, prompt and tool, like the replies."""
        role, prompt = self.role, request.prompt
        calls = []
        for index, tool in enumerate(request.tools):
            filler = _SchemaFiller(f"{role}\n{prompt}\n{tool.name}", role, _task_excerpt(prompt, 8))
            args = filler.fill(tool.parameters)
            calls.append(
                OfflineToolCall(
                    tool.name, args if isinstance(args, dict) else {}, f"test_{index}_{tool.name}"
                )
            )
        return tuple(calls)


_test_models: dict[str, TestModel] = {}


def test_model(role: str = "generalist") -> TestModel:
    """The `test` model of a role (one per role and process: it holds no state)."""
    found = _test_models.get(role)
    if found is None:
        found = _test_models.setdefault(role, TestModel(role))
    return found


test_model.__test__ = False  # type: ignore[attr-defined]  # not a pytest test function


# -- the scripted model ------------------------------------------------------------------------------

FAILURE_KINDS = ("rate_limit", "overloaded", "server_error", "timeout", "disconnect", "auth", "bad_request")

# kind → (the pydantic-ai error a real provider adapter raises for it, its HTTP status or None)
_FAILURES: dict[str, tuple[str, int | None]] = {
    "rate_limit": ("ModelRateLimitError", 429),
    "overloaded": ("ModelOverloadedError", 529),
    "server_error": ("ModelServerError", 503),
    "auth": ("ModelAuthenticationError", 401),
    "bad_request": ("ModelRequestRejectedError", 400),
    "timeout": ("ModelTimeoutError", None),
    "disconnect": ("ModelConnectionError", None),
}
_TRANSIENT_KINDS = frozenset(("rate_limit", "overloaded", "server_error", "timeout", "disconnect"))


class ScriptedFailure(Exception):
    """A failure a `ScriptedModel` was scripted to raise, as a provider would (`FAILURE_KINDS`).

    Each kind is a subclass named as the pydantic-ai error a real provider adapter raises for it
    (`scripted_failure`), saying what that error says, so logs and spans read the same on either
    path; `error()` is qmcp's classification of it, the one `classify_error` gives that pydantic-ai
    error (`_offline.py` raises that one on the pydantic-ai path)."""

    def __init__(self, kind: str, model_name: str) -> None:
        self.kind, self.model_name = kind, model_name
        self.status_code = _FAILURES[kind][1]
        self.body = {"error": f"scripted {kind}"}
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The text pydantic-ai's error says."""
        if self.kind == "timeout":
            return "scripted: request timed out"
        if self.kind == "disconnect":
            return "scripted: server disconnected without sending a response"
        return f"status_code: {self.status_code}, model_name: {self.model_name}, body: {self.body}"

    def error(self, model: str) -> ModelError:
        from ...redaction import redact

        text = redact(f"{type(self).__name__}: {self}".splitlines()[0][:500])
        if self.kind in _TRANSIENT_KINDS:
            return TransientModelError(text, model=model, status_code=self.status_code)
        return PermanentModelError(text, model=model, status_code=self.status_code)


_FAILURE_TYPES: dict[str, type[ScriptedFailure]] = {
    kind: type(name, (ScriptedFailure,), {"__module__": __name__, "__qualname__": name})
    for kind, (name, _) in _FAILURES.items()
}


def scripted_failure(kind: str, model_name: str) -> ScriptedFailure:
    """The failure of `kind` a scripted model named `model_name` raises."""
    if kind not in _FAILURES:
        raise ValueError(f"unknown failure kind {kind!r}; choose one of {FAILURE_KINDS}")
    return _FAILURE_TYPES[kind](kind, model_name)


@dataclass(frozen=True)
class ScriptedCall:
    """What the scripted model saw on one call."""

    index: int
    prompt: str
    system: str
    failed: str | None


@dataclass(eq=False)
class ScriptedModel(OfflineModel):
    """A scripted model for tests and benchmarks; register it (or `.model`, the same object) by name.

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

    @property
    def model(self) -> ScriptedModel:
        """The model to register (`register_model(name, scripted.model)`): this object itself."""
        return self

    def waits(self, streamed: bool) -> bool:
        return bool(self.latency or (streamed and self.chunk_delay))

    def may_outlast(self, seconds: float, streamed: bool) -> bool:
        # it waits `latency`, then (streamed) `chunk_delay` before each of pieces it cannot count yet
        return self.latency >= seconds or bool(streamed and self.chunk_delay)

    def always_waits(self, streamed: bool) -> bool:
        return self.latency > 0  # `respond` sleeps it before replying or failing (`stream` too)

    def _reply_for(self, prompt: str, index: int) -> str:
        if self.replies is None:
            return f"reply to: {_task_excerpt(prompt)} [{_digest(prompt)[:8]}]"
        if callable(self.replies):
            return self.replies(prompt, index)
        return self.replies[index % len(self.replies)]

    async def respond(self, request: OfflineRequest) -> OfflineReply:
        prompt = request.prompt
        with self._lock:
            index = len(self.calls)
            failure = self.failures.get(index)
            if failure is None and self.failure_rate and self._rng.random() < self.failure_rate:
                failure = self._rng.choice(list(self.failure_kinds))
            self.calls.append(ScriptedCall(index, prompt, request.system, failure))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if failure is not None:
                raise scripted_failure(failure, self.name)
            return OfflineReply(self._reply_for(prompt, index))
        finally:
            with self._lock:
                self.in_flight -= 1

    async def stream(self, request: OfflineRequest) -> AsyncIterator[str]:
        reply = await self.respond(request)
        for piece in pieces(reply.text):
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            yield piece

    @property
    def prompts(self) -> list[str]:
        return [c.prompt for c in self.calls]
