"""The LLM layer: model strings → pydantic-ai models, one accounted call, typed errors, offline models."""

from ._call import (
    ChatMessage,
    ModelReply,
    ToolCallHook,
    ToolSpec,
    call_model,
    classify_error,
    retry_transient,
)
from ._offline import FAILURE_KINDS, ScriptedCall, ScriptedModel, make_test_model
from ._prompts import JSON_MARKER, json_instruction, requested_schema
from ._resolve import (
    OPENAI_COMPATIBLE_PROVIDERS,
    normalize_model_string,
    register_model,
    resolve_model,
    unregister_model,
)

__all__ = [
    "FAILURE_KINDS",
    "JSON_MARKER",
    "OPENAI_COMPATIBLE_PROVIDERS",
    "ChatMessage",
    "ModelReply",
    "ScriptedCall",
    "ScriptedModel",
    "ToolCallHook",
    "ToolSpec",
    "call_model",
    "classify_error",
    "json_instruction",
    "make_test_model",
    "normalize_model_string",
    "register_model",
    "requested_schema",
    "resolve_model",
    "retry_transient",
    "unregister_model",
]
