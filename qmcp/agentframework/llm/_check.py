"""Checking a model string when an agent is defined, long before a run would call it.

`check_model_string` refuses what can never work — no provider, an unknown provider, a bare name
that is no known model, a provider whose package is not installed — with suggestions taken from the
model names qmcp knows (`Models`) and the providers' own (pydantic-ai's `KnownModelName`), the
same provider's first. It needs no API key and opens no connection: keys are checked when a run
starts. A name a known provider does not list is accepted with a note (providers publish models
faster than any list), since `openai:gpt-4.2` may well exist tomorrow.
"""

from __future__ import annotations

import difflib
import functools
import re
import typing

from ..errors import ModelNotInstalledError, UnknownModelError
from ..models import Models
from ._registry import OPENAI_COMPATIBLE_PROVIDERS, normalize_model_string, registered_model

__all__ = ["check_model_string"]

_OFFLINE_PREFIXES = ("scripted",)
"""Offline model families registered at run time by the process that runs them (tests, benchmarks)."""
_OURS = ("local", *OPENAI_COMPATIBLE_PROVIDERS)
_NAME = re.compile(r"^[\w.\-/@:+]+$")
_EXAMPLES = "e.g. anthropic:claude-sonnet-4-20250514, openai:gpt-4.1, ollama:llama3.2, local:smollm2, or test"


def _known_models() -> tuple[str, ...]:
    """qmcp's `Models` (with any registered since), then the names pydantic-ai lists, without repeats."""
    ours = [config.model_string for config in Models.all() if ":" in config.model_string]
    return tuple(dict.fromkeys([*ours, *_listed_by_pydantic_ai()]))


@functools.cache
def _listed_by_pydantic_ai() -> tuple[str, ...]:
    from pydantic_ai.models import KnownModelName

    alias = getattr(KnownModelName, "__value__", KnownModelName)
    return tuple(str(name) for name in typing.get_args(alias) if ":" in str(name))


@functools.cache
def _pydantic_ai_providers() -> frozenset[str]:
    return frozenset(name.split(":", 1)[0] for name in _listed_by_pydantic_ai())


def _closest(word: str, choices: typing.Iterable[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)


def check_model_string(model: str) -> str | None:
    """Raise `UnknownModelError`/`ModelNotInstalledError` for a model string that cannot work; return
    a note for one that may (a name its provider does not list), else None."""
    given = model.strip()
    normalized = normalize_model_string(given)
    if normalized == "test" or registered_model(normalized) is not None:
        return None
    provider, colon, name = normalized.partition(":")
    if provider in _OFFLINE_PREFIXES and name:
        return None
    if provider == "recorded" and name.strip():
        return None  # a fixture file's path: read when a run resolves the model
    if not colon:
        guesses = [m for m in _closest_names(given) if ":" in m]
        hint = f"did you mean {', '.join(guesses)}?" if guesses else f"use provider:name ({_EXAMPLES})"
        raise UnknownModelError(f"unknown model {given!r}: {hint}")
    if not name or not _NAME.fullmatch(name):
        raise UnknownModelError(f"model {given!r} has no valid name after {provider + ':'!r} ({_EXAMPLES})")
    if provider in _OURS:
        return None
    if provider not in _pydantic_ai_providers() and not _provider_exists(normalized):
        guesses = [f"{p}:{name}" for p in _closest(provider, [*_pydantic_ai_providers(), *_OURS], n=2)]
        hint = f"; did you mean {' or '.join(guesses)}?" if guesses else f" ({_EXAMPLES})"
        raise UnknownModelError(f"unknown model {given!r}: no provider is called {provider!r}{hint}")
    _require_installed(normalized)
    listed = [m for m in _known_models() if m.startswith(f"{provider}:")]
    if not listed or normalized in listed:
        return None
    guesses = _closest(normalized, listed)
    also = f"; did you mean {', '.join(guesses)}?" if guesses else ""
    return f"{provider} lists no model {name!r}{also} (kept: newer models may not be listed)"


def _closest_names(given: str) -> list[str]:
    """Known model strings whose name (after `provider:`) resembles a bare `given`."""
    by_name: dict[str, str] = {}
    for model in _known_models():
        by_name.setdefault(model.split(":", 1)[1], model)
    return [by_name[name] for name in _closest(given, by_name)]


def _provider_exists(model: str) -> bool:
    """Whether pydantic-ai can build this provider at all (it knows more providers than it lists models of)."""
    from pydantic_ai.exceptions import UserError
    from pydantic_ai.models import infer_model

    try:
        infer_model(model)
    except UserError as error:
        return not str(error).startswith("Unknown model")
    except ImportError:
        return True
    return True


def _require_installed(model: str) -> None:
    """A provider whose package is missing: one line with the pip command that adds it."""
    from pydantic_ai.exceptions import UserError
    from pydantic_ai.models import infer_model

    try:
        infer_model(model)
    except ImportError as error:
        extra = re.search(r"optional group[^`]*`pip install \"(pydantic-ai-slim\[[\w-]+\])\"", str(error))
        package = extra.group(1) if extra else "its provider package"
        raise ModelNotInstalledError(
            f'model {model!r} needs {package}, which is not installed: pip install "{package}"'
        ) from None
    except UserError:  # a missing key or endpoint: the run checks those
        pass
