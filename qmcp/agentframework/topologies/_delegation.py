"""Delegation: a router assigns each task to the specialist that matches it, balancing load.

Tasks come from `input["tasks"]` (strings or `{"task", "role"?, "capability"?}`), else the one
input task. `routing_strategy`:
* `role` — a task's `role` names the specialists' role;
* `capability` — a task's `capability` must be one of the specialist's capabilities; without
  one, specialists are scored by the words their name, role and description share with the task;
* `round_robin` — every specialist qualifies.
When a task is ambiguous and a `router` slot exists, the router agent chooses (a durable
step). Among qualifying specialists the least loaded wins when `load_balance` is on.
Tasks nobody matches go to the `fallback_agent_name` agent, else the run stops with an error
naming the task — before any step, when routing needs no model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidConfigError, MissingSlotError, StepFailedError, UserInputError
from ..models import AgentType, DelegationConfig, TopologyType
from ._base import BaseTopology, topology
from ._context import StepContext, StepResult, input_text

__all__ = ["ROUTER_SLOT", "DelegationTopology"]

ROUTER_SLOT = "router"
_WORD = re.compile(r"[a-z0-9]{3,}")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


@topology
class DelegationTopology(BaseTopology):
    topology_type = TopologyType.DELEGATION
    config: DelegationConfig
    config_class = DelegationConfig
    shape_note = "the router decides which specialist runs"

    @staticmethod
    def task_key(index: int, slot: str) -> str:
        return f"delegation/task-{index}:{slot}"

    @staticmethod
    def route_key(index: int) -> str:
        return f"delegation/route-{index}"

    def fallback_slot(self, agents: Mapping[str, AgentType]) -> str | None:
        name = self.config.fallback_agent_name
        if name is None:
            return None
        slot = next((s for s, a in agents.items() if a.name == name), None)
        if slot is None:
            raise MissingSlotError(f"fallback_agent_name {name!r} is not an agent of this topology")
        return slot

    def specialists(self, agents: Mapping[str, AgentType]) -> list[str]:
        fallback = self.fallback_slot(agents)
        return [s for s in agents if s not in (ROUTER_SLOT, fallback)]

    def validate_team(self, agents: Mapping[str, AgentType]) -> None:
        if not self.specialists(agents) and self.fallback_slot(agents) is None:
            raise MissingSlotError("delegation needs at least one specialist slot besides 'router'")

    async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
        tasks = _tasks(input_data)
        specialists = self.specialists(ctx.agents)
        load = dict.fromkeys([s for s in [*specialists, self.fallback_slot(ctx.agents)] if s], 0)
        matches = [self._candidates(ctx.agents, specialists, task) for task in tasks]
        if ROUTER_SLOT not in ctx.agents and self.fallback_slot(ctx.agents) is None:
            for index, (task, candidates) in enumerate(zip(tasks, matches, strict=True)):
                if not candidates:
                    raise UserInputError(
                        f"no specialist matches task {index} ({task['task'][:60]!r}) and there is no "
                        "fallback_agent_name; add a matching specialist, a 'router' slot or a fallback"
                    )
        assignments = []
        for index, (task, candidates) in enumerate(zip(tasks, matches, strict=True)):
            reason = "matched"
            if ROUTER_SLOT in ctx.agents and (
                len(candidates) != 1 and self.config.routing_strategy != "round_robin"
            ):
                candidates, reason = await self._ask_router(ctx, specialists, task, index, candidates)
            if not candidates:
                fallback = self.fallback_slot(ctx.agents)
                if fallback is None:
                    raise InvalidConfigError(
                        f"no specialist matches task {index} ({task['task'][:60]!r}) and there is no fallback_agent_name"
                    )
                candidates, reason = [fallback], "fallback"
            chosen = (
                min(candidates, key=lambda s: (load[s], candidates.index(s)))
                if self.config.load_balance
                else candidates[0]
            )
            load[chosen] += 1
            assignments.append((index, task, chosen, reason))
        results = await ctx.gather(
            [
                ctx.invoke(slot, _task_prompt(task["task"]), key=self.task_key(i, slot))
                for i, task, slot, _ in assignments
            ]
        )
        failed = next((r for r in results if isinstance(r, StepFailedError)), None)
        if failed is not None:
            raise failed
        report = [
            {
                "task": task["task"],
                "assigned_to": slot,
                "agent": result.agent_name,
                "reason": reason,
                "output": result.text,
            }
            for (_, task, slot, reason), result in zip(assignments, results, strict=True)
            if isinstance(result, StepResult)  # every one: a failure was raised above
        ]
        return {
            "answer": report[0]["output"]
            if len(report) == 1
            else "\n\n".join(f"[{r['task']}] {r['output']}" for r in report),
            "results": report,
            "routing": {slot: count for slot, count in load.items() if count},
        }

    def _candidates(
        self, agents: Mapping[str, AgentType], specialists: list[str], task: dict[str, Any]
    ) -> list[str]:
        strategy = self.config.routing_strategy
        if strategy == "round_robin":
            return list(specialists)
        if task.get("role"):
            return [s for s in specialists if str(agents[s].role) == task["role"]]
        if task.get("capability"):
            return [
                s
                for s in specialists
                if task["capability"] in [str(c) for c in agents[s].agent_config.capabilities]
            ]
        if strategy == "role":
            return []
        words = _words(task["task"])
        scores = {
            s: len(words & _words(f"{s} {agents[s].name} {agents[s].role} {agents[s].description}"))
            for s in specialists
        }
        best = max(scores.values(), default=0)
        return [s for s in specialists if best and scores[s] == best]

    async def _ask_router(
        self,
        ctx: StepContext,
        specialists: list[str],
        task: dict[str, Any],
        index: int,
        candidates: list[str],
    ) -> tuple[list[str], str]:
        choices = candidates or specialists
        schema = {
            "type": "object",
            "properties": {
                "specialist": {"type": "string", "enum": [*choices, "none"]},
                "reason": {"type": "string"},
            },
            "required": ["specialist"],
        }
        roster = "\n".join(f"- {s}: {ctx.agents[s].role}, {ctx.agents[s].description}" for s in choices)
        decision = await ctx.invoke(
            ROUTER_SLOT,
            f"Task: {task['task']}\n\nSpecialists:\n{roster}\n\nChoose the specialist best suited to the task.",
            key=self.route_key(index),
            schema=schema,
            fallback={"specialist": "none", "reason": "the router's reply could not be read"},
        )
        picked = str((decision.data or {}).get("specialist"))
        reason = str((decision.data or {}).get("reason") or "chosen by the router")
        return ([picked], reason) if picked in choices else ([], reason)


def _tasks(input_data: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = input_data.get("tasks")
    if raw is None:
        return [{"task": input_text(input_data)}]
    if not isinstance(raw, list) or not raw:
        raise UserInputError("input 'tasks' must be a non-empty list of strings or {'task': ...} objects")
    tasks = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            tasks.append({"task": item})
        elif isinstance(item, dict) and isinstance(item.get("task"), str):
            tasks.append(item)
        else:
            raise UserInputError(f"input tasks[{index}] must be a string or an object with a 'task' string")
    return tasks


def _task_prompt(task: str) -> str:
    return f"Task: {task}\n\nYou were chosen for this task as the best-suited specialist. Do it and report the result."
