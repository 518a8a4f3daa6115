"""Which model an agent calls in a run: the one rule every step, check and display follows.

An agent names its model (else the default model, `QMCP_DEFAULT_MODEL`) and may name its own
OpenAI-compatible endpoint (`base_url`) and key variable (`api_key_env`). A run's model override
replaces the model of every agent. The endpoint and key variable belong to the agent's own model:
an override keeps them only when it names that very model; any other override goes to its own
provider's endpoint with that provider's own key variable, so an agent's key never reaches another
provider (`_resolve.py` has the key rule of each provider).

`QMCP_MODEL_OVERRIDE` is read once, when a run starts (`run_override`); the run stores the override
it took, and a resume keeps that one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._registry import normalize_model_string

if TYPE_CHECKING:
    from pydantic_ai.models import Model

    from ..models import AgentConfig  # a table's module: SQLModel, which the model layer does not load
    from ._native import OfflineModel

__all__ = ["ModelChoice", "effective_model", "run_override"]


@dataclass(frozen=True)
class ModelChoice:
    """The model an agent calls, with the endpoint and key variable that go with it."""

    model: str
    base_url: str | None = None
    api_key_env: str | None = None

    def resolve(self, role: str = "generalist") -> Model | OfflineModel:
        """The model (`resolve_model`: an offline model is qmcp's own, any other pydantic-ai's); raises a
        `UserInputError` when it cannot be built."""
        from ._resolve import resolve_model

        return resolve_model(self.model, role=role, base_url=self.base_url, api_key_env=self.api_key_env)


def effective_model(config: AgentConfig, override: str | None) -> ModelChoice:
    """The model an agent of `config` calls in a run whose model override is `override` (None: none)."""
    from ...config import settings  # pydantic-settings: not for a Metaflow task's prepared call (`flowcall`)

    own = config.model or settings().default_model
    if override and normalize_model_string(override) != normalize_model_string(own):
        return ModelChoice(override)  # another model: its provider's own endpoint and key
    return ModelChoice(override or own, config.base_url, config.api_key_env)


def run_override(given: str | None) -> str | None:
    """The model override a run takes when it starts: the one given, else `QMCP_MODEL_OVERRIDE`.

    A `recorded:` fixture's path is made absolute here, once: the run stores it, and its resume,
    a Metaflow task or a server's worker may start in another directory."""
    from ...config import settings

    override = given or settings().model_override
    if override and override.strip().startswith("recorded:"):
        path = override.strip().removeprefix("recorded:")
        return f"recorded:{os.path.abspath(os.path.expanduser(path))}"
    return override
