"""Define: store agents, topologies and whole teams, with one set of checks whatever the door.

Every definition is checked as a whole before anything is written, and a refusal writes nothing:

* an agent: its name, role and config (`AgentType`, which also refuses NUL characters), its model
  string (`check_model_string`: an unknown provider or model is refused; a name its provider does
  not list is kept, with a note), and the options of mixins that name code (`executable_items`);
* a topology: its type and config, its slot names, its agents against the type (`validate_team`,
  what every run checks too), and the topologies a compound runs: they exist (stored, or in the
  same team file) and form no cycle.

Trust (`runners/_trust.py`): a definition that names code is stored untrusted, and runs refuse it
until the operator trusts it. Every write here that changes an agent's definition revokes all of its
trust records (the store does, in the write's transaction), so a changed agent, or content trusted
before and put back, waits for trust again. Only `apply_team` trusts, and only for the operator (`qmcp apply
--trust` or its question); a remote caller that asks to trust is refused, so whatever a client
stores waits for the operator's `qmcp trust`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from ..agentframework.errors import (
    ConflictError,
    InvalidConfigError,
    NotFoundError,
    PermissionDeniedError,
    UserInputError,
    did_you_mean,
)
from ..agentframework.llm import check_model_string
from ..agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    CompoundConfig,
    Topology,
    check_json,
    check_name,
    describe_validation_error,
)
from ..agentframework.runners import Untrusted, executable_items, untrusted
from ..agentframework.runners import trust as record_trust
from ..agentframework.store import Database
from ..agentframework.topologies import TopologyRegistry, referenced_topologies
from ._caller import Caller, Door

__all__ = [
    "Action",
    "AgentChanges",
    "AgentDefined",
    "AgentSpec",
    "Applied",
    "Change",
    "TeamDocument",
    "TopologyDefined",
    "TopologySpec",
    "TrustDecision",
    "agent_role",
    "apply_team",
    "create_agent",
    "create_topology",
    "delete_agent",
    "delete_topologies",
    "delete_topology",
    "put_agent",
    "put_topology",
    "update_agent",
]

Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class AgentSpec:
    """An agent as a caller defines it (`AgentBody`, the CLI's options, a team file's entry)."""

    name: str
    role: str = "generalist"
    description: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentChanges:
    """What `update_agent` changes; what is left out (None, or a config field not named) stays."""

    name: str
    role: str | None = None
    description: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    """Config fields to set; merged into the stored config, which is then validated as a whole."""


@dataclass(frozen=True)
class TopologySpec:
    """A topology as a caller defines it: its type and config, and a stored agent per slot."""

    name: str
    type: str
    description: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    agents: Mapping[str, str] = field(default_factory=dict)
    """`{slot: agent name}`, in slot order."""


@dataclass(frozen=True)
class AgentDefined:
    """An agent as stored, what happened to it, and notes worth showing (a model its provider does not list)."""

    agent: AgentType
    action: Action
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TopologyDefined:
    """A topology as stored, its agents by slot, and what happened to it."""

    topology: Topology
    agents: dict[str, AgentType]
    action: Action

    def definition(self) -> dict[str, Any]:
        """The topology's definition with its agents by name (`{slot: agent name}`): the API's shape."""
        return self.topology.definition() | {"agents": {slot: a.name for slot, a in self.agents.items()}}


@dataclass(frozen=True)
class TeamDocument:
    """A team file parsed and validated field by field (`qmcp apply`): its agents, and its topologies
    with their `{slot: agent name}`; `apply_team` checks it against the database."""

    label: str
    """Names the document in every message (its path, `<stdin>`)."""
    agents: list[AgentType]
    topologies: list[tuple[Topology, dict[str, str]]]
    problems: tuple[str, ...] = ()
    """What the field checks found (one line each, by path), reported with `apply_team`'s own, all at once."""
    more_problems: int = 0
    """Problems counted beyond `problems` (a file lists at most `MAX_LISTED_PROBLEMS`)."""
    invalid_agents: frozenset[str] = frozenset()
    """Names of declared agents left out for their problems: a topology naming one is not told again
    that the agent does not exist."""
    invalid_topologies: frozenset[str] = frozenset()
    """Likewise for declared topologies a compound runs."""
    agent_positions: tuple[int, ...] = ()
    """Where each of `agents` is in the file (`agents[i]`), when entries with problems were left out."""
    topology_positions: tuple[int, ...] = ()
    """Likewise for `topologies`."""
    validated: bool = False
    """Made by a validator whose checks are `apply_team`'s own for one definition (the CLI's
    `validate_team`), so they are not run twice: a document built in Python has them run."""

    def where(self, section: Literal["agents", "topologies"], index: int) -> str:
        """`label: agents[i]`: the path in the file of the `index`th entry kept in `section`."""
        positions = self.agent_positions if section == "agents" else self.topology_positions
        return f"{self.label}: {section}[{positions[index] if positions else index}]"


