"""The plain step (`StepContext._plain_call`) records, retries, fails and reports as the general path.

`invoke` takes the plain path when nothing around the model call is configured; a budget that can
never bind sends the same steps down the general path, so one ensemble run both ways must leave the
same rows, usage and events.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from qmcp.agentframework.errors import LeaseLostError
from qmcp.agentframework.llm import ScriptedModel, register_model, unregister_model
from qmcp.agentframework.models import EnsembleConfig, Topology, TopologyType
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig
from qmcp.agentframework.store import Database, Lease
from qmcp.agentframework.topologies import StepContext

_VARYING = {"id", "execution_id", "started_at", "completed_at", "recorded_at", "owner_token", "latency_ms"}
"""What differs between any two runs: ids, owners, times, measured latency."""


def _team(agent: Any, prefix: str) -> dict[str, Any]:
    """Members that answer, fail once with a 429 then answer, fail for good (auth), time out, and fail
    for good after a 429;
    fresh models under the same names for each run, so that both runs record the same model strings."""
    models = {
        "plain": ScriptedModel(replies=lambda prompt, i: f"answer {i}"),
        "flaky": ScriptedModel(failures={0: "rate_limit"}),
        "denied": ScriptedModel(failures={0: "auth"}),
        "worse": ScriptedModel(failures={0: "rate_limit", 1: "auth"}),
        "slow": ScriptedModel(latency=0.5),
    }
    for name, model in models.items():
        register_model(f"{prefix}{name}", model)
    return {
        "m0": agent("plain", model=f"{prefix}plain", temperature=0.2, max_tokens=64),
        "m1": agent("flaky", model=f"{prefix}flaky"),
        "m2": agent("denied", model=f"{prefix}denied"),
        "m3": agent("slow", model=f"{prefix}slow", timeout_seconds=0.01),
        "m4": agent("worse", model=f"{prefix}worse"),
        "aggregator": agent("aggregator", role="synthesizer", model=f"{prefix}plain"),
    }


async def _run(runner_class: type, db_url: str, agent: Any, prefix: str, **config: Any) -> dict[str, Any]:
    events: list[tuple[Any, ...]] = []
    runner = runner_class(
        db_url=db_url,
        on_event=lambda e: events.append((e.kind, e.key, e.slot, e.agent_name, e.usage, e.error, e.text)),
        config=RunConfig(max_retries=1, retry_backoff_seconds=0.001, **config),
    )
    topology = Topology(
        name="plain",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method="synthesis", failure_threshold=0.8).model_dump(),
    )
    result = await runner.run(topology, _team(agent, prefix), {"prompt": "p"})
    async with Database(db_url) as db:
        steps = [
            {k: v for k, v in step.model_dump().items() if k not in _VARYING}
            for step in await db.list_steps(result.execution_id)
        ]
        usage = [
            {k: v for k, v in row.model_dump().items() if k not in _VARYING}
            for row in await db.list_usage(result.execution_id)
        ]
        execution = await db.get_execution(result.execution_id, snapshots=False)
    return {
        "status": result.status,
        "output": result.output,
        "error": result.error,
        "steps": sorted(steps, key=lambda s: s["key"]),
        "usage": sorted(usage, key=repr),
        "totals": execution.usage,
        "events": sorted((e for e in events if e[0] != "started"), key=repr),
        "started": sorted(e[1] for e in events if e[0] == "started"),
    }


@pytest.mark.parametrize("runner_class", [LocalRunner, AsyncRunner])
async def test_a_plain_step_is_recorded_as_the_general_path_records_it(
    runner_class, db_url, agent, monkeypatch
):
    prefix = f"scripted:{uuid.uuid4().hex[:8]}-"
    taken: list[str] = []
    plain_call = StepContext._plain_call

    async def counted(self: StepContext, key: str, *args: Any) -> Any:
        taken.append(key)
        return await plain_call(self, key, *args)

    monkeypatch.setattr(StepContext, "_plain_call", counted)
    try:
        plain = await _run(runner_class, db_url, agent, prefix)
        assert len(taken) == 6  # every step: five members and the synthesis
        general = await _run(runner_class, db_url, agent, prefix, max_tokens=10**12)
        assert len(taken) == 6  # none: a budget is configured
    finally:
        for name in ("plain", "flaky", "denied", "slow", "worse"):
            unregister_model(f"{prefix}{name}")
    assert plain == general
    steps = {s["key"]: s for s in plain["steps"]}
    assert [s["status"] for s in steps.values()] == [
        "completed",
        "completed",
        "completed",
        "failed",
        "failed",
        "failed",
    ]
    assert {k: s["attempts"] for k, s in steps.items()} == {
        "ensemble/aggregate": 1,
        "ensemble/member:m0": 1,
        "ensemble/member:m1": 2,
        "ensemble/member:m2": 1,
        "ensemble/member:m3": 2,
        "ensemble/member:m4": 2,  # both paid: the 429, then the refusal
    }
    assert [e[0] for e in plain["events"]].count("retry") == 3
    assert [u["requests"] for u in plain["usage"] if u["key"] == "ensemble/member:m4"] == [2]


@pytest.mark.parametrize("runner_class", [LocalRunner, AsyncRunner])
@pytest.mark.parametrize("path", ["plain", "general"])
async def test_a_step_of_an_execution_no_longer_owned_does_not_call_its_model(
    runner_class, path, db_url, agent, monkeypatch
):
    """Once the lease is known lost, the next step never pays for its model call, on either path.

    One member at a time; the first member's call has the lease lost (as a takeover's fenced save or
    heartbeat would report it), so each later member's check before its call (`Lease.ensure`) fails.
    """
    model = f"scripted:{uuid.uuid4().hex[:8]}-lease"
    lost: list[str] = []
    register_model(model, ScriptedModel(replies=lambda prompt, i: lost.append("taken over") or "a"))
    ensure = Lease.ensure

    async def ensure_then_lose(self: Lease) -> None:
        if lost:
            raise LeaseLostError(f"execution {self.execution_id}: {lost[0]}")
        await ensure(self)

    monkeypatch.setattr(Lease, "ensure", ensure_then_lose)
    try:
        runner = runner_class(
            db_url=db_url,
            config=RunConfig(max_concurrent=1, **({"max_tokens": 10**12} if path == "general" else {})),
        )
        topology = Topology(name="lease", topology_type=TopologyType.ENSEMBLE, config={})
        team = {f"m{i}": agent(f"m{i}", model=model) for i in range(6)}
        result = await runner.run(topology, team, {"prompt": "p"})
    finally:
        unregister_model(model)
    assert result.error is not None and result.error.endswith(": taken over")
    assert lost == ["taken over"]  # the first member's call only
