"""The offline models as pydantic-ai models: the adapter the tool loop (and pydantic-ai code) uses.

The models themselves live in `_native.py`, in qmcp's own types, and `call_model` answers their
plain-text calls there without pydantic-ai. A call with tools needs pydantic-ai's machinery, so it
goes through `function_model(offline)`: a `FunctionModel` that turns pydantic-ai's messages into an
`OfflineRequest`, asks the same `respond` (or the `test` model's synchronous `reply`), and turns the
answer back, so one function derives a reply on both paths.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
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
from pydantic_ai.usage import RequestUsage

from ._native import (
    FAILURE_KINDS,
    OfflineModel,
    OfflineReply,
    OfflineRequest,
    OfflineTool,
    ScriptedFailure,
    TestModel,
    test_model,
)

__all__ = ["OfflineFunctionModel", "function_model", "make_test_model", "prompt_text", "system_text"]


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


def _tool_results(messages: Sequence[ModelMessage]) -> tuple[str, ...]:
    """`name: result` for each tool return in the request the model answers now."""
    last = messages[-1] if messages else None
    if not isinstance(last, ModelRequest):
        return ()
    return tuple(
        f"{part.tool_name}: {part.model_response_str()}"
        for part in last.parts
        if isinstance(part, ToolReturnPart)
    )


def offline_request(messages: Sequence[ModelMessage], info: AgentInfo) -> OfflineRequest:
    """What an offline model is asked, read from pydantic-ai's messages."""
    return OfflineRequest(
        prompt=prompt_text(messages),
        system=system_text(messages),
        tools=tuple(OfflineTool(t.name, t.parameters_json_schema) for t in info.function_tools),
        tool_results=_tool_results(messages),
    )


def _response(reply: OfflineReply) -> ModelResponse:
    if reply.tool_calls:
        return ModelResponse(
            parts=[ToolCallPart(call.name, call.args, tool_call_id=call.call_id) for call in reply.tool_calls]
        )
    usage = RequestUsage(input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
    return ModelResponse(parts=[TextPart(reply.text)], usage=usage)  # no tokens: FunctionModel estimates


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


class OfflineFunctionModel(FunctionModel):
    """A `FunctionModel` over an offline model, that streams too, and counts a streamed reply's tokens as
    an unstreamed one's (pydantic-ai's estimate of a stream leaves the prompt out), so a step's row is the
    same either way."""

    offline: OfflineModel

    def streamed_usage(self, messages: list[ModelMessage], response: ModelResponse) -> RequestUsage:
        return _estimate_usage([*messages, response])


def function_model(offline: OfflineModel) -> OfflineFunctionModel:
    """`offline` as a pydantic-ai model; its injected failures raise the errors a provider's adapter would."""

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        try:
            return _response(await offline.respond(offline_request(messages, info)))
        except ScriptedFailure as failure:
            _raise_failure(failure.kind, failure.model_name)
            raise

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        assert isinstance(offline, TestModel)
        return _response(offline.reply(offline_request(messages, info)))

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        request = offline_request(messages, info)
        if isinstance(offline, TestModel) and (found := offline.reply(request)).tool_calls:
            calls = [ToolCallPart(c.name, c.args, tool_call_id=c.call_id) for c in found.tool_calls]
            yield {
                index: DeltaToolCall(call.tool_name, call.args_as_json_str(), tool_call_id=call.tool_call_id)
                for index, call in enumerate(calls)
            }
            return
        try:
            async for piece in offline.stream(request):
                yield piece
        except ScriptedFailure as failure:
            _raise_failure(failure.kind, failure.model_name)
            raise

    # The test model waits on nothing: a plain function, as its `function` always was.
    function = reply if isinstance(offline, TestModel) else respond
    model = OfflineFunctionModel(function, stream_function=stream, model_name=offline.name)
    model.offline = offline
    return model


def make_test_model(role: str = "generalist") -> FunctionModel:
    """The offline `test` model for an agent of `role`, as a pydantic-ai model (`_native.TestModel`)."""
    return test_model(role).pydantic_model
