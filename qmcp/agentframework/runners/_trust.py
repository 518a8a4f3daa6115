"""Trust: stored definitions run the code they name only once someone trusted that exact definition.

A team file is code. An agent's definition can name things that run on this machine or send
data and keys elsewhere — its *executable items*: Python tools (`"pkg.module:function"`), MCP
server commands and their environment, MCP server URLs, structured-output models
(`"module:Class"`), a `base_url`, an `api_key_env`, a local model or recorded fixture file.
Storing such a definition is harmless; running it is not. So:

* Definitions handed to a runner as Python objects are trusted: the program holding them can run
  any code anyway. `BaseRunner.run` records that trust (`via="python"`), so their executions
  can be resumed and compound topologies can use them.
* A definition read from the database runs its executable items only if a `TrustRecord` in
  force holds the SHA-256 of its canonical content: `qmcp apply` asks (or `--trust`), `qmcp trust
  ...` does it later, showing the items and the digest it records; `--digest D` (the digest
  `qmcp agents show` printed) refuses when the stored content is no longer what was reviewed.
  An edited definition has another digest and needs trust again.
* Trust is revoked, not just outdated: any write that changes an agent's stored definition
  (every door writes through the store, which revokes in the same transaction) and `qmcp untrust`
  revoke all of the agent's records. Matching by digest alone would trust again content that was
  trusted once, changed, and put back by a client; a revoked record matches nothing. The price:
  an execution whose agent changed since it started needs `qmcp trust execution ID` to resume.
* Everything that turns stored definitions into a run checks first, before any step: the CLI's
  `agents topologies run` and `export`, the sub-topologies a compound reads from the database,
  and `resume` of an execution, which is also how a server's worker runs a queued one (its
  snapshot, digest by digest, is what runs). The refusal is one line naming the
  agent, what it would run, and the command that trusts it.
* What is judged is the agent as the run calls it (`effective_agent`): under a model override, the
  override's model (a `local:` file is an executable item) without the endpoint and key variable of
  the model it replaced (`llm.effective_model`). Trust in an agent does not cover an override.

Definitions without executable items need no trust and cost no query.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..errors import ConflictError, UntrustedDefinitionError, UserInputError
from ..llm import SMOLLM2_SPEC, effective_model, normalize_model_string
from ..mixins import MixinRegistry
from ..models import AgentConfig, AgentType, Execution, TrustRecord
from ..store import Database, add_trust, trusted_digests

__all__ = [
    "SHORT_DIGEST",
    "Untrusted",
    "check_reviewed",
    "definition_digest",
    "effective_agent",
    "executable_items",
    "require_trusted",
    "require_trusted_execution",
    "snapshot_agents",
    "trust",
    "trust_given",
    "trusted_by",
    "untrusted",
]


def executable_items(agent: AgentType) -> list[str]:
    """What the agent's definition runs on this machine or sends elsewhere, one readable line each."""
    raw = agent.config or {}
    if not (
        raw.get("capabilities")
        or raw.get("base_url")
        or raw.get("api_key_env")
        or str(raw.get("model") or "").strip().startswith(("local:", "recorded:"))
    ):
        return []  # the common case, decided without validating the config
    config = agent.agent_config
    items: list[str] = []
    for name in MixinRegistry.resolve([str(c) for c in config.capabilities]):
        options = config.mixins.get(name, {})
        items += MixinRegistry.get(name).executable_items(agent.name, dict(options))
    model = normalize_model_string(config.model) if config.model else ""
    if model.startswith("local:") and model.removeprefix("local:").strip() != SMOLLM2_SPEC:
        items.append(f"local model file {model.removeprefix('local:')!r} (loaded into this process)")
    if model.startswith("recorded:"):
        items.append(f"recorded fixture file {model.removeprefix('recorded:')!r} (read by this process)")
    if config.base_url:
        items.append(f"base_url {config.base_url!r} (receives the prompts, and the key of api_key_env)")
    if config.api_key_env:
        items.append(f"api_key_env {config.api_key_env!r} (this variable's value is sent as the API key)")
    return items


def effective_agent(agent: AgentType, override: str | None) -> AgentType:
    """The agent as a run with model override `override` calls it: the definition whose executable
    items and digest trust judges. Without an override, or one naming the agent's own model with its
    own endpoint, the agent itself."""
    if not override:
        return agent
    config = agent.agent_config
    choice = effective_model(config, override)
    if (choice.model, choice.base_url, choice.api_key_env) == (
        config.model,
        config.base_url,
        config.api_key_env,
    ):
        return agent
    raw = {k: v for k, v in (agent.config or {}).items() if k not in ("base_url", "api_key_env")}
    raw |= {"model": choice.model, "base_url": choice.base_url, "api_key_env": choice.api_key_env}
    definition = agent.definition() | {"config": {k: v for k, v in raw.items() if v is not None}}
    return AgentType.model_validate(definition)


