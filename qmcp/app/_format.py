"""How figures read, the same in the CLI and the console: durations, costs, tokens and times."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_cost", "format_duration", "format_tokens", "format_when"]


def format_when(moment: datetime | None) -> str:
    """UTC to the second (SQLite hands back naive values, which qmcp wrote in UTC)."""
    if moment is None:
        return "-"
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(milliseconds: float | None) -> str:
    """`850 ms`, `12.5 s`, `1 min 30 s`, `2 h 05 min`."""
    if milliseconds is None:
        return "-"
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def format_tokens(input_tokens: int, output_tokens: int) -> str:
    return f"{input_tokens:,} in / {output_tokens:,} out"


def format_cost(cost_usd: float) -> str:
    """Four decimals below a dollar (model calls cost fractions of a cent), cents above."""
    return f"${cost_usd:.4f}" if cost_usd < 1 else f"${cost_usd:,.2f}"
