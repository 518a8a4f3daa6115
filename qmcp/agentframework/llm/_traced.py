"""A model request in a `chat <model>` client span of OpenTelemetry's GenAI conventions.

Apart from `_calling.py`, so that a call made without a tracer (a Metaflow task's prepared call) loads
neither OpenTelemetry nor prometheus: `call_model` imports this module only for a traced call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ...observability import GenAI, genai_model, genai_provider, record_failure
from ._registry import normalize_model_string

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer
    from pydantic_ai.settings import ModelSettings

__all__ = ["response_attributes", "traced"]

T = TypeVar("T")


def response_attributes(
    input_tokens: int,
    output_tokens: int,
    model_name: str | None,
    response_id: str | None = None,
    finish_reason: Any = None,
) -> dict[str, Any]:
    """What the provider said of its answer: the model that wrote it, why it stopped, its id, its tokens."""
    attributes: dict[str, Any] = {
        GenAI.USAGE_INPUT_TOKENS: input_tokens,
        GenAI.USAGE_OUTPUT_TOKENS: output_tokens,
    }
    if model_name:
        attributes[GenAI.RESPONSE_MODEL] = model_name
    if response_id:
        attributes[GenAI.RESPONSE_ID] = response_id
    if isinstance(finish_reason, str) and finish_reason:
        attributes[GenAI.RESPONSE_FINISH_REASONS] = (finish_reason,)
    return attributes


async def traced(
    tracer: Tracer,
    model_string: str,
    *,
    settings: ModelSettings,
    base_url: Any,
    request: Callable[[], Awaitable[T]],
    attributes: Callable[[T], dict[str, Any]],
) -> T:
    """One request in a `chat <model>` client span of the GenAI conventions: what was asked, what the
    provider answered (`attributes` of the answer), or the class of the error it raised (`error.type`).
    pydantic-ai's own instrumentation names providers its own way (`google-gla`, `bedrock`)."""
    from opentelemetry.trace import SpanKind

    model_string = normalize_model_string(model_string)  # a bare `claude-...` is Anthropic's
    name = genai_model(model_string)
    asked: dict[str, Any] = {
        GenAI.OPERATION_NAME: GenAI.CHAT,
        GenAI.PROVIDER_NAME: genai_provider(model_string),
        GenAI.REQUEST_MODEL: name,
    }
    for attribute, value in (
        (GenAI.REQUEST_MAX_TOKENS, settings.get("max_tokens")),
        (GenAI.REQUEST_TEMPERATURE, settings.get("temperature")),
        (GenAI.REQUEST_TOP_P, settings.get("top_p")),
    ):
        if value is not None:
            asked[attribute] = value
    asked |= _server_attributes(base_url)
    with tracer.start_as_current_span(
        f"{GenAI.CHAT} {name}",
        kind=SpanKind.CLIENT,
        attributes=asked,
        record_exception=False,  # by hand, redacted (`record_failure`)
        set_status_on_exception=False,
    ) as span:
        try:
            answer = await request()
        except BaseException as error:  # a cancel (the step's timeout) ends the request too
            record_failure(span, error)
            raise
        span.set_attributes(attributes(answer))
        return answer


def _server_attributes(base_url: Any) -> dict[str, Any]:
    """`server.address` and `server.port` of the endpoint asked (never its credentials or path)."""
    try:
        url = urlsplit(str(base_url)) if base_url else None
        port = url.port if url is not None else None
    except ValueError:
        return {}
    if url is None or not url.hostname:
        return {}
    found: dict[str, Any] = {GenAI.SERVER_ADDRESS: url.hostname}
    if port is not None or url.scheme in ("http", "https"):
        found[GenAI.SERVER_PORT] = port or (443 if url.scheme == "https" else 80)
    return found