@dataclass(frozen=True)
class Change:
    kind: Literal["agent", "topology"]
    name: str
    action: Action


@dataclass(frozen=True)
class Applied:
    """What `apply_team` did: each object's change, and the agents naming code, trusted or not."""

    changes: list[Change]
    trusted: list[Untrusted]
    untrusted: list[Untrusted]
    notes: list[str] = field(default_factory=list)
    """What may be wrong but is kept, by path in the document (a model its provider does not list)."""

    @property
    def changed(self) -> bool:
        return any(change.action != "unchanged" for change in self.changes)


TrustDecision = str | Callable[[list[Untrusted]], str | None] | None
"""How `apply_team` trusts the agents that name code: None stores them untrusted; a string trusts
them, recorded as that `via`; a function is asked, once every check passed and before anything is
written, with those agents, and returns the `via` or None (the CLI's question)."""


# -- checks -------------------------------------------------------------------------------------


def agent_role(value: str) -> AgentRole:
    """The role named `value`, or a one-line error listing the roles."""
    try:
        return AgentRole(str(value).strip().lower())
    except ValueError:
        names = [role.value for role in AgentRole]
        raise UserInputError(
            f"unknown role {value!r}; {did_you_mean(str(value).strip().lower(), names)}choose one of: {', '.join(names)}"
        ) from None


def _validated_agent(spec: AgentSpec) -> AgentType:
    """The agent `spec` defines, its name, role and config validated as a whole."""
    role = agent_role(spec.role)
    try:
        check_name(spec.name, "agent")
        check_json(dict(spec.config), f"agent {spec.name!r}: config")  # before NaN is dumped as null
        config = AgentConfig.model_validate(dict(spec.config))
        return AgentType.model_validate(
            {"name": spec.name, "role": role, "description": spec.description, "config": config}
        )
    except ValidationError as error:
        raise InvalidConfigError(f"invalid agent: {describe_validation_error(error)}") from None
    except ValueError as error:  # check_name
        raise InvalidConfigError(str(error)) from None


def _model_note(agent: AgentType) -> str | None:
    """Refuse a model string that cannot work; a note on one that may not (`check_model_string`)."""
    model = agent.agent_config.model
    return check_model_string(model) if model is not None else None


def _checked_agent(spec: AgentSpec) -> tuple[AgentType, tuple[str, ...]]:
    """The agent `spec` defines with every check passed, and the note on its model if any."""
    agent = _validated_agent(spec)
    note = _model_note(agent)
    executable_items(agent)  # validates the options of mixins that name code
    return agent, (note,) if note else ()


def _spec_of(agent: AgentType) -> AgentSpec:
    return AgentSpec(agent.name, str(agent.role), agent.description, agent.config or {})


def _checked_topology(spec: TopologySpec) -> Topology:
    try:
        return Topology.model_validate(
            {
                "name": spec.name,
                "description": spec.description,
                "topology_type": str(spec.type).strip().lower(),
                "config": dict(spec.config),
            }
        )
    except ValidationError as error:
        raise InvalidConfigError(describe_validation_error(error)) from None


