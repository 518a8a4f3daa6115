"""`Usage`: what model calls used — requests, input and output tokens, cost — as one value.

A step's reply, its stored row, its events, an attempt's running total, a budget's spend, a span's
attributes and a run's result all carry this one shape, so adding usage up is `a + b` (or
`total.incr(b)` for a running total) and never a dict of string keys.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Usage"]


@dataclass
class Usage:
    """Usage of model calls. `requests` counts the calls made (retries included: each was sent).

    Mutable only through `incr`, for running totals shared by the steps of an attempt (its compound
    sub-topologies' contexts included); `+` makes a new value.
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def has_values(self) -> bool:
        """Whether anything was used (a run that replayed every step used nothing)."""
        return bool(self.requests or self.input_tokens or self.output_tokens or self.cost_usd)

    def incr(self, other: Usage) -> None:
        """Add `other` to this running total, in place."""
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd

    def __add__(self, other: Usage) -> Usage:
        # Built field by field: `dataclasses.replace` inspects the fields on every call (hot path).
        return Usage(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost_usd + other.cost_usd,
        )

    def opentelemetry_attributes(self) -> dict[str, int | float]:
        """The OpenTelemetry GenAI usage attributes, plus qmcp's cost and request count."""
        return {
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "qmcp.usage.requests": self.requests,
            "qmcp.cost_usd": self.cost_usd,
        }
