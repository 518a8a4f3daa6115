"""`qmcp trust` pins what was reviewed: it shows the items and digest it records, `--digest` refuses
content that changed since `qmcp agents show`, and `qmcp untrust` revokes (content trusted once and
put back after a change stays untrusted)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from qmcp.agentframework.store import Database
from qmcp.app import AgentSpec, Caller, Door, put_agent

RUN = ("--model", "test", "agents", "topologies", "run", "team", "--input-json", '{"prompt": "hi"}')


def _config(tool: str) -> dict[str, Any]:
    return {"model": "test", "capabilities": ["tool_use"], "mixins": {"tool_use": {"tools": [tool]}}}


def _client_puts(db: str, tool: str) -> None:
    """What `PUT /v1/agents/helper` does for a client: the same operation, called as one."""

    async def put() -> None:
        async with Database(f"sqlite+aiosqlite:///{db}") as database:
            await put_agent(database, AgentSpec("helper", config=_config(tool)), Caller.client(Door.HTTP))

    asyncio.run(put())


def _setup(cli, tmp_path: Path) -> None:
    team = {
        "agents": [{"name": "helper", "config": _config("json:dumps")}],
        "topologies": [{"name": "team", "type": "pipeline", "agents": {"only": "helper"}}],
    }
    (tmp_path / "team.yaml").write_text(yaml.safe_dump(team))
    cli.ok("apply", "-f", str(tmp_path / "team.yaml"))  # no terminal to ask on: stored untrusted


def test_trust_with_the_digest_shown_refuses_a_definition_swapped_since(cli, tmp_path):
    _setup(cli, tmp_path)
    shown = cli.ok("agents", "show", "helper").stdout
    reviewed = cli.json("agents", "show", "helper")["trust"]
    assert reviewed["digest"] == reviewed["sha256"][:12] and reviewed["digest"] in shown
    assert f"--digest {reviewed['digest']}" in shown  # the command to copy
    _client_puts(cli.db, "os:system")  # swapped after the review
    cli.user_error(
        "trust", "agent", "helper", "--digest", reviewed["digest"], says="changed since it was reviewed"
    )
    cli.user_error(*RUN, says="is not trusted to run Python tool 'os:system'")  # nothing was trusted
    cli.user_error("trust", "agent", "helper", "--digest", "xyz", says="give the 12 hex digits")
    (trusted,) = cli.json("trust", "agent", "helper")  # plain trust: shows what it trusts now
    assert trusted["status"] == "trusted" and trusted["sha256"] != reviewed["sha256"]
    assert trusted["items"] == ["Python tool 'os:system' (imported, the model may call it)"]
    assert trusted["digest"] == trusted["sha256"][:12]
    text = cli.ok("trust", "agent", "helper").stdout
    assert f"digest {trusted['digest']}" in text and "os:system" in text


def test_trust_with_the_reviewed_digest_trusts_that_content(cli, tmp_path):
    _setup(cli, tmp_path)
    digest = cli.json("agents", "show", "helper")["trust"]["digest"]
    (trusted,) = cli.json("trust", "topology", "team", "--digest", digest)
    assert (trusted["status"], trusted["digest"]) == ("trusted", digest)
    assert cli.json("agents", "show", "helper")["trust"]["trusted"]


def test_untrust_revokes_and_old_trusted_content_put_back_stays_untrusted(cli, tmp_path):
    _setup(cli, tmp_path)
    cli.ok("trust", "agent", "helper")
    assert "revoked 1 trust record(s)" in cli.ok("untrust", "agent", "helper").stdout
    assert not cli.json("agents", "show", "helper")["trust"]["trusted"]
    cli.user_error(*RUN, says="trust agent helper")
    assert cli.json("untrust", "topology", "team") == [{"agent": "helper", "revoked": 0}]

    cli.ok("trust", "agent", "helper")
    _client_puts(cli.db, "os:system")
    _client_puts(cli.db, "json:dumps")  # the content trusted before the change, put back
    assert not cli.json("agents", "show", "helper")["trust"]["trusted"]
    cli.user_error(*RUN, says="is not trusted to run Python tool 'json:dumps'")


def test_a_cli_update_of_a_trusted_agent_needs_trust_again(cli, tmp_path):
    _setup(cli, tmp_path)
    cli.ok("trust", "agent", "helper")
    cli.ok("agents", "update", "helper", "--system-prompt", "Call the tool.")
    assert not cli.json("agents", "show", "helper")["trust"]["trusted"]
    cli.ok("trust", "agent", "helper")
    assert cli.json("agents", "show", "helper")["trust"]["trusted"]
