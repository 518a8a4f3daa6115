"""The LLM layer: model strings → pydantic-ai models, one accounted call, typed errors, offline models.

pydantic-ai takes about half a second to import, so the names that need it (`call_model`,
`resolve_model`, the offline models, ...) load on first use: a process that only replays stored
steps or registers models — every Metaflow task that calls no model — never imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._choice import ModelChoice, effective_model, run_override
from ._fixture import FIXTURE_FORMAT, RecordedReply, read_fixture, recorded_replies
from ._limits import RATE_LIMITS_VARIABLE, RateLimit, RateLimiter, RateLimits, parse_rate_limits, rate_limits
from ._prompts import JSON_MARKER, json_instruction, requested_schema
from ._registry import (
    OPENAI_COMPATIBLE_PROVIDERS,
    SMOLLM2_SPEC,
    ModelFactory,
    normalize_model_string,
    register_model,
    unregister_model,
)
from ._retry import retry_transient
from ._stepkey import calling_step, current_step_key
from ._types import ChatMessage, ModelReply, ToolCallHook, ToolSpec

if TYPE_CHECKING:
    from ._call import call_model, classify_error
    from ._check import check_model_string
    from ._offline import FAILURE_KINDS, ScriptedCall, ScriptedModel, make_test_model
    from ._recorded import recorded_model
    from ._resolve import resolve_model

__all__ = [
    "FAILURE_KINDS",
    "FIXTURE_FORMAT",
    "JSON_MARKER",
    "OPENAI_COMPATIBLE_PROVIDERS",
    "RATE_LIMITS_VARIABLE",
    "SMOLLM2_SPEC",
    "ChatMessage",
    "ModelChoice",
    "ModelFactory",
    "ModelReply",
    "RateLimit",
    "RateLimiter",
    "RateLimits",
    "RecordedReply",
    "ScriptedCall",
    "ScriptedModel",
    "ToolCallHook",
    "ToolSpec",
    "call_model",
    "calling_step",
    "check_model_string",
    "classify_error",
    "current_step_key",
    "effective_model",
    "json_instruction",
    "make_test_model",
    "normalize_model_string",
    "parse_rate_limits",
    "rate_limits",
    "read_fixture",
    "recorded_model",
    "recorded_replies",
    "register_model",
    "requested_schema",
    "resolve_model",
    "retry_transient",
    "run_override",
    "unregister_model",
]

_LAZY = {
    "call_model": "._call",
    "classify_error": "._call",
    "check_model_string": "._check",
    "FAILURE_KINDS": "._offline",
    "recorded_model": "._recorded",
    "ScriptedCall": "._offline",
    "ScriptedModel": "._offline",
    "make_test_model": "._offline",
    "resolve_model": "._resolve",
}


def __getattr__(name: str) -> Any:
    """Import a pydantic-ai backed name on first use, then keep it as a module global."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
