"""`ModelConfig` and the `Models` registry of current models with context sizes and prices.

Prices are US dollars per million tokens, used for the cost recorded on every step.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ModelConfig", "Models"]


class ModelConfig(BaseModel):
    """One model of one provider, as a model string plus what cost accounting needs."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    provider: str = Field(min_length=1)
    name: str = Field(min_length=1)
    display_name: str | None = None
    context_window: int = Field(default=128_000, ge=1)
    max_output_tokens: int = Field(default=4096, ge=1)
    input_price_per_mtok: float = Field(default=0.0, ge=0)
    output_price_per_mtok: float = Field(default=0.0, ge=0)
    base_url: str | None = None
    default_settings: dict[str, Any] = Field(default_factory=dict)
    requests_per_minute: float | None = Field(default=None, gt=0)
    """The provider's request limit for this model: calls of the whole process are spaced to keep it
    (unless `QMCP_RATE_LIMITS` or `RunConfig.rate_limits` say otherwise). None: no limit."""
    tokens_per_minute: float | None = Field(default=None, gt=0)
    """The provider's token limit (prompt plus output) for this model; None: no limit."""

    @property
    def model_string(self) -> str:
        """The `provider:name` string the LLM layer resolves (the offline model is plain `test`)."""
        return self.name if self.provider == "test" else f"{self.provider}:{self.name}"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Cost in dollars of one call with these token counts."""
        return (input_tokens * self.input_price_per_mtok + output_tokens * self.output_price_per_mtok) / 1e6


def _m(provider: str, name: str, display: str, ctx: int, out: int, pin: float, pout: float) -> ModelConfig:
    return ModelConfig(
        provider=provider,
        name=name,
        display_name=display,
        context_window=ctx,
        max_output_tokens=out,
        input_price_per_mtok=pin,
        output_price_per_mtok=pout,
    )


class Models:
    """Pre-configured models: `Models.CLAUDE_SONNET_4`, `Models.get("openai:gpt-4.1")`, `Models.register(...)`."""

    # Anthropic
    CLAUDE_SONNET_4 = _m(
        "anthropic", "claude-sonnet-4-20250514", "Claude Sonnet 4", 200_000, 64_000, 3.0, 15.0
    )
    CLAUDE_SONNET_4_6 = _m(
        "anthropic", "claude-sonnet-4-6", "Claude Sonnet 4.6", 1_000_000, 64_000, 3.0, 15.0
    )
    CLAUDE_SONNET_5_5 = _m(
        "anthropic", "claude-sonnet-5-5", "Claude Sonnet 5.5", 1_000_000, 64_000, 2.0, 10.0
    )
    CLAUDE_OPUS_4_8 = _m("anthropic", "claude-opus-4-8", "Claude Opus 4.8", 1_000_000, 32_000, 5.0, 25.0)
    CLAUDE_OPUS_5_5 = _m("anthropic", "claude-opus-5-5", "Claude Opus 5.5", 1_000_000, 32_000, 4.0, 20.0)
    CLAUDE_HAIKU_4_5 = _m("anthropic", "claude-haiku-4-5", "Claude Haiku 4.5", 200_000, 64_000, 1.0, 5.0)
    CLAUDE_HAIKU_5_5 = _m("anthropic", "claude-haiku-5-5", "Claude Haiku 5.5", 1_000_000, 64_000, 0.5, 2.5)
    # OpenAI
    GPT_4O = _m("openai", "gpt-4o", "GPT-4o", 128_000, 16_384, 2.5, 10.0)
    GPT_4_1 = _m("openai", "gpt-4.1", "GPT-4.1", 1_000_000, 32_768, 2.0, 8.0)
    GPT_4_1_MINI = _m("openai", "gpt-4.1-mini", "GPT-4.1 mini", 1_000_000, 32_768, 0.4, 1.6)
    GPT_5 = _m("openai", "gpt-5", "GPT-5", 400_000, 128_000, 1.25, 10.0)
    GPT_5_MINI = _m("openai", "gpt-5-mini", "GPT-5 mini", 400_000, 128_000, 0.25, 2.0)
    GPT_6_LUNA = _m("openai", "gpt-6-luna", "GPT-6 Luna", 1_050_000, 128_000, 0.2, 0.75)
    GPT_6_1_SOL = _m("openai", "gpt-6.1-sol", "GPT-6.1 Sol", 1_050_000, 128_000, 4.0, 15.0)
    # Google
    GEMINI_2_5_PRO = _m("google", "gemini-2.5-pro", "Gemini 2.5 Pro", 1_048_576, 65_536, 2.5, 15.0)
    GEMINI_2_5_FLASH = _m("google", "gemini-2.5-flash", "Gemini 2.5 Flash", 1_048_576, 65_536, 0.3, 2.5)
    # Local and offline (free)
    SMOLLM2_135M = _m("local", "smollm2", "SmolLM2 135M Instruct (embedded)", 2048, 512, 0.0, 0.0)
    LLAMA_3_2 = _m("ollama", "llama3.2", "Llama 3.2 via Ollama", 128_000, 4096, 0.0, 0.0)
    TEST = _m("test", "test", "qmcp offline test model", 1_000_000, 4096, 0.0, 0.0)

    _registry: ClassVar[dict[str, ModelConfig]] = {}
    _by_name: ClassVar[dict[str, ModelConfig]] = {}  # the first registered of each bare name

    @classmethod
    def register(cls, config: ModelConfig) -> ModelConfig:
        """Add (or replace) a model so that its string resolves to its prices and limits."""
        cls._registry[config.model_string] = config
        by_name: dict[str, ModelConfig] = {}
        for registered in cls._registry.values():
            by_name.setdefault(registered.name, registered)
        cls._by_name = by_name  # one assignment: a concurrent `get` sees the old index or the new
        return config

    @classmethod
    def get(cls, model: str) -> ModelConfig | None:
        """The registered config for a `provider:name` (or bare name) string, if any.

        Looked up on every model call (for its price), so by dictionary only.
        """
        found = cls._registry.get(model)
        return found if found is not None else cls._by_name.get(model.split(":", 1)[-1])

    @classmethod
    def all(cls) -> list[ModelConfig]:
        return list(cls._registry.values())


for _value in list(vars(Models).values()):
    if isinstance(_value, ModelConfig):
        Models.register(_value)
