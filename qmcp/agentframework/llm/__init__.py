"""The LLM layer: model strings → models, one accounted call, typed errors, offline models.

pydantic-ai takes about half a second to import, and is imported only when a call needs it: a
provider's model, or a call with tools (pydantic-ai's tool loop). The offline models (`test`,
`ScriptedModel`, `recorded:` fixtures) answer plain calls in qmcp's own types (`_native.py`,
`_calling.py`), so a process running them — a test, a benchmark, a Metaflow task — never imports
it, nor does one that only replays stored steps or registers models. The names below load on first use.
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
from ._retry import retry_delay, retry_transient
from ._stepkey import calling_step, current_step_key
from ._types import ChatMessage, ModelReply, ToolCallHook, ToolSpec

if TYPE_CHECKING:
    from ._call import classify_error
    from ._calling import call_model
    from ._check import check_model_string
    from ._native import FAILURE_KINDS, OfflineModel, ScriptedCall, ScriptedModel
    from ._offline import make_test_model
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
    "OfflineModel",
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
    "retry_delay",
    "retry_transient",
    "run_override",
    "unregister_model",
]

_LAZY = {
    "call_model": "._calling",
    "classify_error": "._call",
    "check_model_string": "._check",
    "FAILURE_KINDS": "._native",
    "OfflineModel": "._native",
    "recorded_model": "._recorded",
    "ScriptedCall": "._native",
    "ScriptedModel": "._native",
    "make_test_model": "._offline",
    "resolve_model": "._resolve",
}


def __getattr__(name: str) -> Any:
    """Import a name on first use, then keep it as a module global."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
