"""A topology's graph (`Dag`) drawn as SVG, its step nodes coloured by status.

One renderer for the console's pages and `qmcp executions show ID --svg FILE`, so the picture in
the browser and the file agree. Drawn left to right: a node's column is its longest path from the
input, so a pipeline is a row, an ensemble a column of members between the input and its join,
debate rounds a row of turns. A long chain (more than `MAX_ACROSS` columns: a debate of several
rounds) is drawn top to bottom instead, so it reads down a page rather than off its right edge.
A compound's sub-topologies are framed boxes. The SVG carries its own
styles (a file opens alone) and says each node's status in words too, not by colour only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import TYPE_CHECKING

from ._dag import Dag, DagNode

if TYPE_CHECKING:
    from ..models import Execution, ExecutionStep

__all__ = ["STATUS_SYMBOLS", "dag_layout", "dag_svg", "execution_diagram"]

NODE_WIDTH = 176
NODE_HEIGHT = 44
COLUMN_GAP = 64
ROW_GAP = 18
MARGIN = 24
GROUP_PAD = 12
GROUP_LABEL = 16
MAX_ACROSS = 6
"""Columns drawn left to right at most; a longer graph is drawn top to bottom."""
LAYER_GAP = 40
"""Between layers drawn top to bottom (room for an edge's label)."""

STATUS_SYMBOLS = {
    "completed": "✓",
    "replayed": "✓",
    "failed": "✗",
    "running": "●",
    "retry": "↻",
    "paused": "⏸",
    "pending": "",
}

_STYLE = """
.qd text{font:12px system-ui,-apple-system,'Segoe UI',sans-serif;fill:#0f172a}
.qd .agent-name{font-size:11px;fill:#334155}
.qd .edge{fill:none;stroke:#64748b;stroke-width:1.4}
.qd .edge-label{font-size:10px;fill:#334155;paint-order:stroke;stroke:#fff;stroke-width:3px}
.qd .node rect{fill:#f8fafc;stroke:#64748b;stroke-width:1.5}
.qd .node.kind-join rect{stroke-dasharray:5 3}
.qd .node.kind-input rect,.qd .node.kind-output rect{fill:#e2e8f0}
.qd .node.kind-agent rect{fill:#fefce8;stroke:#a16207}
.qd .node.s-completed rect,.qd .node.s-replayed rect{fill:#dcfce7;stroke:#15803d}
.qd .node.s-failed rect{fill:#fee2e2;stroke:#b91c1c;stroke-width:2.5}
.qd .node.s-running rect,.qd .node.s-retry rect{fill:#dbeafe;stroke:#1d4ed8;stroke-width:2.5}
.qd .node.s-paused rect{fill:#fef3c7;stroke:#b45309;stroke-width:2.5}
.qd .status{font-size:13px;font-weight:bold}
.qd .group rect{fill:none;stroke:#94a3b8;stroke-dasharray:2 3}
.qd .group text{font-size:11px;fill:#475569;font-weight:600}
.qd a:focus rect,.qd a:hover rect{stroke:#7c3aed;stroke-width:3}
"""


def dag_layout(dag: Dag) -> dict[str, tuple[int, int]]:
    """Each node's (column, row): column = longest path from a source, rows ordered so that a node
    sits near the nodes that feed it (one barycentre pass), keeping the graph's own order on ties."""
    order = {node.id: index for index, node in enumerate(dag.nodes)}
    incoming: dict[str, list[str]] = {node.id: [] for node in dag.nodes}
    outgoing: dict[str, list[str]] = {node.id: [] for node in dag.nodes}
    for edge in dag.edges:
        if edge.source in order and edge.target in order:
            outgoing[edge.source].append(edge.target)
            incoming[edge.target].append(edge.source)
    column = dict.fromkeys(order, 0)
    waiting = {node: len(sources) for node, sources in incoming.items()}
    ready = [node for node, count in waiting.items() if count == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for target in outgoing[node]:
            column[target] = max(column[target], column[node] + 1)
            waiting[target] -= 1
            if waiting[target] == 0:
                ready.append(target)
    if seen < len(order):  # a cycle (not made by topologies): keep the nodes' own order
        column = {node: index for index, node in enumerate(order)}
    columns: dict[int, list[str]] = {}
    for node in sorted(order, key=order.__getitem__):
        columns.setdefault(column[node], []).append(node)
    row: dict[str, float] = {}
    for number in sorted(columns):
        members = columns[number]
        if number > 0:

            def weight(node: str) -> tuple[float, int]:
                fed = [row[s] for s in incoming[node] if s in row]
                return (sum(fed) / len(fed) if fed else float("inf"), order[node])

            members.sort(key=weight)
        for index, node in enumerate(members):
            row[node] = index
    return {node: (column[node], int(row[node])) for node in order}


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dag_svg(
    dag: Dag,
    statuses: Mapping[str, str] | None = None,
    *,
    title: str = "topology",
    link: Callable[[DagNode], str | None] | None = None,
) -> str:
    """The graph as a standalone SVG document. `statuses`: step key → completed, failed, running,
    retry, replayed, paused (others are pending). `link(node)`: the URL a node links to, if any."""
    statuses = statuses or {}
    places = dag_layout(dag)
    heights: dict[int, int] = {}
    for column, row in places.values():
        heights[column] = max(heights.get(column, 0), row + 1)
    tallest = max(heights.values(), default=1)
    layers = max(heights, default=0) + 1
    down = layers > MAX_ACROSS
    groups = {group.id: group for group in dag.groups}
    depth = {gid: _depth(gid, groups) for gid in groups}
    nesting = max(depth.values(), default=-1) + 1
    top = MARGIN + GROUP_LABEL * nesting

    boxes: dict[str, tuple[float, float]] = {}
    if down:  # a layer is a row, its members side by side
        left = MARGIN + GROUP_PAD * nesting
        pitch = NODE_WIDTH + ROW_GAP * 2
        for node_id, (column, row) in places.items():
            offset = (tallest - heights[column]) * pitch / 2
            boxes[node_id] = (left + offset + row * pitch, top + column * (NODE_HEIGHT + LAYER_GAP))
        width = left + tallest * pitch - ROW_GAP * 2 + MARGIN + GROUP_PAD * nesting
        height = top + layers * (NODE_HEIGHT + LAYER_GAP) - LAYER_GAP + MARGIN + GROUP_PAD * nesting
    else:
        pitch = NODE_HEIGHT + ROW_GAP
        for node_id, (column, row) in places.items():
            offset = (tallest - heights[column]) * pitch / 2
            boxes[node_id] = (MARGIN + column * (NODE_WIDTH + COLUMN_GAP), top + offset + row * pitch)
        width = MARGIN * 2 + layers * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
        height = top + tallest * pitch - ROW_GAP + MARGIN + GROUP_PAD * nesting

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="qd" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-labelledby="qd-title" '
        f'data-flow="{"down" if down else "across"}">',
        f'<title id="qd-title">{escape(title)}</title>',
        f"<style>{_STYLE}</style>",
        '<defs><marker id="qd-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" fill="#64748b"/></marker></defs>',
    ]
    members: dict[str, list[str]] = {}
    for node in dag.nodes:
        group = node.group
        while group is not None:
            members.setdefault(group, []).append(node.id)
            group = groups[group].parent if group in groups else None
    for gid in sorted(groups, key=lambda g: depth[g]):
        inside = [boxes[n] for n in members.get(gid, [])]
        if not inside:
            continue
        inner = max(depth.values()) - depth[gid]
        pad = GROUP_PAD * (inner + 1)
        x0 = min(x for x, _ in inside) - pad
        y0 = min(y for _, y in inside) - pad - GROUP_LABEL
        x1 = max(x for x, _ in inside) + NODE_WIDTH + pad
        y1 = max(y for _, y in inside) + NODE_HEIGHT + pad
        out.append(
            f'<g class="group"><rect x="{x0:.0f}" y="{y0:.0f}" width="{x1 - x0:.0f}" height="{y1 - y0:.0f}" '
            f'rx="8"/><text x="{x0 + 8:.0f}" y="{y0 + 13:.0f}">{escape(groups[gid].label)}</text></g>'
        )
    for edge in dag.edges:
        if edge.source not in boxes or edge.target not in boxes:
            continue
        (sx, sy), (tx, ty) = boxes[edge.source], boxes[edge.target]
        if down:
            x1, y1, x2, y2 = sx + NODE_WIDTH / 2, sy + NODE_HEIGHT, tx + NODE_WIDTH / 2, ty
            if y2 <= y1:  # same layer (not made by topologies): go round the side
                x2, y2 = tx, ty + NODE_HEIGHT / 2
            bend = max(18.0, (y2 - y1) / 2)
            curve = f"C{x1:.0f} {y1 + bend:.0f} {x2:.0f} {y2 - bend:.0f}"
        else:
            x1, y1, x2, y2 = sx + NODE_WIDTH, sy + NODE_HEIGHT / 2, tx, ty + NODE_HEIGHT / 2
            if x2 <= x1:  # same column (not made by topologies): go round the side
                x2, y2 = tx + NODE_WIDTH / 2, ty
            bend = max(24.0, (x2 - x1) / 2)
            curve = f"C{x1 + bend:.0f} {y1:.0f} {x2 - bend:.0f} {y2:.0f}"
        out.append(
            f'<path class="edge" d="M{x1:.0f} {y1:.0f}{curve} {x2:.0f} {y2:.0f}" marker-end="url(#qd-arrow)"/>'
        )
        if edge.label:
            out.append(
                f'<text class="edge-label" x="{(x1 + x2) / 2:.0f}" y="{(y1 + y2) / 2 - 4:.0f}" '
                f'text-anchor="middle">{escape(edge.label)}</text>'
            )
    for node in dag.nodes:
        out.append(_node_svg(node, boxes[node.id], statuses.get(node.id), link(node) if link else None))
    out.append("</svg>")
    return "\n".join(out)


def _node_svg(node: DagNode, box: tuple[float, float], status: str | None, href: str | None) -> str:
    x, y = box
    kind_status = status or ("pending" if node.kind == "step" else None)
    classes = f"node kind-{node.kind}" + (f" s-{kind_status}" if kind_status else "")
    radius = NODE_HEIGHT / 2 if node.kind in ("input", "output") else 6
    words = (
        [node.label]
        + ([f"agent {node.agent}"] if node.agent else [])
        + ([kind_status] if kind_status else [])
    )
    parts = [
        f'<g class="{classes}" data-key="{escape(node.id)}">',
        f"<title>{escape(' · '.join(words))}</title>",
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="{radius:.0f}"/>',
    ]
    if node.agent:
        parts.append(
            f'<text x="{x + 10:.0f}" y="{y + 18:.0f}">{escape(_short(node.label, 24))}</text>'
            f'<text class="agent-name" x="{x + 10:.0f}" y="{y + 34:.0f}">{escape(_short(node.agent, 26))}</text>'
        )
    else:
        parts.append(
            f'<text x="{x + NODE_WIDTH / 2:.0f}" y="{y + 27:.0f}" text-anchor="middle">'
            f"{escape(_short(node.label, 26))}</text>"
        )
    symbol = STATUS_SYMBOLS.get(kind_status or "", "")
    parts.append(
        f'<text class="status" x="{x + NODE_WIDTH - 16:.0f}" y="{y + 18:.0f}" aria-hidden="true">{symbol}</text>'
    )
    parts.append("</g>")
    body = "".join(parts)
    if href:
        label = escape(f"step {node.id}" + (f", {kind_status}" if kind_status else ""))
        return f'<a href="{escape(href)}" aria-label="{label}">{body}</a>'
    return body


def _depth(group_id: str, groups: Mapping[str, object]) -> int:
    depth, current = 0, groups[group_id]
    while isinstance(parent := getattr(current, "parent", None), str) and parent in groups:
        depth += 1
        current = groups[parent]
    return depth


def execution_diagram(
    execution: Execution, steps: Iterable[ExecutionStep], running: Iterable[tuple[str, str, str]] = ()
) -> tuple[Dag, dict[str, str]]:
    """An execution's graph, from the team it ran with, plus its steps' statuses (step key → status).

    `running`: the (key, slot, agent) of steps in flight, which have no row until they finish.
    """
    from ..models import AgentType, Topology
    from ._dag import topology_dag

    topology = Topology.model_validate(execution.topology_snapshot)
    agents = {slot: AgentType.model_validate(data) for slot, data in execution.agents_snapshot.items()}
    steps = list(steps)
    running = list(running)
    statuses = {step.key: str(step.status) for step in steps}
    statuses.update({key: "running" for key, _, _ in running if key not in statuses})
    dag = topology_dag(topology, agents, execution.teams_snapshot).with_steps(
        [(s.key, s.slot, s.agent_name) for s in steps] + running
    )
    return dag, statuses
