"""Aggregation of ensemble answers and consensus of cross-check verdicts.

These are the functions the topologies use, and the ones `metaflow_helpers` exports for
hand-written flows, so a Metaflow run aggregates exactly like a local one. They read the shapes a
flow has at hand: reply text, `invoke_agent` results (`{"agent", "output", "data", ...}`), chat
messages (`{"content": ...}`) and `(name, answer)` pairs. A shape they cannot read is one
`MalformedOutputError` naming it, never its repr taken as an answer.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import InvalidConfigError, MalformedOutputError
from ._parsing import extract_confidence, extract_number, normalize_answer, strip_confidence
from ._verdict import parse_verdict, verdict

__all__ = [
    "AGGREGATION_METHODS",
    "CONSENSUS_METHODS",
    "aggregate_results",
    "combine_members",
    "determine_consensus",
    "read_members",
    "synthesis_prompt",
]

AGGREGATION_METHODS = ("vote", "average", "weighted", "concat", "best_of", "synthesis")
CONSENSUS_METHODS = ("unanimous", "majority", "weighted")


_TEXT_KEYS = ("answer", "output", "content", "text", "result")
"""Where a dict holds its answer: ours (`answer`, `output`), chat messages (`content`), others."""


def _answer_text(result: Any, where: str) -> str:
    """The text of one answer: a string, a number, or a dict's text under one of `_TEXT_KEYS`."""
    if isinstance(result, str):
        return result
    if isinstance(result, int | float) and not isinstance(result, bool):
        return str(result)
    if isinstance(result, Mapping):
        for key in _TEXT_KEYS:
            value = result.get(key)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return str(value)
            if isinstance(value, list) and value and all(_is_text_part(part) for part in value):
                return "".join(part["text"] for part in value)  # chat content as text parts
        if result.get("error"):
            raise MalformedOutputError(f"{where} failed ({result['error']}); leave it out, or retry it")
        keys = ", ".join(map(str, result)) or "none"
        raise MalformedOutputError(
            f"{where} has no answer to read: a dict needs a text under one of {', '.join(_TEXT_KEYS)} (it has: {keys})"
        )
    raise MalformedOutputError(
        f"{where} is a {type(result).__name__}; pass text, a number, or a dict with the text under one of "
        f"{', '.join(_TEXT_KEYS)}"
    )


def _is_text_part(part: Any) -> bool:
    return isinstance(part, Mapping) and isinstance(part.get("text"), str)


def _named(item: Any, index: int, what: str) -> tuple[str, Any]:
    """`(name, value)` from a pair, or from a dict naming its `agent` (an `invoke_agent` result) or `checker`."""
    if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str):
        return item[0], item[1]
    if isinstance(item, Mapping):
        for key in ("agent", "checker", "name", "slot"):
            if isinstance(item.get(key), str):
                return item[key], item
        return f"{what} {index + 1}", item
    if isinstance(item, str):
        return f"{what} {index + 1}", item
    raise MalformedOutputError(
        f"{what} {index + 1} is a {type(item).__name__}; pass (name, answer) pairs, answer dicts or texts"
    )


def synthesis_prompt(task: str, members: Sequence[dict[str, Any]]) -> str:
    """What the aggregator agent is asked in `synthesis` mode."""
    answers = "\n\n".join(f"Answer {i + 1} ({m['agent']}):\n{m['answer']}" for i, m in enumerate(members))
    return (
        f"Task: {task}\n\n{len(members)} team members answered independently:\n\n{answers}\n\n"
        "Write one answer to the task that combines their best points and resolves disagreements."
    )


def read_members(results: Sequence[Any]) -> list[dict[str, Any]]:
    """Each member's `{"agent", "answer", "confidence"}`, from `(name, answer)` pairs, `invoke_agent`
    results or answer dicts (see `_answer_text`); a `Confidence: X` line is taken out of the answer."""
    if isinstance(results, str | bytes | Mapping) or not isinstance(results, Sequence):
        raise MalformedOutputError(
            f"aggregate_results takes a list of member answers, not a {type(results).__name__}"
        )
    if not results:
        raise MalformedOutputError("no member answers to aggregate")
    members: list[dict[str, Any]] = []
    for index, item in enumerate(results):
        name, result = _named(item, index, "member")
        text = _answer_text(result, f"the answer of {name!r}")
        members.append(
            {
                "agent": name,
                "answer": strip_confidence(text) or text,
                "confidence": extract_confidence(
                    dict(result) if isinstance(result, Mapping) and "confidence" in result else text
                ),
            }
        )
    return members


