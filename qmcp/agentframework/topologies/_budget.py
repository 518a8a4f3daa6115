"""The run's token and cost budget, checked before every model call.

`RunConfig.max_tokens` / `max_cost_usd` bound the whole execution — every attempt, replayed steps
included: an attempt starts from what the execution has spent so far. `AgentConfig.max_total_tokens`
/ `max_cost_usd` bound one agent's calls in the execution. Before a call, its estimate (the prompt's
characters / 4 plus its maximum output: the agent's `max_tokens`, else the model's
`max_output_tokens`, else 4096; priced from the `Models` registry) must fit beside what is spent
and what the calls in flight may still spend; a call that would fit once those settle waits for
them, one that cannot fit is not started and the run stops with `BudgetExceededError`. The calls
in flight finish and are recorded, so the execution spends at most its budget plus what those
calls used beyond their estimates. A model with no price in the registry counts tokens only in the
check (warned once per process); its recorded cost still counts once paid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...observability import get_logger
from ..errors import BudgetExceededError
from ..models import Models, Usage

if TYPE_CHECKING:
    from ..store import StepRecord

__all__ = ["DEFAULT_MAX_OUTPUT", "Budget", "estimate_prompt_tokens"]

DEFAULT_MAX_OUTPUT = 4096
"""The output a call is assumed to reach when neither the agent nor the model registry says."""

_warned: set[str] = set()


def _agent_limit(config: Mapping[str, Any]) -> tuple[int | None, float | None]:
    return (config.get("max_total_tokens"), config.get("max_cost_usd"))


def estimate_prompt_tokens(system: str | None, contents: list[str]) -> int:
    """About four characters a token: what every tokenizer of the main providers comes close to."""
    return (len(system or "") + sum(len(c) for c in contents)) // 4 + 1


@dataclass
class _Spend:
    spent: Usage = field(default_factory=Usage)
    reserved: Usage = field(default_factory=Usage)
    """The estimates of the calls in flight."""


@dataclass(frozen=True)
class Reservation:
    agent: str
    estimate: Usage


@dataclass
class Budget:
    """What one execution may spend and has spent; shared by every step of an attempt."""

    execution_id: str
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    scope: str = "the run"
    """Who the budget bounds, in its error: "the run", or e.g. the server's "the tool call"."""
    settings: tuple[str, str] | None = None
    """The settings of (max_tokens, max_cost_usd) its error names as the fix; None: a run's resume."""
    run: _Spend = field(default_factory=_Spend)
    agents: dict[str, _Spend] = field(default_factory=dict)
    _settled: asyncio.Event | None = field(default=None, repr=False)

    @classmethod
    def for_execution(
        cls,
        execution_id: object,
        *,
        max_tokens: int | None,
        max_cost_usd: float | None,
        agent_configs: Iterable[Mapping[str, Any]],
        spent: Usage,
        completed: Mapping[str, StepRecord],
    ) -> Budget | None:
        """The budget of an attempt, starting from what the execution spent (`spent`, its stored
        totals, which the claim has just counted from every attempt's usage rows, killed and displaced
        ones included; the completed steps' own sum when larger, as for totals kept from before usage
        rows, migration 0007); None when
        neither the run nor any of `agent_configs` (the team's, as stored) limits anything, so that
        an unlimited run checks nothing."""
        limited = max_tokens is not None or max_cost_usd is not None
        if not limited and not any(_agent_limit(config) != (None, None) for config in agent_configs):
            return None
        budget = cls(str(execution_id), max_tokens, max_cost_usd)
        steps = Usage()
        for record in completed.values():
            if record.inherited:  # a fork's copy of its parent's step: paid by the parent
                continue
            used = record.usage
            steps.incr(used)
            budget.agents.setdefault(record.agent_name, _Spend()).spent.incr(used)
        budget.run.spent = Usage(
            requests=max(spent.requests, steps.requests),
            input_tokens=max(spent.input_tokens, steps.input_tokens),
            output_tokens=max(spent.output_tokens, steps.output_tokens),
            cost_usd=max(spent.cost_usd, steps.cost_usd),
        )
        return budget

    async def reserve(
        self,
        agent: str,
        model: str,
        prompt_tokens: int,
        max_output: int | None,
        agent_limit: tuple[int | None, float | None] = (None, None),
    ) -> Reservation:
        """Hold the estimate of one call of `agent` on `model`; raises `BudgetExceededError` if it
        cannot fit, waits while it fits only once calls in flight have settled. `agent_limit` is
        the agent's own (max tokens, max cost) in the execution."""
        config = Models.get(model)
        output = max_output or (config.max_output_tokens if config is not None else DEFAULT_MAX_OUTPUT)
        if config is not None:
            cost = config.cost(prompt_tokens, output)
        else:
            cost = 0.0
            if (self.max_cost_usd is not None or agent_limit[1] is not None) and model not in _warned:
                _warned.add(model)
                get_logger().warning(
                    "budget.unpriced_model",
                    model=model,
                    note="no price in the Models registry: the cost budget sees its calls only once they "
                    "are paid, and counts their tokens; add it with Models.register(ModelConfig(...))",
                )
        estimate = Usage(requests=1, input_tokens=prompt_tokens, output_tokens=output, cost_usd=cost)
        agent_spend = self.agents.setdefault(agent, _Spend())
        while True:
            self._check(agent, agent_spend, agent_limit, estimate, reserved=False)  # cannot fit: raises
            if self._check(agent, agent_spend, agent_limit, estimate, reserved=True):
                break
            if self._settled is None:
                self._settled = asyncio.Event()
            await self._settled.wait()
        for spend in (self.run, agent_spend):
            spend.reserved.incr(estimate)
        return Reservation(agent, estimate)

    def settle(self, reservation: Reservation, used: Usage) -> None:
        """The call ended: its estimate is released and what it `used` (nothing if it failed) is spent."""
        released = Usage(
            requests=-reservation.estimate.requests,
            input_tokens=-reservation.estimate.input_tokens,
            output_tokens=-reservation.estimate.output_tokens,
            cost_usd=-reservation.estimate.cost_usd,
        )
        for spend in (self.run, self.agents.get(reservation.agent)):
            if spend is not None:
                spend.reserved.incr(released)
                spend.spent.incr(used)
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    def _check(
        self,
        agent: str,
        agent_spend: _Spend,
        agent_limit: tuple[int | None, float | None],
        estimate: Usage,
        *,
        reserved: bool,
    ) -> bool:
        """Whether the call fits (beside the calls in flight when `reserved`); without `reserved`,
        a call that does not fit raises."""
        limits: list[tuple[str, _Spend, int | None, float | None]] = [
            (self.scope, self.run, self.max_tokens, self.max_cost_usd)
        ]
        if agent_limit != (None, None):
            limits.append((f"agent {agent!r}", agent_spend, *agent_limit))
        tokens, cost = estimate.total_tokens, estimate.cost_usd
        for who, spend, max_tokens, max_cost in limits:
            held = spend.reserved if reserved else Usage()
            spent_tokens, spent_cost = spend.spent.total_tokens, spend.spent.cost_usd
            if max_tokens is not None and spent_tokens + held.total_tokens + tokens > max_tokens:
                if reserved:
                    return False
                self._exceeded(
                    who,
                    agent,
                    f"{spent_tokens:,} tokens",
                    f"{max_tokens:,} tokens",
                    f"about {tokens:,} tokens",
                    spent_tokens,
                    max_tokens,
                    "tokens",
                    "--max-tokens",
                )
            if max_cost is not None and spent_cost + held.cost_usd + cost > max_cost:
                if reserved:
                    return False
                self._exceeded(
                    who,
                    agent,
                    f"${spent_cost:.4f}",
                    f"${max_cost:.4f}",
                    f"about ${cost:.4f}",
                    spent_cost,
                    max_cost,
                    "usd",
                    "--max-cost",
                )
        return True

    def _exceeded(
        self,
        who: str,
        agent: str,
        spent: str,
        budget: str,
        estimate: str,
        spent_value: float,
        budget_value: float,
        unit: str,
        option: str,
    ) -> None:
        if who == self.scope and self.settings is not None:
            fix = f"the limit is the setting {self.settings[0 if unit == 'tokens' else 1]}"
        elif who == self.scope:
            fix = f"raise it with: qmcp executions resume {self.execution_id} {option} N"
        else:
            fix = "the agent's budget is part of its definition (AgentConfig); run again with a higher one"
        raise BudgetExceededError(
            f"budget exceeded: {who} spent {spent} of its budget of {budget}, and the next call of agent {agent!r} "
            f"({estimate}) would not fit; {fix}",
            spent=spent_value,
            budget=budget_value,
            unit=unit,
        )