def definition_digest(agent: AgentType) -> str:
    """SHA-256 of the agent's canonical definition: its config as validated, defaults left out, so
    a stored row and the same definition read from a file hash alike."""
    try:
        config: Any = AgentConfig.model_validate(agent.config or {}).model_dump(
            mode="json", exclude_defaults=True
        )
    except ValidationError:  # hash what is stored; running it will report the problem
        config = agent.config
    canonical = {
        "name": agent.name,
        "description": agent.description,
        "role": str(agent.role),
        "config": config,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


SHORT_DIGEST = 12
"""Hex digits of a definition's SHA-256 that `qmcp trust` and `qmcp agents show` print."""


def check_reviewed(agents: Sequence[AgentType], digests: Sequence[str]) -> None:
    """Refuse (`ConflictError`, one line) unless `agents` are what the reviewer saw: each agent that
    names code has one of `digests` (its short digest or the whole SHA-256), and each of `digests`
    is some agent's. Trusting then records the digests of these very objects, so content changed
    after this check is not what gets trusted."""
    pinned = [digest.strip().lower() for digest in digests]
    for digest in pinned:
        if len(digest) < SHORT_DIGEST or len(digest) > 64 or any(c not in "0123456789abcdef" for c in digest):
            raise UserInputError(
                f"--digest {digest!r}: give the {SHORT_DIGEST} hex digits qmcp agents show prints "
                "(or the whole SHA-256)"
            )
    found = {agent.name: definition_digest(agent) for agent in agents}
    for agent in agents:
        actual = found[agent.name]
        if executable_items(agent) and not any(actual.startswith(digest) for digest in pinned):
            raise ConflictError(
                f"agent {agent.name!r} is stored with digest {actual[:SHORT_DIGEST]} now, not "
                f"{', '.join(pinned)}: it changed since it was reviewed; nothing was trusted; "
                f"review it again with: qmcp agents show {agent.name}"
            )
    for digest in pinned:
        if not any(actual.startswith(digest) for actual in found.values()):
            raise ConflictError(
                f"none of the agents to trust ({', '.join(found)}) has digest {digest}; nothing was trusted"
            )


def trusted_by() -> str:
    """The operating-system user trusting a definition now."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        return "unknown"


@dataclass(frozen=True)
class Untrusted:
    """An agent whose definition names executable items that nobody trusted."""

    agent: AgentType
    items: list[str]
    digest: str


async def untrusted(db: Database, agents: Iterable[AgentType]) -> list[Untrusted]:
    """The agents (by name, first seen wins) whose executable items lack a trust record for their digest."""
    candidates: dict[tuple[str, str], Untrusted] = {}
    for agent in {id(agent): agent for agent in agents}.values():  # one object may fill many slots
        items = executable_items(agent)
        if items:
            digest = definition_digest(agent)
            candidates.setdefault((agent.name, digest), Untrusted(agent, items, digest))
    trusted = await trusted_digests(db, list(candidates))
    return [entry for key, entry in candidates.items() if key not in trusted]


async def trust(db: Database, agents: Iterable[AgentType], *, via: str) -> list[Untrusted]:
    """Record trust in `agents`' current definitions; returns those that were not trusted before."""
    pending = await untrusted(db, agents)
    if not pending:  # the common case (nothing that runs code): no user name to ask the system for
        return pending
    who = trusted_by()
    await add_trust(
        db,
        [
            TrustRecord(
                agent_name=entry.agent.name, sha256=entry.digest, items=entry.items, trusted_by=who, via=via
            )
            for entry in pending
        ],
    )
    return pending


async def trust_given(db: Database, agents: Mapping[str, AgentType], override: str | None = None) -> None:
    """Trust the definitions a program handed to a runner as objects, as its run's model `override`
    makes them (see the module's rules)."""
    await trust(db, [effective_agent(agent, override) for agent in agents.values()], via="python")


async def require_trusted(
    db: Database,
    agents: Mapping[str, AgentType],
    *,
    topology: str,
    within: str | None = None,
    override: str | None = None,
) -> None:
    """Raise `UntrustedDefinitionError` for the first agent of a stored `topology` nobody trusted,
    as a run with model `override` would call it."""
    pending = await untrusted(db, [effective_agent(agent, override) for agent in agents.values()])
    if not pending:
        return
    first = pending[0]
    slot = next(slot for slot, agent in agents.items() if agent.name == first.agent.name)
    where = f"slot {slot!r} of topology {topology!r}" + (f" (run by compound {within!r})" if within else "")
    raise UntrustedDefinitionError(
        f"agent {first.agent.name!r} ({where}) is not trusted to run {first.items[0]}" + _more(first.items),
        ("trust", "agent", first.agent.name),
    )


async def require_trusted_execution(db: Database, execution: Execution) -> None:
    """Raise `UntrustedDefinitionError` if the agents an execution runs (its snapshot) were never trusted."""
    pending = await untrusted(db, snapshot_agents(execution))
    if pending:
        first = pending[0]
        raise UntrustedDefinitionError(
            f"execution {execution.id} runs agent {first.agent.name!r}, whose definition there is not "
            f"trusted to run {first.items[0]}" + _more(first.items),
            ("trust", "execution", str(execution.id)),
        )


def snapshot_agents(execution: Execution) -> list[AgentType]:
    """Every agent an execution runs: its team's and its sub-teams' (compound), as its stored model
    override makes them (`effective_agent`)."""
    definitions = [*execution.agents_snapshot.values()]
    for team in execution.teams_snapshot.values():
        definitions += team.get("agents", {}).values()
    override = execution.run_config.get("model_override")
    return [effective_agent(AgentType.model_validate(definition), override) for definition in definitions]


def _more(items: list[str]) -> str:
    return f" and {len(items) - 1} more item(s)" if len(items) > 1 else ""