def aggregate_results(
    results: Sequence[Any],
    method: str = "vote",
    *,
    aggregator: Callable[[str], Any] | None = None,
    task: str = "",
) -> dict[str, Any]:
    """Combine member answers by `method`.

    `results` are `(agent_name, answer)` pairs, `invoke_agent` results, or answer dicts; an answer is
    text, a number, or a dict with its text under `answer`, `output`, `content` (a chat message),
    `text` or `result`, and an optional `confidence`. Returns `{"method", "members", "answer", ...}`.

    `synthesis` asks `aggregator` (a function from a prompt to the aggregator agent's reply, e.g.
    `lambda prompt: invoke_agent(AGGREGATOR, {"prompt": prompt})`) to write the answer from
    `synthesis_prompt(task, members)`; without one it raises, saying so.
    """
    if method not in AGGREGATION_METHODS:
        raise InvalidConfigError(
            f"unknown aggregation method {method!r}; choose one of: {', '.join(AGGREGATION_METHODS)}"
        )
    members = read_members(results)
    if method == "synthesis":
        if aggregator is None:
            raise InvalidConfigError(
                "aggregation method 'synthesis' needs the aggregator agent's answer: pass aggregator=, a "
                "function taking a prompt and returning the aggregator's reply (e.g. lambda prompt: "
                "invoke_agent(AGGREGATOR, {'prompt': prompt})), and task= (the task the members answered)"
            )
        reply = aggregator(synthesis_prompt(task, members))
        return {"method": method, "members": members, "answer": _answer_text(reply, "the aggregator's reply")}
    return combine_members(members, method)


