"""The team every concurrent writer runs: three members and a synthesizer on a scripted model with latency."""

from __future__ import annotations

from qmcp.agentframework.llm import ScriptedModel, register_model, unregister_model
from qmcp.agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    EnsembleConfig,
    Topology,
    TopologyType,
)

__all__ = ["MODEL", "STEPS", "register", "team", "unregister"]

MODEL = "scripted:reliability-writer"
STEPS = 4
"""Step rows per execution: three members and the aggregator."""


def register() -> ScriptedModel:
    model = ScriptedModel(name=MODEL, latency=0.005, replies=lambda prompt, _i: f"answer {len(prompt)}")
    register_model(MODEL, model.model)
    return model


def unregister() -> None:
    unregister_model(MODEL)


def team() -> tuple[Topology, dict[str, AgentType]]:
    config = AgentConfig(model=MODEL).model_dump()
    agents = {
        f"m{i}": AgentType(name=f"writer-{i}", role=AgentRole.RESEARCHER, config=config) for i in range(3)
    }
    agents["aggregator"] = AgentType(name="writer-synthesizer", role=AgentRole.SYNTHESIZER, config=config)
    topology = Topology(
        name="writers",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method="synthesis").model_dump(),
    )
    return topology, agents
