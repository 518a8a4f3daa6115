# The seed's "Complete Local Execution" example, verbatim; only the indentation the seed
# file lost is restored.
import asyncio
from qmcp.agentframework.models import (
AgentType, AgentRole, AgentConfig, Topology, TopologyType, EnsembleConfig,
Models, # Pre-configured model registry
)
from qmcp.agentframework.runners import LocalRunner, RunConfig
async def main():
    runner = LocalRunner(
        config=RunConfig(timeout_seconds=300),
        db_url="sqlite+aiosqlite:///./demo.db",
    )
    # Use pre-configured model from registry
    agents = {
        "ensemble_0": AgentType(
            name="researcher_1",
            description="Research agent 1",
            role=AgentRole.SPECIALIST,
            config=AgentConfig(model_config_obj=Models.CLAUDE_SONNET_4).model_dump(),
        ),
        "ensemble_1": AgentType(
            name="researcher_2",
            description="Research agent 2",
            role=AgentRole.SPECIALIST,
            config=AgentConfig(model_config_obj=Models.CLAUDE_SONNET_4).model_dump(),
        ),
        "aggregator": AgentType(
            name="synthesizer",
            description="Synthesizes results",
            role=AgentRole.SYNTHESIZER,
            config=AgentConfig(model_config_obj=Models.CLAUDE_SONNET_4).model_dump(),
        ),
    }
    topology = Topology(
        name="research_ensemble",
        description="Parallel research with synthesis",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method="synthesis").model_dump(),
    )
    result = await runner.run(
        topology=topology,
        agents=agents,
        input_data={"prompt": "What are recent quantum computing developments?"},
    )
    print(f"Status: {result.status}")
    print(f"Duration: {result.duration_ms}ms")
    print(f"Output: {result.output}")
asyncio.run(main())
