"""One model call through pydantic-ai: messages in, text, token usage and cost out; provider errors
mapped to qmcp's. `call_model` (`_calling.py`) sends here every call but an offline model's plain one.

Calls go straight to `pydantic_ai.direct.model_request` (about 0.3 ms of overhead) instead of
`Agent.run` (about 4.5 ms), because topologies make many short calls. With a tracer, each request
(a tool loop makes several) is a `chat <model>` span of the GenAI conventions: pydantic-ai's own
instrumentation names providers its own way (`google-gla`, `bedrock`), not the conventions' way.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx2
from opentelemetry.trace import Tracer
from pydantic_ai.direct import model_request, model_request_stream
from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelHTTPError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelRequestRejectedError,
    ModelRequestTimeout,
    ModelServerError,
    ModelUnavailableError,
    UnexpectedModelBehavior,
)
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    SystemPromptPart,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.settings import ModelSettings

from ...redaction import redact
from ..errors import ModelError, PermanentModelError, QmcpError, TransientModelError
from ..models import Models, storable_text
from ._calling import offline_cost
from ._offline import OfflineFunctionModel
from ._registry import OPENAI_COMPATIBLE_PROVIDERS
from ._traced import _server_attributes as _server_attributes  # read here by tests
from ._traced import response_attributes, traced
from ._types import ChatMessage, ModelReply, ToolCallHook, ToolSpec

__all__ = ["call_pydantic_model", "classify_error"]


def _to_messages(system: str | None, messages: Sequence[ChatMessage]) -> list[ModelMessage]:
    out: list[ModelMessage] = []
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            out.append(ModelResponse(parts=[TextPart(message["content"])]))
            continue
        parts: list[Any] = [UserPromptPart(message["content"])]
        if index == 0 and system:
            parts.insert(0, SystemPromptPart(system))
        out.append(ModelRequest(parts=parts))
    return out


_UNPRICED: set[str] = set()


def _cost(model: Model, model_string: str, response: ModelResponse) -> float:
    usage = response.usage
    if isinstance(model, OfflineFunctionModel):  # priced as on the native path
        return offline_cost(model_string, usage.input_tokens, usage.output_tokens)
    config = Models.get(model_string)
    if config is not None:
        return config.cost(usage.input_tokens, usage.output_tokens)
    if model_string in _UNPRICED:
        return 0.0
    try:
        return float(response.cost().total_price)
    except (LookupError, ValueError, AssertionError):
        _UNPRICED.add(model_string)  # the price list has no entry: don't search it on every call
        return 0.0


async def call_pydantic_model(
    model: Model,
    model_string: str,
    *,
    system: str | None,
    messages: Sequence[ChatMessage],
    settings: ModelSettings,
    timeout_seconds: float | None = None,
    tools: Sequence[ToolSpec] = (),
    max_tool_calls: int = 10,
    on_tool_call: ToolCallHook | None = None,
    on_delta: Callable[[str], None] | None = None,
    tracer: Tracer | None = None,
) -> ModelReply:
    """`call_model` (`_calling.py`, which documents the arguments) for a pydantic-ai model: a
    provider's, or an offline model in the tool loop. Each request of a tool loop is its own span."""
    started = time.perf_counter()
    history = _to_messages(system, messages)
    by_name = {tool.definition.name: tool for tool in tools}
    parameters = ModelRequestParameters(function_tools=[t.definition for t in tools]) if tools else None
    log: list[dict[str, Any]] = []
    input_tokens = output_tokens = 0
    cost = 0.0
    try:
        async with asyncio.timeout(timeout_seconds):
            while True:
                if tracer is not None:
                    response = await _traced(
                        tracer, model, model_string, history, settings, parameters, on_delta
                    )
                else:
                    response = await _request(model, history, settings, parameters, on_delta)
                input_tokens += response.usage.input_tokens
                output_tokens += response.usage.output_tokens
                cost += _cost(model, model_string, response)
                calls = [p for p in response.parts if isinstance(p, ToolCallPart)]
                if not calls:
                    break
                history.append(response)
                history.append(
                    ModelRequest(
                        parts=[await _run_tool(c, by_name, log, max_tool_calls, on_tool_call) for c in calls]
                    )
                )
                if len(log) >= max_tool_calls:
                    parameters = None  # withdraw the tools: the next reply must be text
    except QmcpError:
        raise
    except Exception as error:
        raise classify_error(error, model_string, base_url=getattr(model, "base_url", None)) from error
    # NUL cannot be stored by PostgreSQL: clean it here, so every runner, database and replay sees one text
    text = storable_text("".join(p.content for p in response.parts if isinstance(p, TextPart)))
    return ModelReply(
        text=text,
        model=model_string,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost,
        latency_ms=(time.perf_counter() - started) * 1000,
        tool_calls=tuple(log),
    )


