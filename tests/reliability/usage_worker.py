"""A run the usage test kills: a four-stage pipeline whose model writes a line to a file for every
call it answers, before the answer goes back; the last stage's model never answers.

argv: the database URL, the file of answered calls. The test waits for three completed steps, kills
this process with SIGKILL while the fourth call is in flight, and resumes the execution itself.
"""

from __future__ import annotations

import asyncio
import sys

from qmcp.agentframework.llm import ScriptedModel, register_model
from qmcp.agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    PipelineConfig,
    Topology,
    TopologyType,
)
from qmcp.agentframework.runners import LocalRunner

ANSWERING = "scripted:usage-answering"
STALLING = "scripted:usage-stalling"


def counting(path: str) -> ScriptedModel:
    """A model that records each call it answers in `path` (one line each), then answers."""

    def reply(prompt: str, index: int) -> str:
        with open(path, "a") as answered:
            answered.write(f"{index}\n")
        return f"answer {index} to {len(prompt)} characters"

    return ScriptedModel(name=ANSWERING, replies=reply)


def team() -> tuple[Topology, dict[str, AgentType]]:
    def agent(name: str, model: str) -> AgentType:
        return AgentType(name=name, role=AgentRole.SPECIALIST, config=AgentConfig(model=model).model_dump())

    topology = Topology(
        name="paid", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump()
    )
    agents = {f"s{i}": agent(f"paid-{i}", ANSWERING) for i in range(3)}
    return topology, {**agents, "s3": agent("paid-3", STALLING)}


def main() -> None:
    url, answered = sys.argv[1], sys.argv[2]
    register_model(ANSWERING, counting(answered).model)
    register_model(STALLING, ScriptedModel(name=STALLING, latency=3600).model)
    topology, agents = team()
    asyncio.run(LocalRunner(db_url=url).run(topology, agents, {"prompt": "what does a killed run cost?"}))


if __name__ == "__main__":
    main()
