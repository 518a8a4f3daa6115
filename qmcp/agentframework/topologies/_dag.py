"""A topology's shape as a graph: its agent steps (named by their step keys), joins and data flow.

The server's `/v1/topologies/{name}/dag`, the console's diagrams and `--mermaid` read it. Step nodes
carry the key the topology's code gives that step (`pipeline/1:write`, `ensemble/member:m2`), so an
execution's step rows colour the graph. Chain of command and delegation decide their steps at run
time: their graphs show the slots and who hands work to whom; the steps an execution made are
added by `with_steps`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..models import AgentType, Topology
from ._chain import ChainOfCommandTopology
from ._compound import CompoundTopology
from ._crosscheck import CrossCheckTopology
from ._debate import DebateTopology
from ._delegation import ROUTER_SLOT, DelegationTopology
from ._ensemble import AGGREGATOR_SLOT, EnsembleTopology
from ._pipeline import PipelineTopology

__all__ = ["Dag", "DagEdge", "DagGroup", "DagNode", "topology_dag"]

NodeKind = Literal["input", "output", "step", "join", "agent"]

_COMPOUND_PREFIX = re.compile(r"(?:compound/\d+:[^/]+/)*")
"""The part of a step key naming the (nested) sub-topologies of a compound it ran in."""


@dataclass(frozen=True)
class DagNode:
    id: str
    kind: NodeKind
    label: str
    slot: str | None = None
    agent: str | None = None
    group: str | None = None
    """The sub-topology (compound) the node belongs to."""


@dataclass(frozen=True)
class DagEdge:
    source: str
    target: str
    label: str | None = None


@dataclass(frozen=True)
class DagGroup:
    id: str
    label: str
    parent: str | None = None


@dataclass
class Dag:
    nodes: list[DagNode] = field(default_factory=list)
    edges: list[DagEdge] = field(default_factory=list)
    groups: list[DagGroup] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [_compact(asdict(n)) for n in self.nodes],
            "edges": [_compact(asdict(e)) for e in self.edges],
            "groups": [_compact(asdict(g)) for g in self.groups],
        }

    def node_ids(self) -> set[str]:
        return {node.id for node in self.nodes}

    def with_steps(self, steps: Iterable[tuple[str, str, str]]) -> Dag:
        """This graph plus the steps an execution made that it does not show yet, as (key, slot, agent):
        the run-time steps of chain of command and delegation, hung under their slot's node."""
        known = self.node_ids()
        dag = Dag(list(self.nodes), list(self.edges), list(self.groups))
        by_id = {node.id: node for node in dag.nodes}
        for key, slot, agent in steps:
            if key in known:
                continue
            owner = by_id.get(f"{_COMPOUND_PREFIX.match(key).group(0)}slot:{slot}")  # type: ignore[union-attr]  # a compound's key: it matches
            dag.nodes.append(DagNode(key, "step", _short(key), slot, agent, owner.group if owner else None))
            if owner is not None:
                dag.edges.append(DagEdge(owner.id, key))
            known.add(key)
        return dag

    def svg(
        self,
        statuses: Mapping[str, str] | None = None,
        *,
        title: str = "topology",
        link: Callable[[DagNode], str | None] | None = None,
    ) -> str:
        """The graph as a standalone SVG, step nodes coloured by `statuses` (step key → status): the
        console's diagrams and `qmcp executions show ID --svg FILE`; see `_svg.py`."""
        from ._svg import dag_svg

        return dag_svg(self, statuses, title=title, link=link)

    def mermaid(self) -> str:
        """The graph as a Mermaid flowchart (`qmcp agents topologies show NAME --mermaid`)."""
        ids = {node.id: f"n{index}" for index, node in enumerate(self.nodes)}
        groups = {group.id: index for index, group in enumerate(self.groups)}
        lines = ["flowchart TD"]
        children: dict[str | None, list[DagNode]] = {}
        for node in self.nodes:
            children.setdefault(node.group, []).append(node)
        subgroups: dict[str | None, list[DagGroup]] = {}
        for group in self.groups:
            subgroups.setdefault(group.parent, []).append(group)

        def emit(group: str | None, indent: str) -> None:
            for node in children.get(group, []):
                lines.append(f"{indent}{ids[node.id]}{_shape(node)}")
            for sub in subgroups.get(group, []):
                lines.append(f'{indent}subgraph g{groups[sub.id]}["{_escape(sub.label)}"]')
                emit(sub.id, indent + "  ")
                lines.append(f"{indent}end")

        emit(None, "  ")
        for edge in self.edges:
            arrow = f" -->|{_escape(edge.label)}| " if edge.label else " --> "
            lines.append(f"  {ids[edge.source]}{arrow}{ids[edge.target]}")
        return "\n".join(lines) + "\n"


