"""Trust from Python: what counts as executable, the digest, objects trusted, stored definitions checked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from qmcp.agentframework.errors import InvalidConfigError, UntrustedDefinitionError
from qmcp.agentframework.models import (
    AgentType,
    CompoundConfig,
    ExecutionStatus,
    Topology,
    TopologyType,
    TrustRecord,
)
from qmcp.agentframework.runners import (
    LocalRunner,
    definition_digest,
    effective_agent,
    executable_items,
    require_trusted,
    require_trusted_execution,
    snapshot_agents,
    trust,
    untrusted,
)
from qmcp.agentframework.store import Database, revoke_trust, trust_history


def _agent(name: str = "a", **config) -> AgentType:
    return AgentType.model_validate({"name": name, "config": {"model": "test", **config}})


def test_plain_agents_name_nothing_executable():
    assert executable_items(_agent()) == []
    assert executable_items(_agent(model="local:smollm2")) == []  # the packaged model
    assert executable_items(_agent(capabilities=["memory", "reasoning"])) == []
    assert (
        executable_items(_agent(capabilities=["structured_output"], output_schema={"type": "object"})) == []
    )


def test_every_kind_of_executable_item_is_listed():
    agent = _agent(
        model="local:/models/evil.gguf",
        base_url="http://198.51.100.7/v1",
        api_key_env="ANTHROPIC_API_KEY",
        capabilities=["tool_use", "structured_output"],
        mixins={
            "tool_use": {
                "tools": ["os:system", "add"],
                "mcp_servers": [
                    {
                        "command": "npx",
                        "args": ["-y", "srv"],
                        "env": {"T": "${TOKEN}"},
                        "env_allow": ["TOKEN"],
                    },
                    {"url": "https://mcp.example/mcp"},
                ],
            },
            "structured_output": {"model": "evil.module:Answer"},
        },
    )
    assert executable_items(agent) == [
        "Python tool 'os:system' (imported, the model may call it)",
        "registered tool 'add' (the model may call it)",
        "MCP server command 'npx -y srv' (started as a process; environment: T, TOKEN)",
        "MCP server 'https://mcp.example/mcp' (receives the model's tool calls)",
        "output model 'evil.module:Answer' (its module is imported)",
        "local model file '/models/evil.gguf' (loaded into this process)",
        "base_url 'http://198.51.100.7/v1' (receives the prompts, and the key of api_key_env)",
        "api_key_env 'ANTHROPIC_API_KEY' (this variable's value is sent as the API key)",
    ]


def test_options_of_executable_mixins_are_validated_when_defined_and_listed():
    with pytest.raises(ValidationError, match=r"mixins.tool_use.tool: Extra inputs"):
        _agent(capabilities=["tool_use"], mixins={"tool_use": {"tool": ["os:system"]}})
    leaky = {"mcp_servers": [{"command": "x", "env": {"K": "${OPENAI_API_KEY}"}}]}
    with pytest.raises(ValidationError, match=r"uses \$\{OPENAI_API_KEY\}, which env_allow does not name"):
        _agent(capabilities=["tool_use"], mixins={"tool_use": leaky})
    row = AgentType(
        name="a", config={"capabilities": ["tool_use"], "mixins": {"tool_use": leaky}}
    )  # unvalidated
    with pytest.raises(
        InvalidConfigError, match=r"^agent 'a': config.mixins.tool_use.mcp_servers.0.stdio: env K"
    ):
        executable_items(row)


def test_digest_is_of_the_canonical_content():
    tooled = {"capabilities": ["tool_use"], "mixins": {"tool_use": {"tools": ["os:system"]}}}
    agent = _agent(**tooled)
    raw = AgentType(name="a", config={"model": "test", **tooled})  # as a database row: defaults left out
    assert definition_digest(agent) == definition_digest(raw)
    assert definition_digest(agent) != definition_digest(_agent(**tooled, system_prompt="Use os.system."))
    assert definition_digest(agent) != definition_digest(_agent("b", **tooled))


async def test_objects_handed_to_a_runner_are_trusted_and_recorded(db_url):
    from qmcp.agentframework.mixins import register_tool, unregister_tool

    register_tool("echo", lambda text: text)
    try:
        tooled = _agent("tooled", capabilities=["tool_use"], mixins={"tool_use": {"tools": ["echo"]}})
        topology = Topology(name="py", topology_type=TopologyType.PIPELINE)
        result = await LocalRunner(db_url=db_url).run(topology, {"only": tooled}, {"prompt": "x"})
    finally:
        unregister_tool("echo")
    assert result.status == ExecutionStatus.COMPLETED, result.error
    async with Database(db_url) as db:
        (record,) = await trust_history(db, "tooled")
        assert (record.via, record.sha256) == ("python", definition_digest(tooled))
        assert record.items == ["registered tool 'echo' (the model may call it)"]
        assert await untrusted(db, [tooled]) == []


async def test_a_compound_refuses_untrusted_stored_sub_teams_before_writing_anything(db_url):
    tooled = _agent("tooled", capabilities=["tool_use"], mixins={"tool_use": {"tools": ["os:system"]}})
    inner = Topology(name="inner", topology_type=TopologyType.PIPELINE)
    outer = Topology(
        name="outer",
        topology_type=TopologyType.COMPOUND,
        config=CompoundConfig(sub_topologies=["inner"]).model_dump(),
    )
    async with Database(db_url) as db:
        await db.save_team(inner, {"only": tooled})  # stored, as `qmcp apply` stores it, but not trusted
    runner = LocalRunner(db_url=db_url)
    with pytest.raises(UntrustedDefinitionError) as refused:
        await runner.run(outer, {}, {"prompt": "x"})
    assert str(refused.value) == (
        "agent 'tooled' (slot 'only' of topology 'inner' (run by compound 'outer')) is not trusted to run "
        "Python tool 'os:system' (imported, the model may call it); review it, then trust it with: "
        "qmcp trust agent tooled"
    )
    assert refused.value.trust_command == ("trust", "agent", "tooled")
    async with Database(db_url) as db:
        assert await db.list_executions() == []
        assert [t.name for t, _ in await db.list_topologies()] == ["inner"]  # `outer` was not stored
        await trust(db, [tooled], via="test")
        await require_trusted(db, {"only": tooled}, topology="inner")
        records = await trust_history(db, "tooled")
    assert [(r.via, isinstance(r, TrustRecord)) for r in records] == [("test", True)]


async def test_an_edited_definition_needs_trust_again_and_the_old_one_stays_trusted(db_url):
    """Records of objects: no stored definition changes here (a change of one revokes, below)."""
    first = _agent("tooled", capabilities=["tool_use"], mixins={"tool_use": {"tools": ["os:system"]}})
    edited = _agent("tooled", capabilities=["tool_use"], mixins={"tool_use": {"tools": ["os:remove"]}})
    async with Database(db_url) as db:
        assert [entry.agent.name for entry in await trust(db, [first], via="test")] == ["tooled"]
        assert await trust(db, [first], via="test") == []  # already trusted: no second record
        assert [entry.digest for entry in await untrusted(db, [edited])] == [definition_digest(edited)]
        await trust(db, [edited], via="test")
        assert await untrusted(db, [first, edited]) == []
        assert len(await trust_history(db, "tooled")) == 2


def test_the_effective_agent_is_judged_under_an_override():
    keyed = _agent(model="openai:gpt-4.1", base_url="http://198.51.100.7/v1", api_key_env="TEAM_A_KEY")
    assert effective_agent(keyed, None) is keyed
    assert effective_agent(keyed, "openai:gpt-4.1") is keyed  # its own model: its own endpoint and key
    test = effective_agent(keyed, "test")  # another model: not the endpoint and key of the one it replaced
    config = test.agent_config
    assert (config.model, config.base_url, config.api_key_env) == ("test", None, None)
    assert executable_items(test) == []
    local = effective_agent(_agent(), "local:/some/path.gguf")
    assert executable_items(local) == ["local model file '/some/path.gguf' (loaded into this process)"]
    assert definition_digest(local) != definition_digest(_agent())  # trust in the agent does not cover it


async def test_a_resume_under_an_untrusted_local_override_is_refused(db_url, scripted):
    model, _ = scripted(failures={0: "auth"})
    topology = Topology(name="py", topology_type=TopologyType.PIPELINE)
    first = await LocalRunner(db_url=db_url).run(topology, {"only": _agent(model=model)}, {"prompt": "x"})
    assert first.status == ExecutionStatus.FAILED
    async with Database(db_url) as db:
        execution = await db.get_execution(first.execution_id)
        run_config = execution.run_config | {"model_override": "local:/some/path.gguf"}
        await db.execute_update(execution.id, {"run_config": run_config})
    with pytest.raises(UntrustedDefinitionError, match=r"local model file '/some/path\.gguf'"):
        await LocalRunner(db_url=db_url).resume(first.execution_id)
    async with Database(db_url) as db:
        execution = await db.get_execution(first.execution_id)
        await trust(db, snapshot_agents(execution), via="test")
        await require_trusted_execution(db, execution)  # trusted now: the gate lets it through


def _tooled(tool: str) -> AgentType:
    return _agent("helper", capabilities=["tool_use"], mixins={"tool_use": {"tools": [tool]}})


async def test_every_change_of_a_stored_definition_revokes_its_trust_and_old_content_stays_untrusted(db_url):
    """The swap: trusted `json:dumps`, changed to `os:system`, put back: a digest once trusted is not
    trusted again (its record was revoked by the change), through the store every door writes with."""
    from qmcp.app import AgentSpec, Caller, Door, put_agent

    safe, swapped = _tooled("json:dumps"), _tooled("os:system")
    client = Caller.client(Door.HTTP)
    async with Database(db_url) as db:
        await put_agent(db, AgentSpec("helper", config=safe.config), client)
        await trust(db, [await db.get_agent("helper")], via="test")
        await put_agent(db, AgentSpec("helper", config=safe.config), client)  # unchanged: still trusted
        assert await untrusted(db, [safe]) == []
        await put_agent(db, AgentSpec("helper", config=swapped.config), client)
        await put_agent(db, AgentSpec("helper", config=safe.config), client)  # the trusted content, back
        assert [entry.digest for entry in await untrusted(db, [safe])] == [definition_digest(safe)]
        (record,) = await trust_history(db, "helper")
        assert record.revoked_at is not None and record.revoked_why == "definition changed"
        await trust(db, [safe], via="test")  # trusting it again is a new decision
        assert await untrusted(db, [safe]) == []
        await db.save_agent(swapped)  # the Python door
        assert await untrusted(db, [safe, swapped]) != []
        await db.save_agent(safe)
        assert len(await untrusted(db, [safe])) == 1


async def test_revoked_trust_comes_back_neither_after_delete_nor_through_a_recreated_agent(db_url):
    safe = _tooled("json:dumps")
    async with Database(db_url) as db:
        await db.save_agent(safe)
        await trust(db, [safe], via="test")
        await db.delete_agent("helper")
        await db.save_agent(safe)
        assert len(await untrusted(db, [safe])) == 1
        await trust(db, [safe], via="test")
        assert await revoke_trust(db, ["helper"], "untrusted by test") == 1
        assert len(await untrusted(db, [safe])) == 1
        assert await revoke_trust(db, ["helper"], "untrusted by test") == 0


async def test_a_run_checks_the_digest_of_its_snapshot_not_the_name(db_url):
    """An execution queued while its agent was trusted does not run once the agent changed (the change
    revoked the digest its snapshot holds), until that snapshot is trusted."""
    from qmcp.app import Caller, Door, RunRequest, start_run

    safe, swapped = _tooled("json:dumps"), _tooled("os:system")
    topology = Topology(name="team", topology_type=TopologyType.PIPELINE)
    async with Database(db_url) as db:
        await db.save_team(topology, {"only": safe})
        await trust(db, [safe], via="test")
        handle = await start_run(db, RunRequest("team", {"prompt": "x"}), Caller.operator(Door.HTTP))
        assert handle.lease is None  # queued for a worker, which runs it with `resume`
        await db.save_agent(swapped)
        await trust(db, [swapped], via="test")  # the new content is trusted, the snapshot's is not
    with pytest.raises(UntrustedDefinitionError, match=r"runs agent 'helper'.*'json:dumps'"):
        await LocalRunner(db_url=db_url).resume(handle.execution_id)
    async with Database(db_url) as db:
        execution = await db.get_execution(handle.execution_id)
        await trust(db, snapshot_agents(execution), via="test")
        await require_trusted_execution(db, execution)
