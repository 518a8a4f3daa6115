"""Aggregation of ensemble answers and consensus of cross-check verdicts.

These are the functions the topologies use, and the ones `metaflow_helpers` exports for
generated flows, so a Metaflow run aggregates exactly like a local one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidConfigError, MalformedOutputError
from ._parsing import extract_confidence, extract_number, normalize_answer, strip_confidence

__all__ = [
    "AGGREGATION_METHODS",
    "CONSENSUS_METHODS",
    "aggregate_results",
    "determine_consensus",
    "synthesis_prompt",
]

AGGREGATION_METHODS = ("vote", "average", "weighted", "concat", "best_of", "synthesis")
CONSENSUS_METHODS = ("unanimous", "majority", "weighted")


def _answer_text(result: Any) -> str:
    if isinstance(result, dict):
        for key in ("answer", "output", "text", "result"):
            if isinstance(value := result.get(key), str):
                return value
        return str(result)
    return str(result)


def synthesis_prompt(task: str, members: Sequence[dict[str, Any]]) -> str:
    """What the aggregator agent is asked in `synthesis` mode."""
    answers = "\n\n".join(f"Answer {i + 1} ({m['agent']}):\n{m['answer']}" for i, m in enumerate(members))
    return (
        f"Task: {task}\n\n{len(members)} team members answered independently:\n\n{answers}\n\n"
        "Write one answer to the task that combines their best points and resolves disagreements."
    )


def aggregate_results(results: Sequence[tuple[str, Any]], method: str = "vote") -> dict[str, Any]:
    """Combine `(agent_name, answer)` pairs by `method`.

    `answer` is reply text or a dict with an `answer`/`output` text and optional `confidence`.
    Returns `{"method", "answer", "members": [...], ...}`; for `synthesis` the `answer` is left
    to the aggregator agent, to be asked `synthesis_prompt(task, members)`.
    """
    if method not in AGGREGATION_METHODS:
        raise InvalidConfigError(
            f"unknown aggregation method {method!r}; choose one of: {', '.join(AGGREGATION_METHODS)}"
        )
    if not results:
        raise MalformedOutputError("no member answers to aggregate")
    members: list[dict[str, Any]] = []
    for name, result in results:
        text = _answer_text(result)
        members.append(
            {
                "agent": name,
                "answer": strip_confidence(text) or text,
                "confidence": extract_confidence(
                    result if isinstance(result, dict) and "confidence" in result else text
                ),
            }
        )
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
    else:  # synthesis: the aggregator agent writes the answer
        out["answer"] = None
    return out


def _first_index(members: Sequence[dict[str, Any]], normalized: str) -> int:
    return next(i for i, m in enumerate(members) if normalize_answer(m["answer"]) == normalized)


def determine_consensus(
    primary: dict[str, Any],
    validations: Sequence[dict[str, Any]],
    method: str = "majority",
    *,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Decide whether checkers approve the primary output.

    Each validation is `{approved, confidence, issues}` (plus `checker`, and `parsed: False` for
    a reply that could not be read, which counts as an abstention, never as an approval).
    `unanimous`: every checker approves. `majority`: more than half approve. `weighted`: the
    confidence-weighted share of approvals reaches `threshold`.
    """
    if method not in CONSENSUS_METHODS:
        raise InvalidConfigError(
            f"unknown consensus method {method!r}; choose one of: {', '.join(CONSENSUS_METHODS)}"
        )
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
        "primary_output": primary.get("output", primary.get("text"))
        if isinstance(primary, dict)
        else primary,
        "approvals": len(approvals),
        "rejections": len(rejections),
        "abstentions": len(validations) - len(votes),
        "checkers": len(validations),
        "score": round(score, 4),
        "issues": issues,
        "validations": list(validations),
    }
