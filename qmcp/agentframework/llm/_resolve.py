"""Turning a `provider:name` model string into a pydantic-ai `Model`.

Resolution order: user-registered models (`register_model`), the offline `test` model, the
embedded `local:` models, OpenAI-compatible endpoints with a base URL, then pydantic-ai's own
providers (`anthropic:`, `openai:`, `google:`, `groq:`, `mistral:`, `bedrock:`, `ollama:`, ...).
Provider clients are built once per process and model string, because they hold HTTP pools.
"""

from __future__ import annotations

import os
import re
import threading

from pydantic_ai.exceptions import UserError
from pydantic_ai.models import Model, infer_model

from ..errors import MissingAPIKeyError, ModelNotInstalledError, UnknownModelError
from ._offline import make_test_model
from ._registry import OPENAI_COMPATIBLE_PROVIDERS, normalize_model_string, registered_model

__all__ = ["resolve_model"]

_cache: dict[tuple[str, str | None], Model] = {}
_lock = threading.Lock()

_KEY_HINT = re.compile(r"`([A-Z][A-Z0-9_]*(?:API_KEY|BASE_URL|TOKEN))`")
_OVERRIDE_HINT = "or run offline with QMCP_MODEL_OVERRIDE=test (CLI: --model test)"


def resolve_model(model: str, *, role: str = "generalist", base_url: str | None = None) -> Model:
    """The pydantic-ai model for a model string; raises a `UserInputError` subclass when it can't be built.

    `role` only matters for the offline `test` model, which answers in character.
    """
    model = normalize_model_string(model)
    registered = registered_model(model)
    if registered is not None:
        return registered if isinstance(registered, Model) else registered(role)
    if model == "test":
        return make_test_model(role)
    with _lock:
        cached = _cache.get((model, base_url))
    if cached is not None:
        return cached
    built = _build(model, base_url)
    with _lock:
        return _cache.setdefault((model, base_url), built)


def _build(model: str, base_url: str | None) -> Model:
    provider, _, name = model.partition(":")
    if not name:
        raise UnknownModelError(
            f"unknown model {model!r}: use 'provider:name' (e.g. anthropic:claude-sonnet-4-20250514, "
            "openai:gpt-4.1, ollama:llama3.2, local:smollm2) or 'test'"
        )
    if provider == "local":
        from ._local import LocalModel

        return LocalModel(name)
    if provider in OPENAI_COMPATIBLE_PROVIDERS or (base_url and provider == "openai"):
        return _openai_compatible(provider, name, base_url)
    try:
        return infer_model(model)
    except UserError as error:
        raise _user_error(model, str(error)) from None
    except ImportError as error:
        extra = re.search(r"pydantic-ai-slim\[(\w[\w-]*)\]", str(error))
        hint = f'pip install "pydantic-ai-slim[{extra.group(1)}]"' if extra else str(error)
        raise ModelNotInstalledError(f"model {model!r} needs its provider package: {hint}") from None


def _openai_compatible(provider: str, name: str, base_url: str | None) -> Model:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    env_url = os.environ.get(f"{provider.upper().replace('-', '_')}_BASE_URL")
    url = base_url or env_url or OPENAI_COMPATIBLE_PROVIDERS.get(provider)
    if not url:
        raise MissingAPIKeyError(
            f"model '{provider}:{name}' needs an endpoint: set AgentConfig.base_url or "
            f"OPENAI_COMPATIBLE_BASE_URL, {_OVERRIDE_HINT}"
        )
    api_key = os.environ.get(f"{provider.upper().replace('-', '_')}_API_KEY") or os.environ.get(
        "OPENAI_API_KEY", "not-needed"
    )
    return OpenAIChatModel(name, provider=OpenAIProvider(base_url=url, api_key=api_key))


def _user_error(model: str, message: str) -> Exception:
    variable = _KEY_HINT.search(message)
    if variable:
        return MissingAPIKeyError(f"model {model!r} needs {variable.group(1)}: set it, {_OVERRIDE_HINT}")
    if message.startswith("Unknown model"):
        suggestion = message.split("Did you mean", 1)[1].strip(" ?") if "Did you mean" in message else None
        tail = f"; did you mean {suggestion}?" if suggestion else ""
        return UnknownModelError(f"unknown model {model!r}{tail}")
    return UnknownModelError(f"model {model!r} cannot be used: {message.splitlines()[0]}")
