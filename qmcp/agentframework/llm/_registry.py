"""Model strings: the models users register under a name, and bare names made `provider:name`.

Free of pydantic-ai, so that a module registering its models (say, one named in
`QMCP_METAFLOW_IMPORTS`) costs nothing in a process that never calls one: register a factory and
build the model inside it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from pydantic_ai.models import Model

    from ._native import OfflineModel

__all__ = [
    "OPENAI_COMPATIBLE_PROVIDERS",
    "SMOLLM2_SPEC",
    "ModelFactory",
    "normalize_model_string",
    "register_model",
    "registered_model",
    "unregister_model",
]

ModelFactory: TypeAlias = Callable[[str], "Model | OfflineModel"]
"""Builds a model for an agent role; registered under a model string with `register_model`."""

SMOLLM2_SPEC = "smollm2"
"""The spec of the embedded default model (`local:smollm2`); any other `local:` spec is a GGUF file's path."""

OPENAI_COMPATIBLE_PROVIDERS = {
    "openai-compatible": None,
    "ollama": "http://localhost:11434/v1",
    "vllm": "http://localhost:8000/v1",
    "llamacpp": "http://localhost:8080/v1",
    "lmstudio": "http://localhost:1234/v1",
}
_BARE_PREFIXES = (
    (re.compile(r"^claude-"), "anthropic"),
    (re.compile(r"^(gpt-|o[1-9]|chatgpt-)"), "openai"),
    (re.compile(r"^gemini-"), "google"),
    (re.compile(r"^(mistral-|codestral-|magistral-)"), "mistral"),
)

_registered: dict[str, Model | OfflineModel | ModelFactory] = {}
_lock = threading.Lock()


def register_model(name: str, model: Model | OfflineModel | ModelFactory) -> None:
    """Make `name` resolve to `model` (or to `model(role)` when it is a factory), e.g. a `ScriptedModel`."""
    with _lock:
        _registered[name] = model


def unregister_model(name: str) -> None:
    with _lock:
        _registered.pop(name, None)


def registered_model(name: str) -> Model | OfflineModel | ModelFactory | None:
    return _registered.get(name)


def normalize_model_string(model: str) -> str:
    """`claude-sonnet-4-...` → `anthropic:claude-sonnet-4-...`; other strings unchanged."""
    model = model.strip()
    if ":" in model or model == "test" or model in _registered:
        return model
    for pattern, provider in _BARE_PREFIXES:
        if pattern.match(model):
            return f"{provider}:{model}"
    return model
