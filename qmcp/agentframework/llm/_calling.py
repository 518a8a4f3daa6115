"""`call_model`: one model call; an offline model's plain-text call answered without pydantic-ai.

The offline models (`test`, `ScriptedModel`, `recorded:` fixtures: `_native.py`) answer a call
without tools here, in qmcp's own types: no pydantic-ai import, no message objects, no request
preparation (pydantic-ai's `model_request` cost 110–160 µs a call, about 45 % of a pipeline step).
A call with tools, and any other model, goes through pydantic-ai (`_call.py`): its tool loop runs
over the same offline model wrapped as a pydantic-ai model (`_offline.py`).

Both paths give one reply, the same token counts (`estimate_usage`, pydantic-ai's estimate), the
same cost (an offline model's calls cost what `Models` prices its model string at, else nothing),
the same `chat <model>` span (`traced`), streamed deltas and errors (`ScriptedFailure.error` is
`classify_error` of the error a provider adapter raises). `tests/llm/test_offline_native.py` holds
them equal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ModelError, QmcpError, TransientModelError
from ..models import Models, storable_text
from ._native import OfflineModel, OfflineRequest, ScriptedFailure, estimate_usage
from ._types import ChatMessage, ModelReply, ToolCallHook, ToolSpec

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer
    from pydantic_ai.models import Model
    from pydantic_ai.settings import ModelSettings

__all__ = ["call_model", "offline_cost"]

T = TypeVar("T")


async def call_model(
    model: Model | OfflineModel,
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
    """Make one request and account for it; raises `TransientModelError` or `PermanentModelError`.

    With `tools`, runs the tool loop: tool calls are executed and returned to the model until
    it answers in text; after `max_tool_calls` calls the tools are withdrawn and the model is
    told to answer. Every call is reported in `ModelReply.tool_calls`.

    With `on_delta`, the reply is streamed: each new piece of text is passed to it as the model writes
    it (a model that cannot stream sends its reply as one piece). The reply returned is the same.

    With `tracer`, each request is a `chat <model>` span (`traced`).
    """
    if isinstance(model, OfflineModel):
        if not tools:
            return await _call_offline(
                model, model_string, system, messages, settings, timeout_seconds, on_delta, tracer
            )
        model = model.pydantic_model  # the tool loop is pydantic-ai's
    from ._call import call_pydantic_model

    return await call_pydantic_model(
        model,
        model_string,
        system=system,
        messages=messages,
        settings=settings,
        timeout_seconds=timeout_seconds,
        tools=tools,
        max_tool_calls=max_tool_calls,
        on_tool_call=on_tool_call,
        on_delta=on_delta,
        tracer=tracer,
    )


def offline_cost(model_string: str, input_tokens: int, output_tokens: int) -> float:
    """What an offline model's call costs: the price `Models` gives its model string, else nothing
    (a test double named like a real model is not priced from pydantic-ai's price list)."""
    config = Models.get(model_string)
    return 0.0 if config is None else config.cost(input_tokens, output_tokens)


async def _call_offline(
    model: OfflineModel,
    model_string: str,
    system: str | None,
    messages: Sequence[ChatMessage],
    settings: ModelSettings,
    timeout_seconds: float | None,
    on_delta: Callable[[str], None] | None,
    tracer: Tracer | None,
) -> ModelReply:
    started = time.perf_counter()
    prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    request = OfflineRequest(prompt, system or "")
    # No closures on the untraced path: a 10,000-member ensemble makes this call 10,000 times at once.
    answer = (
        _answer(model, request, system, messages, on_delta)
        if tracer is None
        else _traced(
            tracer, model, model_string, settings, lambda: _answer(model, request, system, messages, on_delta)
        )
    )
    try:
        # A model call is where the loop runs its other tasks and a cancel lands, as with every real
        # model: an offline model that waits on nothing would otherwise hold the loop from a run's
        # first step to its last (no heartbeat, no cancel, no other request of a server). One that
        # always waits yields there: its wait starts now, not behind the loop's other work (a batch's
        # commit), which idled a fan-out's model slots about 1 ms a wave.
        if not model.always_waits(on_delta is not None):
            await asyncio.sleep(0)
        if timeout_seconds is None or not model.may_outlast(timeout_seconds, on_delta is not None):
            found = await answer
        else:
            async with asyncio.timeout(timeout_seconds):
                found = await answer
    except QmcpError:
        raise
    except Exception as error:
        raise _offline_error(error, model_string) from error
    finally:
        answer.close()  # not awaited when the call was cancelled before it began
    text, input_tokens, output_tokens = found
    return ModelReply(
        # NUL cannot be stored by PostgreSQL: clean it here, so every runner, database and replay sees one text
        text=storable_text(text),
        model=model_string,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=offline_cost(model_string, input_tokens, output_tokens),
        latency_ms=(time.perf_counter() - started) * 1000,
    )


async def _answer(
    model: OfflineModel,
    request: OfflineRequest,
    system: str | None,
    messages: Sequence[ChatMessage],
    on_delta: Callable[[str], None] | None,
) -> tuple[str, int, int]:
    """The model's reply to `request` with its (input, output) tokens."""
    if on_delta is None:
        reply = await model.respond(request)
        text = reply.text
        if reply.input_tokens or reply.output_tokens:  # known (recorded); else estimated
            return text, reply.input_tokens, reply.output_tokens
    else:  # a stream's tokens are estimated, as pydantic-ai's adapter counts them (`_offline.py`)
        parts = []
        async for piece in model.stream(request):
            if piece:
                on_delta(piece)
            parts.append(piece)
        text = "".join(parts)
    return (text, *estimate_usage(system, messages, text))


def _traced(
    tracer: Tracer,
    model: OfflineModel,
    model_string: str,
    settings: ModelSettings,
    request: Callable[[], Awaitable[tuple[str, int, int]]],
) -> Coroutine[Any, Any, tuple[str, int, int]]:
    """The offline call in its `chat <model>` span; OpenTelemetry's and prometheus' modules load only here
    (`_traced.py`), not for a Metaflow task's untraced call."""
    from ._traced import response_attributes, traced

    def attributes(found: tuple[str, int, int]) -> dict[str, Any]:
        return response_attributes(found[1], found[2], model.name)

    return traced(
        tracer, model_string, settings=settings, base_url=None, request=request, attributes=attributes
    )


def _offline_error(error: Exception, model_string: str) -> ModelError:
    if isinstance(error, ScriptedFailure):
        return error.error(model_string)
    if isinstance(error, TimeoutError):  # the call's own timeout
        from ...redaction import redact

        text = redact(f"{type(error).__name__}: {error}".splitlines()[0][:500])
        return TransientModelError(text, model=model_string)
    from ._call import classify_error  # anything else a scripted reply function raised: classified as any

    return classify_error(error, model_string)