def _check_slot(slot: str) -> None:
    try:
        check_name(slot, "slot")
    except ValueError as error:
        raise InvalidConfigError(str(error)) from None


def _check_team(topology: Topology, agents: Mapping[str, AgentType]) -> None:
    """The agents fill the type's slots (what a run checks first), and the mixins they name resolve."""
    TopologyRegistry.create(topology.topology_type, topology.config).validate_team(dict(agents))
    for agent in agents.values():
        executable_items(agent)


async def _reference_problems(
    db: Database, topologies: Mapping[str, Topology], invalid: frozenset[str] = frozenset()
) -> dict[str, str]:
    """For each compound among `topologies`, the first topology it runs that is neither stored nor
    among `topologies`, or the cycle it closes; `topologies` win over stored ones of the same name.
    Names in `invalid` are declared but have problems of their own: they are not looked into."""
    known: dict[str, Topology | None] = dict(topologies)
    sound: set[str] = set()

    async def lookup(name: str) -> Topology | None:
        if name not in known:
            try:
                known[name] = (await db.get_topology(name))[0]
            except NotFoundError:
                known[name] = None
        return known[name]

    async def visit(topology: Topology, path: list[str]) -> str | None:
        config = topology.parsed_config
        if topology.name in sound or not isinstance(config, CompoundConfig):
            return None
        for name in referenced_topologies(config):
            if name in path:
                return f"compound topologies form a cycle: {' -> '.join([*path, name])}"
            if name in invalid:
                continue
            sub = await lookup(name)
            if sub is None:
                return f"compound {path[-1]!r} runs topology {name!r}, which does not exist; define it first"
            if problem := await visit(sub, [*path, name]):
                return problem
        sound.add(topology.name)
        return None

    problems = {}
    for name, topology in topologies.items():
        if problem := await visit(topology, [name]):
            problems[name] = problem
    return problems


def _exists(kind: str, name: str, caller: Caller) -> ConflictError:
    """The refusal to create `name` again, saying how this caller changes it instead."""
    if caller.remote:
        how = f"change it with PUT /v1/{kind}s/{name}"
    elif caller.door is Door.CLI:
        how = (
            f"change it with: qmcp agents update {name}, or delete it first (qmcp agents delete {name})"
            if kind == "agent"
            else "declare it in a file for qmcp apply to change it"
        )
    else:
        how = f"change it with put_{kind}" + (" or update_agent" if kind == "agent" else "")
    return ConflictError(f"{kind} {name!r} already exists; {how}")


# -- agents -------------------------------------------------------------------------------------


async def create_agent(db: Database, spec: AgentSpec, caller: Caller) -> AgentDefined:
    """Store a new agent; `ConflictError` if the name is taken."""
    agent, notes = _checked_agent(spec)
    try:
        await db.get_agent(agent.name)
    except NotFoundError:
        return AgentDefined(await db.save_agent(agent), "created", notes)
    raise _exists("agent", agent.name, caller)


async def put_agent(db: Database, spec: AgentSpec, caller: Caller) -> AgentDefined:
    """Store an agent, replacing the definition stored under its name (an HTTP PUT). A changed
    definition that names code needs trust again: the change revokes the agent's trust records."""
    agent, notes = _checked_agent(spec)
    try:
        stored = await db.get_agent(agent.name)
    except NotFoundError:
        return AgentDefined(await db.save_agent(agent), "created", notes)
    if stored.definition() == agent.definition():
        return AgentDefined(stored, "unchanged", notes)
    return AgentDefined(await db.save_agent(agent), "updated", notes)


