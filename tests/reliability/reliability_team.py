"""The mixed team of the reliability trials: a compound of a pipeline, an ensemble and a debate.

Imported by the tests and by their worker processes (which get this directory on PYTHONPATH),
so both sides register the same scripted models. Replies are pure functions of the prompt, so a
resumed run must end with exactly the output of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json

from qmcp.agentframework.llm import ScriptedModel, register_model, unregister_model
from qmcp.agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    CompoundConfig,
    DebateConfig,
    EnsembleConfig,
    PipelineConfig,
    Topology,
    TopologyType,
)
from qmcp.agentframework.store import Database

__all__ = [
    "INPUT",
    "JUDGE",
    "STEPS",
    "WORKER",
    "compound",
    "register",
    "store_teams",
    "sub_teams",
    "unregister",
]

WORKER = "scripted:reliability-worker"
JUDGE = "scripted:reliability-judge"
INPUT = {"prompt": "Should a durable agent framework commit every step before the next one?"}
STEPS = 3 + (4 + 1) + (2 * 2 + 1)
"""Steps of one run: three stages, four members and the aggregator, two debate rounds and the mediator."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def worker_reply(prompt: str, _index: int) -> str:
    return f"answer {_digest(prompt)}\nConfidence: 0.{int(_digest(prompt)[:2], 16) % 90 + 10}"


def judge_reply(prompt: str, _index: int) -> str:
    return json.dumps({"winner": "proponent", "verdict": f"verdict {_digest(prompt)}", "confidence": 0.7})


def register(latency: float = 0.0) -> dict[str, ScriptedModel]:
    """Register the team's scripted models (replacing earlier ones); returns them by model string."""
    models = {
        WORKER: ScriptedModel(name=WORKER, latency=latency, replies=worker_reply),
        JUDGE: ScriptedModel(name=JUDGE, latency=latency, replies=judge_reply),
    }
    for name, model in models.items():
        register_model(name, model.model)
    return models


def unregister() -> None:
    for name in (WORKER, JUDGE):
        unregister_model(name)


def _agent(name: str, role: AgentRole, model: str = WORKER) -> AgentType:
    return AgentType(
        name=name,
        role=role,
        description=f"{name} of the reliability team",
        config=AgentConfig(model=model).model_dump(),
    )


def sub_teams() -> list[tuple[Topology, dict[str, AgentType]]]:
    """The three stored sub-topologies with their agents; member agents are distinct, so are their prompts."""
    pipeline = Topology(
        name="rel_pipeline", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump()
    )
    ensemble = Topology(
        name="rel_ensemble",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method="synthesis").model_dump(),
    )
    debate = Topology(
        name="rel_debate",
        topology_type=TopologyType.DEBATE,
        config=DebateConfig(max_rounds=2, allow_early_termination=False).model_dump(),
    )
    return [
        (pipeline, {f"stage_{i}": _agent(f"rel-stage-{i}", AgentRole.ANALYST) for i in range(3)}),
        (
            ensemble,
            {
                **{f"member_{i}": _agent(f"rel-member-{i}", AgentRole.RESEARCHER) for i in range(4)},
                "aggregator": _agent("rel-synthesizer", AgentRole.SYNTHESIZER),
            },
        ),
        (
            debate,
            {
                "proponent": _agent("rel-pro", AgentRole.PROPONENT),
                "opponent": _agent("rel-con", AgentRole.OPPONENT),
                "mediator": _agent("rel-mediator", AgentRole.MEDIATOR, JUDGE),
            },
        ),
    ]


def compound() -> Topology:
    """The compound the trials run: the pipeline's answer feeds the ensemble, whose answer feeds the debate."""
    return Topology(
        name="rel_compound",
        topology_type=TopologyType.COMPOUND,
        config=CompoundConfig(
            mode="sequential", sub_topologies=[t.name for t, _ in sub_teams()]
        ).model_dump(),
    )


async def store_teams(url: str) -> None:
    """Store the sub-topologies (a compound runs stored topologies by name)."""
    async with Database(url) as db:
        for topology, agents in sub_teams():
            await db.save_team(topology, agents)
