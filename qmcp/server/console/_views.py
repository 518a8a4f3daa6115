"""What the console's pages show, computed on the server: formatted figures and the run's timeline.

The timeline is SVG drawn here: one lane per slot, one bar per step from its start to its end (a
step retried shows its attempts as segments; a step in flight grows until now, and the page's
script keeps it growing between updates).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from ...agentframework.models import ExecutionStep
from ...app import format_cost, format_duration, format_tokens, format_when

if TYPE_CHECKING:
    from .. import RunningStep

__all__ = [
    "Bar",
    "format_cost",
    "format_duration",
    "format_tokens",
    "format_when",
    "pretty_json",
    "timeline_svg",
]

LANE_HEIGHT = 26
LABEL_WIDTH = 150
PLOT_WIDTH = 820
AXIS_HEIGHT = 22


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Bar:
    key: str
    slot: str
    status: str
    start: datetime
    end: datetime | None
    """None: in flight."""
    attempts: int = 1
    retries: tuple[datetime, ...] = ()
    """When an in-flight step's retries began (steps on record only know how many attempts they took)."""


def bars(steps: Sequence[ExecutionStep], running: Sequence[RunningStep]) -> list[Bar]:
    out = [
        Bar(
            s.key,
            s.slot,
            str(s.status),
            _aware(s.started_at),
            _aware(s.completed_at or s.started_at),
            s.attempts,
        )
        for s in steps
    ]
    recorded = {s.key for s in steps}
    out += [
        Bar(
            r.key,
            r.slot,
            "running",
            _aware(r.started_at),
            None,
            len(r.retries) + 1,
            tuple(map(_aware, r.retries)),
        )
        for r in running
        if r.key not in recorded
    ]
    return out


def timeline_svg(items: Sequence[Bar], now: datetime, *, step_href: str = "?step=") -> str:
    """The timeline as inline SVG; `now` ends the axis while steps are in flight."""
    now = _aware(now)
    lanes = list(dict.fromkeys(bar.slot for bar in sorted(items, key=lambda b: b.start)))
    if not items:
        return '<p class="muted">No steps yet.</p>'
    t0 = min(bar.start for bar in items)
    t1 = max([bar.end or now for bar in items] + ([now] if any(b.end is None for b in items) else []))
    span_ms = max((t1 - t0).total_seconds() * 1000, 1.0)
    if any(bar.end is None for bar in items):  # room for the running bars to grow until the next update
        span_ms += max(span_ms / 2, 2000.0)
    scale = PLOT_WIDTH / span_ms
    height = AXIS_HEIGHT + LANE_HEIGHT * len(lanes) + 8
    width = LABEL_WIDTH + PLOT_WIDTH + 16
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline: one lane per slot, one bar per step" '
        f'data-t0="{t0.timestamp() * 1000:.0f}" data-scale="{scale:.6f}" data-left="{LABEL_WIDTH}" '
        f'data-max="{PLOT_WIDTH}">'
    ]
    for tick in range(5):
        x = LABEL_WIDTH + PLOT_WIDTH * tick / 4
        anchor = (
            "end" if tick == 4 else "middle"
        )  # the last label ends at the plot's edge, inside the picture
        out.append(
            f'<line class="tick" x1="{x:.0f}" y1="{AXIS_HEIGHT - 4}" x2="{x:.0f}" y2="{height}"/>'
            f'<text class="axis" x="{x:.0f}" y="{AXIS_HEIGHT - 8}" text-anchor="{anchor}">'
            f"{format_duration(span_ms * tick / 4)}</text>"
        )
    for index, lane in enumerate(lanes):
        y = AXIS_HEIGHT + index * LANE_HEIGHT
        out.append(
            f'<text class="lane" x="{LABEL_WIDTH - 8}" y="{y + 17}" text-anchor="end">{escape(lane[:22])}</text>'
        )
    for bar in items:
        y = AXIS_HEIGHT + lanes.index(bar.slot) * LANE_HEIGHT + 4
        x = LABEL_WIDTH + (bar.start - t0).total_seconds() * 1000 * scale
        end = bar.end or now
        w = max((end - bar.start).total_seconds() * 1000 * scale, 3.0)
        duration = (end - bar.start).total_seconds() * 1000
        attempts = f", {bar.attempts} attempts" if bar.attempts > 1 else ""
        label = f"{bar.key}: {bar.status}, {format_duration(duration)}{attempts}"
        growing = f' data-start="{bar.start.timestamp() * 1000:.0f}"' if bar.end is None else ""
        out.append(
            f'<a href="{escape(step_href)}{escape(bar.key)}" aria-label="{escape(label)}">'
            f'<g class="bar s-{escape(bar.status)}" data-key="{escape(bar.key)}"><title>{escape(label)}</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{LANE_HEIGHT - 8}" rx="3"{growing}/>'
        )
        if bar.end is not None and bar.attempts > 1:  # equal segments: only the count is on record
            for cut in range(1, bar.attempts):
                cx = x + w * cut / bar.attempts
                out.append(
                    f'<line class="attempt" x1="{cx:.1f}" y1="{y}" x2="{cx:.1f}" y2="{y + LANE_HEIGHT - 8}"/>'
                )
        for retry in bar.retries:  # in flight: where each retry really began
            cx = LABEL_WIDTH + (retry - t0).total_seconds() * 1000 * scale
            out.append(
                f'<line class="attempt" x1="{cx:.1f}" y1="{y}" x2="{cx:.1f}" y2="{y + LANE_HEIGHT - 8}"/>'
            )
        out.append("</g></a>")
    out.append("</svg>")
    return "".join(out)