def combine_members(members: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """The answer of `read_members`'s members by `method` (every method but `synthesis`, which an agent writes)."""
    out: dict[str, Any] = {"method": method, "members": members}
    if method == "vote":
        counts = Counter(normalize_answer(m["answer"]) for m in members)
        winner, votes = max(counts.items(), key=lambda kv: (kv[1], -_first_index(members, kv[0])))
        out |= {
            "answer": next(m["answer"] for m in members if normalize_answer(m["answer"]) == winner),
            "votes": votes,
            "agreement": votes / len(members),
            "distinct_answers": len(counts),
        }
    elif method == "average":
        values = [extract_number(m["answer"]) for m in members]
        numeric = [v for v in values if v is not None]
        if not numeric:
            raise MalformedOutputError("average needs numeric answers, and no member answered with a number")
        out |= {
            "answer": sum(numeric) / len(numeric),
            "values": numeric,
            "non_numeric": len(values) - len(numeric),
        }
    elif method == "weighted":
        values = [extract_number(m["answer"]) for m in members]
        total = sum(m["confidence"] for m in members) or 1.0
        if all(v is not None for v in values):
            numbers = [v for v in values if v is not None]
            weighted = sum(v * m["confidence"] for v, m in zip(numbers, members, strict=True)) / total
            out |= {"answer": weighted, "values": values}
        else:
            scores: dict[str, float] = {}
            for m in members:
                key = normalize_answer(m["answer"])
                scores[key] = scores.get(key, 0.0) + m["confidence"]
            winner = max(scores, key=lambda k: (scores[k], -_first_index(members, k)))
            out |= {
                "answer": next(m["answer"] for m in members if normalize_answer(m["answer"]) == winner),
                "weight": scores[winner] / total,
            }
    elif method == "concat":
        out["answer"] = "\n\n".join(f"[{m['agent']}] {m['answer']}" for m in members)
    elif method == "best_of":
        best = max(range(len(members)), key=lambda i: (members[i]["confidence"], -i))
        out |= {
            "answer": members[best]["answer"],
            "best_agent": members[best]["agent"],
            "confidence": members[best]["confidence"],
        }
    else:
        raise InvalidConfigError(f"method {method!r} is not combined here; use aggregate_results")
    return out


def _first_index(members: Sequence[dict[str, Any]], normalized: str) -> int:
    return next(i for i, m in enumerate(members) if normalize_answer(m["answer"]) == normalized)


def _verdict(item: Any, index: int) -> dict[str, Any]:
    """One checker's `{approved, confidence, issues, ...}` from a verdict dict, a `(checker, dict)` pair,
    an `invoke_agent` result (its parsed `data`; a failed call abstains) or the checker's reply text
    (a string, a chat message): text is read by the crosscheck's own `parse_verdict`."""
    name, value = _named(item, index, "checker")
    if isinstance(value, Mapping) and "approved" not in value:
        if value.get("error"):
            value = {**verdict(None), "issues": [f"checker failed: {value['error']}"]}
        elif isinstance(value.get("data"), Mapping):
            value = value["data"]
        else:
            with contextlib.suppress(MalformedOutputError):  # no text either: refused below
                value = parse_verdict(_answer_text(value, f"the verdict of {name!r}"))
    elif isinstance(value, str):
        value = parse_verdict(value)
    if not isinstance(value, Mapping) or not isinstance(value.get("approved"), bool):
        shown = (
            f"keys: {', '.join(map(str, value)) or 'none'}"
            if isinstance(value, Mapping)
            else type(value).__name__
        )
        raise MalformedOutputError(
            f"the verdict of {name!r} has no true/false 'approved' ({shown}); pass {{approved, confidence, "
            "issues} dicts, the checkers' reply texts, (checker, verdict) pairs or their invoke_agent results"
        )
    return dict(value) if value is item else {"checker": name, **value}


def determine_consensus(
    primary: Any,
    validations: Sequence[Any],
    method: str = "majority",
    *,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Decide whether checkers approve the primary output.

    `primary` is the answer checked: text, or a dict with its text (`output`, `answer`, `content`,
    ...: an `invoke_agent` result does). Each validation is `{approved, confidence, issues}` (plus
    `checker`, and `parsed: False` for a reply that could not be read, which counts as an abstention,
    never as an approval), a `(checker, dict)` pair, or a checker's `invoke_agent` result.
    `unanimous`: every checker approves. `majority`: more than half approve. `weighted`: the
    confidence-weighted share of approvals reaches `threshold`.
    """
    if method not in CONSENSUS_METHODS:
        raise InvalidConfigError(
            f"unknown consensus method {method!r}; choose one of: {', '.join(CONSENSUS_METHODS)}"
        )
    if isinstance(validations, str | bytes | Mapping) or not isinstance(validations, Sequence):
        raise MalformedOutputError(
            f"determine_consensus takes a list of verdicts, not a {type(validations).__name__}"
        )
    validations = [_verdict(item, index) for index, item in enumerate(validations)]
    primary_output = _answer_text(primary, "the primary's answer")
    votes = [v for v in validations if v.get("parsed", True)]
    approvals = [v for v in votes if v.get("approved") is True]
    rejections = [v for v in votes if v.get("approved") is not True]
    total_confidence = sum(float(v.get("confidence", 0.5)) for v in votes)
    score = (
        sum(float(v.get("confidence", 0.5)) for v in approvals) / total_confidence
        if total_confidence
        else 0.0
    )
    if method == "unanimous":
        approved = bool(votes) and len(approvals) == len(validations)
    elif method == "majority":
        approved = len(approvals) > len(validations) / 2
    else:
        approved = bool(votes) and score >= threshold
    issues = [issue for v in validations for issue in (v.get("issues") or [])]
    return {
        "approved": approved,
        "method": method,
        "primary_output": primary_output,
        "approvals": len(approvals),
        "rejections": len(rejections),
        "abstentions": len(validations) - len(votes),
        "checkers": len(validations),
        "score": round(score, 4),
        "issues": issues,
        "validations": list(validations),
    }
