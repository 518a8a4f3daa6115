"""Turning a `provider:name` model string into a model: an offline one (qmcp's own, `_native.py`) or a
pydantic-ai `Model`. pydantic-ai is imported only to build the latter.

Resolution order: user-registered models (`register_model`), the offline `test` model, the
embedded `local:` models, `recorded:FILE` fixtures (`_recorded.py`), OpenAI-compatible endpoints
with a base URL, then pydantic-ai's own providers (`anthropic:`, `openai:`, `google:`, `groq:`,
`mistral:`, `bedrock:`, `ollama:`, ...).
Provider clients are built once per process and model string, because they hold HTTP pools.

Keys go only to their own provider. pydantic-ai's providers read their own variables
(`ANTHROPIC_API_KEY` for Anthropic, ...). The OpenAI-compatible endpoints built here get:
`AgentConfig.api_key_env`'s variable when the agent names one; else, for an endpoint the agent
names itself (`base_url`), no key at all; else (the endpoint of `OLLAMA_BASE_URL` or the local
default) the provider's own variable (`OLLAMA_API_KEY`, `VLLM_API_KEY`, `LLAMACPP_API_KEY`,
`LMSTUDIO_API_KEY`, `OPENAI_COMPATIBLE_API_KEY`). `OPENAI_API_KEY` goes to OpenAI only.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import TYPE_CHECKING, cast

from ...redaction import register_secret
from ..errors import MissingAPIKeyError, ModelNotInstalledError, UnknownModelError
from ._native import OfflineModel, test_model
from ._registry import OPENAI_COMPATIBLE_PROVIDERS, ModelFactory, normalize_model_string, registered_model

if TYPE_CHECKING:
    from pydantic_ai.models import Model

__all__ = ["resolve_model"]

_cache: dict[tuple[str, str | None, str | None], Model | OfflineModel] = {}
_NO_KEY = "api-key-not-set"
"""What an endpoint without a key is sent: the OpenAI client needs one, and would otherwise read OPENAI_API_KEY."""
_lock = threading.Lock()

_KEY_HINT = re.compile(r"`([A-Z][A-Z0-9_]*(?:API_KEY|BASE_URL|TOKEN))`")
_OVERRIDE_HINT = "or run offline with QMCP_MODEL_OVERRIDE=test (CLI: --model test)"


def resolve_model(
    model: str, *, role: str = "generalist", base_url: str | None = None, api_key_env: str | None = None
) -> Model | OfflineModel:
    """The model for a model string; raises a `UserInputError` subclass when it can't be built.

    An offline model (`test`, a `ScriptedModel`, `recorded:FILE`) is qmcp's own (`OfflineModel`, its
    pydantic-ai form is `.pydantic_model`); any other is a pydantic-ai `Model`. `role` only matters
    for the offline `test` model, which answers in character. `base_url` and
    `api_key_env` are the agent's own endpoint and key variable (see the module's key rule).
    """
    model = normalize_model_string(model)
    registered = registered_model(model)
    if registered is not None:
        if _is_factory(registered):
            return cast("ModelFactory", registered)(role)
        return cast("Model | OfflineModel", registered)
    if model == "test":
        return test_model(role)
    if api_key_env:  # its value is a secret whatever the variable is called: masked wherever it shows
        register_secret(os.environ.get(api_key_env))
    key = (model, base_url, api_key_env)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    built = _build(model, base_url, api_key_env)
    with _lock:
        return _cache.setdefault(key, built)


def _is_factory(registered: object) -> bool:
    """A registered factory, not a model (a pydantic-ai `Model` exists only once pydantic-ai is imported)."""
    if isinstance(registered, OfflineModel) or not callable(registered):
        return False
    models = sys.modules.get("pydantic_ai.models")
    return models is None or not isinstance(registered, models.Model)


def _build(model: str, base_url: str | None, api_key_env: str | None) -> Model | OfflineModel:
    provider, _, name = model.partition(":")
    if not name:
        raise UnknownModelError(
            f"unknown model {model!r}: use 'provider:name' (e.g. anthropic:claude-sonnet-4-20250514, "
            "openai:gpt-4.1, ollama:llama3.2, local:smollm2) or 'test'"
        )
    if provider == "local":
        from ._local import LocalModel

        return LocalModel(name)
    if provider == "recorded":
        from ._recorded import recorded_model

        return recorded_model(name)
    if provider in OPENAI_COMPATIBLE_PROVIDERS or (provider == "openai" and (base_url or api_key_env)):
        return _openai_compatible(provider, name, base_url, api_key_env)
    if api_key_env:
        raise UnknownModelError(
            f"model {model!r} cannot take api_key_env: it applies to openai: and OpenAI-compatible "
            f"endpoints; {provider} reads its own key variable"
        )
    from pydantic_ai.exceptions import UserError
    from pydantic_ai.models import infer_model

    try:
        return infer_model(model)
    except UserError as error:
        raise _user_error(model, str(error)) from None
    except ImportError as error:
        extra = re.search(r"pydantic-ai-slim\[(\w[\w-]*)\]", str(error))
        hint = f'pip install "pydantic-ai-slim[{extra.group(1)}]"' if extra else str(error)
        raise ModelNotInstalledError(f"model {model!r} needs its provider package: {hint}") from None


def _openai_compatible(provider: str, name: str, base_url: str | None, api_key_env: str | None) -> Model:
    from openai import AsyncOpenAI
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    prefix = provider.upper().replace("-", "_")
    url = base_url or os.environ.get(f"{prefix}_BASE_URL") or OPENAI_COMPATIBLE_PROVIDERS.get(provider)
    if not url and provider != "openai":
        raise MissingAPIKeyError(
            f"model '{provider}:{name}' needs an endpoint: set AgentConfig.base_url or "
            f"{prefix}_BASE_URL, {_OVERRIDE_HINT}"
        )
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise MissingAPIKeyError(
                f"model '{provider}:{name}' needs {api_key_env} (its api_key_env): set it, {_OVERRIDE_HINT}"
            )
    elif provider == "openai":  # OpenAI's own key never goes to another endpoint
        api_key = _NO_KEY
    else:
        api_key = (None if base_url else os.environ.get(f"{prefix}_API_KEY")) or _NO_KEY
    # qmcp retries transient errors itself (`retry_transient`, recorded on the step): the client's own
    # retries would only multiply them, and hide a local server that is not running for seconds.
    client = AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0)
    return OpenAIChatModel(name, provider=OpenAIProvider(openai_client=client))


def _user_error(model: str, message: str) -> Exception:
    variable = _KEY_HINT.search(message)
    if variable:
        return MissingAPIKeyError(f"model {model!r} needs {variable.group(1)}: set it, {_OVERRIDE_HINT}")
    if message.startswith("Unknown model"):  # suggestions of the same provider, not any provider's
        from ._check import check_model_string

        try:
            check_model_string(model)
        except UnknownModelError as error:
            return error
        return UnknownModelError(f"unknown model {model!r}")
    return UnknownModelError(f"model {model!r} cannot be used: {message.splitlines()[0]}")
