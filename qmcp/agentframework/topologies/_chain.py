"""Chain of command: the commander plans, delegates down the authority levels, escalates weak results.

Slots belong to a level by prefix (`lieutenant_1` → `lieutenant`). A level with subordinates
below it (and depth left) decomposes its task into subtasks (structured output) and hands
them round robin to the next level; the lowest level executes. A result whose confidence is
below `escalation_threshold` goes one level up, to the superior that delegated it. Every
delegating level synthesizes its subordinates' results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import MissingSlotError, StepFailedError
from ..models import AgentType, ChainOfCommandConfig, TopologyType
from ._base import BaseTopology, topology
from ._context import StepContext, input_text
from ._parsing import extract_confidence, strip_confidence

__all__ = ["PLAN_SCHEMA", "ChainOfCommandTopology"]

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subtasks": {
            "type": "array",
            "items": {"type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]},
        }
    },
    "required": ["subtasks"],
}


@topology
class ChainOfCommandTopology(BaseTopology):
    topology_type = TopologyType.CHAIN_OF_COMMAND
    config: ChainOfCommandConfig
    config_class = ChainOfCommandConfig
    shape_note = "the commander's plan decides which agents run"

    def level_slots(self, slots: list[str], level: int) -> list[str]:
        """The slots of authority level `level`, matched by prefix, in slot order."""
        name = self.config.authority_levels[level]
        longer = [other for other in self.config.authority_levels if other != name and other.startswith(name)]
        return [s for s in slots if s.startswith(name) and not any(s.startswith(o) for o in longer)]

    def validate_team(self, agents: Mapping[str, AgentType]) -> None:
        slots = list(agents)
        commanders = self.level_slots(slots, 0)
        if len(commanders) != 1:
            raise MissingSlotError(
                f"chain of command needs exactly one slot for level {self.config.authority_levels[0]!r}, got {len(commanders)}"
            )
        if not self.level_slots(slots, 1):
            raise MissingSlotError(
                f"chain of command needs at least one slot for level {self.config.authority_levels[1]!r} "
                f"(e.g. {self.config.authority_levels[1]}_1)"
            )

    async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
        slots = list(ctx.agents)
        task = input_text(input_data)
        (commander,) = self.level_slots(slots, 0)
        report = await self._handle(ctx, slots, task, 0, commander, "chain/commander", 0)
        return {
            "answer": report["result"],
            "plan": [s["task"] for s in report.get("subtasks", [])],
            "subtasks": report.get("subtasks", []),
            "escalations": _count_escalations(report),
            "commander": report["agent"],
        }

    async def _handle(
        self, ctx: StepContext, slots: list[str], task: str, level: int, slot: str, key: str, depth: int
    ) -> dict[str, Any]:
        below = self.level_slots(slots, level + 1) if level + 1 < len(self.config.authority_levels) else []
        if not below or depth >= self.config.max_delegation_depth:
            done = await ctx.invoke(slot, _execute_prompt(task), key=f"{key}/execute")
            return _report(done.agent_name, slot, level, done.text)
        plan = await ctx.invoke(
            slot,
            _plan_prompt(task, self.config.max_subtasks),
            key=f"{key}/plan",
            schema=PLAN_SCHEMA,
            fallback={"subtasks": [{"task": task}]},
        )
        subtasks = [
            str(s.get("task", "")) for s in (plan.data or {}).get("subtasks", []) if isinstance(s, dict)
        ]
        subtasks = [s for s in subtasks if s.strip()][: self.config.max_subtasks] or [task]
        results = await ctx.gather(
            [
                self._delegate(
                    ctx, slots, sub, level + 1, below[i % len(below)], f"{key}/{i}", depth + 1, slot
                )
                for i, sub in enumerate(subtasks)
            ]
        )
        failed = next((r for r in results if isinstance(r, StepFailedError)), None)
        if failed is not None:
            raise failed
        reports = [r for r in results if not isinstance(r, StepFailedError)]  # every one: see above
        synthesis = await ctx.invoke(slot, _synthesis_prompt(task, reports), key=f"{key}/synthesize")
        report = _report(synthesis.agent_name, slot, level, synthesis.text)
        report["subtasks"] = reports
        report["plan_fallback"] = plan.fallback
        return report

    async def _delegate(
        self,
        ctx: StepContext,
        slots: list[str],
        task: str,
        level: int,
        slot: str,
        key: str,
        depth: int,
        superior: str,
    ) -> dict[str, Any]:
        report = await self._handle(ctx, slots, task, level, slot, key, depth)
        report = {"task": task, "assigned_to": slot, **report, "escalated": False}
        if report["confidence"] < self.config.escalation_threshold:
            escalated = await ctx.invoke(
                superior,
                _escalation_prompt(task, report["result"], report["confidence"]),
                key=f"{key}/escalation",
            )
            report |= {
                "escalated": True,
                "escalated_to": superior,
                "original_result": report["result"],
                "result": strip_confidence(escalated.text) or escalated.text,
                "confidence": extract_confidence(escalated.text),
            }
        return report


def _report(agent: str, slot: str, level: int, text: str) -> dict[str, Any]:
    return {
        "agent": agent,
        "slot": slot,
        "level": level,
        "result": strip_confidence(text) or text,
        "confidence": extract_confidence(text),
    }


def _count_escalations(report: dict[str, Any]) -> int:
    return sum(int(s.get("escalated", False)) + _count_escalations(s) for s in report.get("subtasks", []))


_CONFIDENCE_LINE = "End with a line 'Confidence: X' where X, between 0 and 1, is how sure you are."


def _execute_prompt(task: str) -> str:
    return f"Task: {task}\n\nDo this task and report the result. {_CONFIDENCE_LINE}"


def _plan_prompt(task: str, max_subtasks: int) -> str:
    return f"Task: {task}\n\nBreak this task into at most {max_subtasks} independent subtasks for your team."


def _synthesis_prompt(task: str, results: list[dict[str, Any]]) -> str:
    reports = "\n\n".join(
        f"Subtask {i + 1}: {r['task']}\nResult ({r['agent']}): {r['result']}" for i, r in enumerate(results)
    )
    return f"Task: {task}\n\nYour team reported:\n\n{reports}\n\nCombine their results into one answer. {_CONFIDENCE_LINE}"


def _escalation_prompt(task: str, result: str, confidence: float) -> str:
    return (
        f"Escalated subtask: {task}\n\nYour subordinate answered with confidence {confidence:.2f}:\n{result}\n\n"
        f"Do the subtask yourself and give a better result. {_CONFIDENCE_LINE}"
    )