async def update_agent(db: Database, changes: AgentChanges, caller: Caller) -> AgentDefined:
    """Change some of a stored agent's settings; the rest stays. The result is checked as a whole."""
    stored = await db.get_agent(changes.name)
    agent, notes = _checked_agent(
        AgentSpec(
            name=stored.name,
            role=str(stored.role) if changes.role is None else changes.role,
            description=stored.description if changes.description is None else changes.description,
            config={**stored.config, **changes.config},
        )
    )
    if stored.definition() == agent.definition():
        return AgentDefined(stored, "unchanged", notes)
    return AgentDefined(await db.save_agent(agent), "updated", notes)


async def delete_agent(db: Database, name: str, caller: Caller) -> None:
    """Delete an agent; refused while a topology uses it (the refusal names those topologies)."""
    await db.delete_agent(name)


# -- topologies ---------------------------------------------------------------------------------


async def _team(db: Database, spec: TopologySpec) -> tuple[Topology, dict[str, AgentType]]:
    """The topology `spec` defines with its stored agents, every check passed; nothing written."""
    topology = _checked_topology(spec)
    for slot in spec.agents:
        _check_slot(slot)
    agents = {slot: await db.get_agent(name) for slot, name in spec.agents.items()}
    _check_team(topology, agents)
    if problem := (await _reference_problems(db, {topology.name: topology})).get(topology.name):
        raise InvalidConfigError(problem)
    return topology, agents


async def _stored_team(db: Database, name: str) -> tuple[Topology, dict[str, AgentType]] | None:
    try:
        return await db.get_topology(name)
    except NotFoundError:
        return None


def _same_team(
    stored: tuple[Topology, dict[str, AgentType]], topology: Topology, agents: Mapping[str, AgentType]
) -> bool:
    stored_topology, stored_agents = stored
    return stored_topology.definition() == topology.definition() and [
        (slot, agent.name) for slot, agent in stored_agents.items()
    ] == [(slot, agent.name) for slot, agent in agents.items()]


async def create_topology(db: Database, spec: TopologySpec, caller: Caller) -> TopologyDefined:
    """Store a new topology over stored agents; `ConflictError` if the name is taken."""
    if await _stored_team(db, spec.name) is not None:
        raise _exists("topology", spec.name, caller)
    topology, agents = await _team(db, spec)
    stored, stored_agents = await db.save_team(topology, agents)
    return TopologyDefined(stored, stored_agents, "created")


async def put_topology(db: Database, spec: TopologySpec, caller: Caller) -> TopologyDefined:
    """Store a topology, replacing the one stored under its name and its slots (an HTTP PUT)."""
    topology, agents = await _team(db, spec)
    current = await _stored_team(db, topology.name)
    if current is not None and _same_team(current, topology, agents):
        return TopologyDefined(current[0], current[1], "unchanged")
    stored, stored_agents = await db.save_team(topology, agents)
    return TopologyDefined(stored, stored_agents, "created" if current is None else "updated")


async def delete_topologies(
    db: Database, names: Sequence[str], caller: Caller, *, force: bool = False
) -> None:
    """Delete topologies (their agents stay), all or none: refused if one does not exist, or while
    executions reference one unless `force` (they keep their snapshot of the team)."""
    await db.delete_topologies(list(dict.fromkeys(names)), keep_executions=force)


async def delete_topology(db: Database, name: str, caller: Caller, *, force: bool = False) -> None:
    """Delete one topology (`delete_topologies`)."""
    await delete_topologies(db, [name], caller, force=force)


# -- team files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """A team document checked against the database: what to write and what happens to each object."""

    defined: list[AgentType]
    """Every agent of the document, validated."""
    agents: list[AgentType]
    teams: list[tuple[Topology, dict[str, AgentType]]]
    changes: list[Change]
    notes: list[str]


