"""What a run's output means, per topology: its answer, and the lines shown above it.

A bare `approved: no` or a verdict alone hides why; these lines give the reasons each topology
records in its output (checker issues and abstentions, debate rounds and a mediator fallback,
escalations, routing). The topology is recognised by the keys of its output document, so stored
executions and live runs read the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["answer_only", "answer_text", "summary_lines"]

_MAX_ITEMS = 5


_ANSWER_KEYS = ("answer", "output", "verdict", "primary_output")


def answer_only(output: Mapping[str, Any] | None) -> str | None:
    """The answer in a topology's output document (its text, or its JSON when it is not text), or
    None when the document has no answer field."""
    for key in _ANSWER_KEYS:
        value = (output or {}).get(key)
        if value is not None:
            return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return None


def answer_text(output: Mapping[str, Any] | None) -> str | None:
    """The human-readable result of a topology's output document, whatever its type: the lines that
    explain it, then its answer (the CLI prints it; the console renders the two apart)."""
    if not output:
        return None
    text = answer_only(output)
    if text is None:
        return json.dumps(output, ensure_ascii=False, default=str)
    lines = summary_lines(output)
    if "approved" in output and not lines:
        lines = [f"approved: {'yes' if output['approved'] else 'no'}"]
    return "\n".join([*lines, text])


def summary_lines(output: Mapping[str, Any]) -> list[str]:
    """The lines that explain `output`, or none for topologies whose answer says it all."""
    if "approved" in output and "validations" in output:
        return _crosscheck(output)
    if "transcript" in output and "rounds" in output:
        return _debate(output)
    if "escalations" in output and "subtasks" in output:
        return _chain(output)
    if "routing" in output and "results" in output:
        return _delegation(output)
    if "members" in output and "failed" in output:
        return _ensemble(output)
    if output.get("mode") in ("sequential", "parallel", "conditional") and "results" in output:
        return _compound(output)
    return []


def _crosscheck(output: Mapping[str, Any]) -> list[str]:
    checkers = output.get("checkers") or len(output.get("validations") or [])
    counts = [
        f"{output.get('approvals', 0)} of {checkers} checkers approved",
        f"{output.get('rejections', 0)} rejected",
        f"{output.get('abstentions', 0)} abstained",
    ]
    lines = [
        f"approved: {'yes' if output['approved'] else 'no'} · {', '.join(counts)} ({output.get('method', '?')})"
    ]
    for validation in output.get("validations") or []:
        if validation.get("parsed") is False:
            lines.append(f"  {validation.get('checker')} abstained: its reply could not be read as a verdict")
    issues = [i for v in output.get("validations") or [] if v.get("parsed") is not False for i in v["issues"]]
    lines += _items("issues", list(dict.fromkeys(str(issue) for issue in issues)))
    return lines


def _debate(output: Mapping[str, Any]) -> list[str]:
    rounds = output.get("rounds", 0)
    state = "converged" if output.get("converged") else "did not converge"
    parts = [f"debate: {rounds} round{'s' if rounds != 1 else ''}, {state}"]
    if output.get("winner"):
        confidence = output.get("confidence")
        parts.append(
            f"winner {output['winner']}"
            + (f" (confidence {confidence:.2f})" if confidence is not None else "")
        )
    lines = [" · ".join(parts)]
    if output.get("mediator_fallback"):
        lines.append(
            f"  the mediator's ({output.get('mediator')}) reply could not be read: no verdict from it; "
            "the verdict below is the recorded fallback"
        )
    elif output.get("mediator"):
        lines.append(f"  verdict by the mediator, {output['mediator']}")
    else:
        lines.append("  no mediator: the verdict is the last round")
    return lines


def _chain(output: Mapping[str, Any]) -> list[str]:
    flat: list[Mapping[str, Any]] = []
    stack = list(output.get("subtasks") or [])
    while stack:
        task = stack.pop(0)
        flat.append(task)
        stack = list(task.get("subtasks") or []) + stack
    escalated = [t for t in flat if t.get("escalated")]
    lines = [
        f"chain: {len(flat)} subtasks under {output.get('commander', 'the commander')}, {len(escalated)} escalated"
    ]
    lines += _items(
        "escalated",
        [
            f"{t.get('task')} ({t.get('assigned_to')}, confidence {t.get('confidence', 0):.2f}) → up a level"
            for t in escalated
        ],
    )
    if any(t.get("plan_fallback") for t in flat):
        lines.append("  a plan could not be read; its task was done without subtasks (recorded fallback)")
    return lines


def _delegation(output: Mapping[str, Any]) -> list[str]:
    results = output.get("results") or []
    routing = ", ".join(f"{slot} {n}" for slot, n in (output.get("routing") or {}).items())
    lines = [f"delegation: {len(results)} task{'s' if len(results) != 1 else ''} routed ({routing})"]
    lines += _items(
        "routing",
        [f"{r.get('task')} → {r.get('assigned_to')} ({r.get('agent')}): {r.get('reason')}" for r in results],
    )
    return lines


def _ensemble(output: Mapping[str, Any]) -> list[str]:
    members = output.get("members") or []
    failed = output.get("failed") or []
    method = output.get("method") or output.get("aggregation_method")
    line = f"ensemble: {len(members)} answered, {len(failed)} failed" + (f" ({method})" if method else "")
    return [line, *_items("failed", [str(f) for f in failed])]


def _compound(output: Mapping[str, Any]) -> list[str]:
    results = output["results"]
    names = list(results) if isinstance(results, Mapping) else [r.get("topology") for r in results]
    joiner = " + " if output["mode"] == "parallel" else " → "
    line = f"compound ({output['mode']}): {joiner.join(str(n) for n in names)}"
    if output["mode"] == "conditional":
        line += f" · chosen: {output.get('chosen') or 'none (no condition matched, no default)'}"
    return [line]


def _items(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    shown = [f"  - {' '.join(item.split())}" for item in items[:_MAX_ITEMS]]
    more = [f"  ... and {len(items) - _MAX_ITEMS} more"] if len(items) > _MAX_ITEMS else []
    return [f"{title}:", *shown, *more]
