"""Diagrams without a browser: `topologies show NAME --mermaid` and `executions show ID --svg FILE`."""

from __future__ import annotations

import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"


def _team(cli) -> None:
    cli.ok("agents", "create", "planner", "planner", "--model", "test")
    cli.ok("agents", "create", "writer", "writer", "--model", "test")
    cli.ok("agents", "topologies", "create", "review", "pipeline", "-a", "plan=planner", "-a", "write=writer")


def test_topology_as_mermaid(cli):
    _team(cli)
    text = cli.ok("agents", "topologies", "show", "review", "--mermaid").stdout
    assert text.splitlines() == [
        "flowchart TD",
        '  n0(["input"])',
        '  n1["plan<br/>planner"]',
        '  n2["write<br/>writer"]',
        '  n3(["output"])',
        "  n0 --> n1",
        "  n1 --> n2",
        "  n2 --> n3",
    ]
    cli.user_error("agents", "topologies", "show", "nope", "--mermaid", says="nope")


def test_execution_as_svg(cli, tmp_path):
    _team(cli)
    run = cli.json("agents", "topologies", "run", "review", "--input-json", '{"prompt": "Why?"}')
    target = tmp_path / "run.svg"
    result = cli.ok("executions", "show", run["execution_id"], "--svg", str(target))
    assert f"diagram written to {target}" in result.stderr
    root = ET.parse(target).getroot()
    nodes = {g.get("data-key"): g.get("class") for g in root.iter(f"{SVG}g") if g.get("data-key")}
    assert nodes["pipeline/0:plan"] == "node kind-step s-completed"
    assert nodes["pipeline/1:write"] == "node kind-step s-completed"
    assert "completed" in root.find(f"{SVG}title").text
    missing = tmp_path / "no" / "such" / "dir" / "x.svg"
    cli.user_error("executions", "show", run["execution_id"], "--svg", str(missing), says="does not exist")
    assert not missing.parent.exists()