def topology_dag(
    topology: Topology,
    agents: Mapping[str, AgentType],
    teams: Mapping[str, Any] | None = None,
) -> Dag:
    """The graph of `topology` run by `agents`; a compound's sub-teams come from `teams`
    (`{name: {"topology": definition, "agents": {slot: definition}}}`, as executions keep them)."""
    dag = Dag()
    dag.nodes.append(DagNode("input", "input", "input"))
    last = _build(dag, topology, agents, dict(teams or {}), prefix="", group=None, entry=["input"])
    dag.nodes.append(DagNode("output", "output", "output"))
    dag.edges.extend(DagEdge(source, "output") for source in last)
    return dag


def _build(
    dag: Dag,
    topology: Topology,
    agents: Mapping[str, AgentType],
    teams: dict[str, Any],
    *,
    prefix: str,
    group: str | None,
    entry: list[str],
) -> list[str]:
    """Add `topology`'s nodes fed from `entry`; return the nodes its output leaves from."""
    from ._base import TopologyRegistry

    implementation = TopologyRegistry.create(topology.topology_type, topology.config)
    slots = list(agents)

    def step(key: str, slot: str, label: str | None = None) -> str:
        node_id = prefix + key
        dag.nodes.append(DagNode(node_id, "step", label or slot, slot, agents[slot].name, group))
        return node_id

    def join(key: str, label: str) -> str:
        node_id = prefix + key
        dag.nodes.append(DagNode(node_id, "join", label, group=group))
        return node_id

    def link(sources: Iterable[str], target: str, label: str | None = None) -> None:
        dag.edges.extend(DagEdge(source, target, label) for source in sources)

    match implementation:
        case PipelineTopology():
            current = entry
            for index, stage in enumerate(implementation.stages(slots)):
                node = step(implementation.stage_key(index, stage), stage)
                link(current, node)
                current = [node]
            return current
        case EnsembleTopology():
            members = [step(implementation.member_key(slot), slot) for slot in implementation.members(slots)]
            for member in members:
                link(entry, member)
            method = implementation.config.aggregation_method
            if method == "synthesis":
                aggregate = step(
                    implementation.aggregate_key, AGGREGATOR_SLOT, f"{AGGREGATOR_SLOT} (synthesis)"
                )
            else:
                aggregate = join(implementation.aggregate_key, f"aggregate ({method})")
            link(members, aggregate)
            return [aggregate]
        case CrossCheckTopology():
            primary = step(implementation.primary_key, "primary")
            link(entry, primary)
            checkers = [step(implementation.checker_key(s), s) for s in implementation.checkers(slots)]
            for checker in checkers:
                link([primary], checker)
            config = implementation.config
            consensus_method = (
                "unanimous" if config.require_unanimous_for_approval else config.consensus_method
            )
            consensus = join(implementation.consensus_key, f"consensus ({consensus_method})")
            link(checkers, consensus)
            link([primary], consensus, "answer")
            return [consensus]
        case DebateTopology():
            current = entry
            for number in range(1, implementation.config.max_rounds + 1):
                for side in ("proponent", "opponent"):
                    node = step(implementation.turn_key(number, side), side, f"round {number}: {side}")
                    link(current, node)
                    current = [node]
            if implementation.config.consensus_method == "mediator":
                mediator = implementation.mediator_slot(agents)
                if mediator is not None:
                    node = step(implementation.mediator_key, mediator, "mediator")
                    link(current, node)
                    current = [node]
            return current
        case ChainOfCommandTopology():
            levels = [
                implementation.level_slots(slots, level)
                for level in range(len(implementation.config.authority_levels))
            ]
            nodes = {
                slot: _agent(dag, prefix, slot, agents[slot], group) for level in levels for slot in level
            }
            (commander,) = levels[0] or [slots[0]]
            link(entry, nodes[commander])
            for upper, lower in itertools.pairwise(levels):
                for slot in lower:
                    for boss in upper:
                        link([nodes[boss]], nodes[slot], "delegates")
            return [nodes[commander]]
        case DelegationTopology():
            router = ROUTER_SLOT if ROUTER_SLOT in agents else None
            source = [_agent(dag, prefix, router, agents[router], group)] if router else entry
            if router:
                link(entry, source[0])
            workers = implementation.specialists(agents)
            fallback = implementation.fallback_slot(agents)
            targets = [
                _agent(dag, prefix, s, agents[s], group)
                for s in [*workers, *([fallback] if fallback else [])]
            ]
            for target in targets:
                link(source, target, "routes")
            return targets
        case CompoundTopology():
            return _compound(dag, implementation.config, teams, prefix, group, entry)
    # A user's topology type: its slots, fed by the input (its steps are added from executions).
    slot_nodes = [_agent(dag, prefix, slot, agents[slot], group) for slot in slots]
    for node in slot_nodes:
        link(entry, node)
    return slot_nodes or entry