async def _plan(db: Database, team: TeamDocument) -> _Plan:
    """Check every agent and topology against the document and the database; one
    `InvalidConfigError` lists the problems by their path in the document, with those of the
    document's fields (`TeamDocument.problems`): all at once. Writes nothing."""
    errors: list[str] = list(team.problems)
    notes: list[str] = []
    agents: list[AgentType] = []
    for index, given in enumerate(team.agents):
        where = team.where("agents", index)
        try:
            agent = given if team.validated else _validated_agent(_spec_of(given))
        except UserInputError as error:
            errors.append(f"{where}: {error}")
            continue
        agents.append(agent)
        try:
            note = _model_note(agent)
        except UserInputError as error:
            errors.append(f"{where}.config.model: {error}")
        else:
            notes += [f"{where}.config.model: {note}"] if note else []
        try:
            executable_items(agent)  # validates the options of mixins that name code
        except UserInputError as error:
            errors.append(f"{where}.config: {error}")
    stored_agents = {agent.name: agent for agent in await db.list_agents()}
    available = stored_agents | {agent.name: agent for agent in agents}
    changes: list[Change] = []
    changed_agents = []
    for agent in agents:
        stored = stored_agents.get(agent.name)
        action: Action = (
            "created"
            if stored is None
            else "unchanged"
            if stored.definition() == agent.definition()
            else "updated"
        )
        changes.append(Change("agent", agent.name, action))
        if action != "unchanged":
            changed_agents.append(agent)
    teams: list[tuple[Topology, dict[str, AgentType]]] = []
    topologies: dict[str, Topology] = {}
    for index, (declared, slots) in enumerate(team.topologies):
        where = team.where("topologies", index)
        try:
            topology = declared
            if not team.validated:
                topology = _checked_topology(
                    TopologySpec(
                        declared.name, declared.topology_type, declared.description, declared.config or {}
                    )
                )
                for slot in slots:
                    _check_slot(slot)
        except UserInputError as error:
            errors.append(f"{where}: {error}")
            continue
        topologies[topology.name] = topology
        unknown = [(slot, name) for slot, name in slots.items() if name not in available]
        errors += [
            f"{where}.agents.{slot}: agent {name!r} is neither in this file nor in the database"
            + (f"; {hint.strip()}" if (hint := did_you_mean(name, available)) else "")
            for slot, name in unknown
            if name not in team.invalid_agents  # its own problems are listed
        ]
        if unknown:
            continue
        members = {slot: available[name] for slot, name in slots.items()}
        try:
            _check_team(topology, members)
        except UserInputError as error:
            errors.append(f"{where}.agents: {error}")
            continue
        teams.append((topology, members))
    references = await _reference_problems(db, topologies, team.invalid_topologies)
    errors += [
        f"{team.where('topologies', index)}.config: {references[topology.name]}"
        for index, (topology, _) in enumerate(team.topologies)
        if topology.name in references
    ]
    if errors:
        raise InvalidConfigError.listing(team.label, errors, team.more_problems)
    changed_teams = []
    for topology, members in teams:
        current = await _stored_team(db, topology.name)
        action = (
            "created"
            if current is None
            else "unchanged"
            if _same_team(current, topology, members)
            else "updated"
        )
        changes.append(Change("topology", topology.name, action))
        if action != "unchanged":
            changed_teams.append((topology, members))
    return _Plan(agents, changed_agents, changed_teams, changes, notes)


async def apply_team(
    db: Database, team: TeamDocument, caller: Caller, *, trust: TrustDecision = None
) -> Applied:
    """Create or update what a team document declares, in one transaction once all of it is valid;
    applying it again changes nothing. Agents that name code and are not trusted yet are trusted as
    `trust` decides (only the operator's decision counts), else stored untrusted."""
    if caller.remote and trust is not None:
        raise PermissionDeniedError(
            "trust is given by the server's operator (qmcp trust agent NAME), not by a client; leave it out"
        )
    plan = await _plan(db, team)
    pending = await untrusted(db, plan.defined)
    via = None
    if pending and callable(trust):
        via = trust(pending)
    elif pending and isinstance(trust, str):
        via = trust
    await db.save_definitions(plan.agents, plan.teams)
    if via is None:
        return Applied(plan.changes, [], pending, plan.notes)
    await record_trust(db, [entry.agent for entry in pending], via=via)
    return Applied(plan.changes, pending, [], plan.notes)