async def _request(
    model: Model,
    history: list[ModelMessage],
    settings: ModelSettings,
    parameters: ModelRequestParameters | None,
    on_delta: Callable[[str], None] | None,
    instrument: bool | None = None,
) -> ModelResponse:
    """One request. `instrument` is pydantic-ai's own instrumentation: None leaves it to the host's
    `Agent.instrument_all()`; False when qmcp makes the request's span itself, so there is one."""
    if on_delta is None:
        return await model_request(
            model,
            history,
            model_settings=settings,
            model_request_parameters=parameters,
            instrument=instrument,
        )
    return await _streamed(model, history, settings, parameters, on_delta, instrument)


async def _traced(
    tracer: Tracer,
    model: Model,
    model_string: str,
    history: list[ModelMessage],
    settings: ModelSettings,
    parameters: ModelRequestParameters | None,
    on_delta: Callable[[str], None] | None,
) -> ModelResponse:
    """One request in a `chat <model>` client span (`traced`), with what the provider said of its answer."""

    def request() -> Awaitable[ModelResponse]:
        return _request(model, history, settings, parameters, on_delta, instrument=False)

    return await traced(
        tracer,
        model_string,
        settings=settings,
        base_url=getattr(model, "base_url", None),
        request=request,
        attributes=_response_attributes,
    )


def _response_attributes(response: ModelResponse) -> dict[str, Any]:
    """pydantic-ai normalises the finish reason to the conventions' values; else the provider's own."""
    reason = response.finish_reason or (response.provider_details or {}).get("finish_reason")
    return response_attributes(
        response.usage.input_tokens,
        response.usage.output_tokens,
        response.model_name,
        response.provider_response_id,
        reason,
    )


async def _streamed(
    model: Model,
    history: list[ModelMessage],
    settings: ModelSettings,
    parameters: ModelRequestParameters | None,
    on_delta: Callable[[str], None],
    instrument: bool | None = None,
) -> ModelResponse:
    """One request, streamed: text deltas go to `on_delta` as they arrive; the whole response is returned."""
    if isinstance(model, FunctionModel) and model.stream_function is None:
        return await _unstreamed(model, history, settings, parameters, on_delta, instrument)
    try:
        async with model_request_stream(
            model,
            history,
            model_settings=settings,
            model_request_parameters=parameters,
            instrument=instrument,
        ) as stream:
            async for event in stream:
                text = ""
                if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                    text = event.part.content
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    text = event.delta.content_delta
                if text:
                    on_delta(text)
            response = stream.get()
    except NotImplementedError:  # pydantic-ai's answer from a model that cannot stream: one delta, unstreamed
        return await _unstreamed(model, history, settings, parameters, on_delta, instrument)
    recount = getattr(model, "streamed_usage", None)  # the offline models count as when not streamed
    if recount is not None:
        response.usage = recount(history, response)
    return response


async def _unstreamed(
    model: Model,
    history: list[ModelMessage],
    settings: ModelSettings,
    parameters: ModelRequestParameters | None,
    on_delta: Callable[[str], None],
    instrument: bool | None = None,
) -> ModelResponse:
    """A model that cannot stream: its whole reply is the one delta."""
    response = await model_request(
        model, history, model_settings=settings, model_request_parameters=parameters, instrument=instrument
    )
    text = "".join(p.content for p in response.parts if isinstance(p, TextPart))
    if text:
        on_delta(text)
    return response