def _compound(
    dag: Dag, config: Any, teams: dict[str, Any], prefix: str, group: str | None, entry: list[str]
) -> list[str]:
    def sub(index: int, name: str, feed: list[str]) -> list[str]:
        sub_prefix = f"{prefix}{CompoundTopology.sub_key(index, name)}/"
        group_id = sub_prefix.rstrip("/")
        dag.groups.append(DagGroup(group_id, name, group))
        team = teams.get(name)
        if team is None:  # not resolved (a stored topology that is gone): one opaque node
            node = DagNode(group_id, "join", f"{name} (not found)", group=group_id)
            dag.nodes.append(node)
            dag.edges.extend(DagEdge(source, node.id) for source in feed)
            return [node.id]
        topology = Topology.model_validate(team["topology"])
        agents = {slot: AgentType.model_validate(data) for slot, data in team["agents"].items()}
        return _build(dag, topology, agents, teams, prefix=sub_prefix, group=group_id, entry=feed)

    names = list(config.sub_topologies)
    if config.mode == "parallel":
        return [node for index, name in enumerate(names) for node in sub(index, name, entry)]
    if config.mode == "sequential":
        current = entry
        for index, name in enumerate(names):
            current = sub(index, name, current)
        return current
    first = sub(0, names[0], entry)
    ends = list(first)
    branches = [c.then for c in config.conditions] + ([config.default] if config.default else [])
    for name in dict.fromkeys(branches):
        before = len(dag.edges)
        ends += sub(1, name, first)
        for index in range(before, len(dag.edges)):
            if dag.edges[index].source in first:
                dag.edges[index] = DagEdge(dag.edges[index].source, dag.edges[index].target, "if chosen")
    return ends


def _agent(dag: Dag, prefix: str, slot: str, agent: AgentType, group: str | None) -> str:
    node_id = f"{prefix}slot:{slot}"
    dag.nodes.append(DagNode(node_id, "agent", slot, slot, agent.name, group))
    return node_id


def _short(key: str) -> str:
    """A step's label: its key within its (sub-)topology, without the topology's own name."""
    local = key[_COMPOUND_PREFIX.match(key).end() :]  # type: ignore[union-attr]  # callers pass compound keys only
    return local.split("/", 1)[-1] if "/" in local else local


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _escape(text: str) -> str:
    return text.replace('"', "'").replace("|", "/")


def _shape(node: DagNode) -> str:
    label = _escape(node.label if node.agent is None else f"{node.label}<br/>{node.agent}")
    if node.kind in ("input", "output"):
        return f'(["{label}"])'
    if node.kind == "join":
        return f'{{"{label}"}}'
    return f'["{label}"]'