async def _run_tool(
    call: ToolCallPart,
    tools: Mapping[str, ToolSpec],
    log: list[dict[str, Any]],
    max_tool_calls: int,
    on_tool_call: ToolCallHook | None,
) -> ToolReturnPart:
    args = call.args_as_dict()
    entry: dict[str, Any] = {"tool": call.tool_name, "args": args, "result": None, "error": None}
    tool = tools.get(call.tool_name)
    if len(log) >= max_tool_calls:
        entry["error"] = f"max_tool_calls ({max_tool_calls}) reached; answer without tools"
    elif tool is None:
        entry["error"] = f"unknown tool {call.tool_name!r}; available: {', '.join(tools) or 'none'}"
    else:
        try:
            if on_tool_call is not None:
                await on_tool_call(call.tool_name, args)
            entry["result"] = await tool.call(args)
        except PermissionError as denied:
            entry["error"] = f"denied: {denied}"
        except Exception as failure:  # the tool's own failure goes back to the model, not up the stack
            entry["error"] = f"{type(failure).__name__}: {failure}"
    log.append(entry)
    if entry["error"] is not None:
        return ToolReturnPart(
            tool_name=call.tool_name,
            content=entry["error"],
            tool_call_id=call.tool_call_id,
            outcome="retried",
        )
    return ToolReturnPart(tool_name=call.tool_name, content=entry["result"], tool_call_id=call.tool_call_id)


def classify_error(error: BaseException, model: str, *, base_url: str | None = None) -> ModelError:
    """Map a provider/transport error to transient (retry) or permanent (fail at once).

    A server on this machine that refuses the connection is not running: waiting will not start it,
    so that fails at once, saying where nothing answered and what usually starts it.
    """
    status = getattr(error, "status_code", None)
    retry_after = getattr(error, "retry_after", None)
    # A provider may quote the key it was sent: no key reaches a step row, a log line or a span.
    text = redact(f"{type(error).__name__}: {error}".splitlines()[0][:500])
    refused = _refused_locally(error)
    if refused is not None:
        return PermanentModelError(_not_running(model, base_url, refused), model=model)
    if base_url and isinstance(error, ModelConnectionError | httpx2.TransportError):
        text = f"{text} (reaching {redact(str(base_url))})"
    transient_types = (
        ModelRateLimitError,
        ModelUnavailableError,
        ModelServerError,
        ModelConnectionError,
        ModelRequestTimeout,
        TimeoutError,
        httpx2.TransportError,
    )
    permanent_types = (ModelRequestRejectedError, ModelQuotaExceededError, UnexpectedModelBehavior)
    if isinstance(error, transient_types):
        return TransientModelError(text, model=model, status_code=status, retry_after=retry_after)
    if isinstance(error, permanent_types):
        return PermanentModelError(text, model=model, status_code=status)
    if isinstance(error, ModelHTTPError):
        if error.status_code in (408, 409, 425, 429) or error.status_code >= 500:
            return TransientModelError(text, model=model, status_code=status, retry_after=retry_after)
        return PermanentModelError(text, model=model, status_code=status)
    if isinstance(error, ModelAPIError):
        return TransientModelError(text, model=model, status_code=status, retry_after=retry_after)
    return PermanentModelError(text, model=model, status_code=status)


_LOOPBACK = ("127.", "::1", "localhost")


def _refused_locally(error: BaseException) -> str | None:
    """`host:port` when the error comes from a connection refused by this machine, else None."""
    seen = 0
    cause: BaseException | None = error
    while cause is not None and seen < 12:
        if isinstance(cause, ConnectionRefusedError):
            address = re.search(r"\('?([^',]+)'?, (\d+)", str(cause))
            if address and address.group(1).startswith(_LOOPBACK):
                return f"{address.group(1)}:{address.group(2)}"
            return None
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return None


def _not_running(model: str, base_url: str | None, address: str) -> str:
    provider = model.partition(":")[0]
    where = str(base_url).rstrip("/") if base_url else address
    if provider == "ollama":
        hint = "is `ollama serve` running? (OLLAMA_BASE_URL sets another address)"
    elif provider in OPENAI_COMPATIBLE_PROVIDERS:
        variable = provider.upper().replace("-", "_") + "_BASE_URL"
        hint = f"is the server running? ({variable} or the agent's base_url set another address)"
    else:
        hint = "is the server running?"
    return f"nothing answers at {where} ({address}, for {model}): connection refused; {hint}"
