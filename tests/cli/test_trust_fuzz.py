"""Hypothesis: random team files with random executable parts, random trust decisions, edits and runs.

Property: nothing untrusted ever runs. Every executable part leaves a marker named after its
agent and the version of that agent's definition when it runs (a Python tool or output model
when it is looked up, an MCP stdio command when it starts, an MCP HTTP server when it is
reached). The test keeps its own model of which (agent, version) pairs were trusted, from the
operations alone, and checks after every run that each marker belongs to a trusted pair, and
that a run of a team holding an untrusted agent was refused before anything ran.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trust_fixtures import MARKER_VARIABLE, MODULE, marks, mcp_command, write_module

KINDS = ("python_tool", "mcp_stdio", "mcp_http", "output_model", "base_url", "api_key_env", "local_model")
"""The first four run code (and leave markers); the others name endpoints, keys and files, and need trust alike."""

AGENTS = st.lists(st.sets(st.sampled_from(KINDS), max_size=4), min_size=1, max_size=3)
APPLY = st.tuples(st.just("apply"), st.booleans(), st.sets(st.integers(0, 2), max_size=2))
RUN = st.tuples(st.just("run"), st.integers(0, 1))
OPERATIONS = st.tuples(
    APPLY,
    st.lists(
        st.one_of(
            APPLY,
            st.tuples(st.just("trust_agent"), st.integers(0, 2)),
            st.tuples(st.just("trust_topology"), st.integers(0, 1)),
            RUN,
            RUN,
        ),
        max_size=6,
    ),
).map(lambda ops: [ops[0], *ops[1], ("run", 0), ("run", 1)])
"""Starts with an apply and ends running every topology, with any mix of operations between."""


@dataclass
class World:
    """The test's own account of what is stored and trusted."""

    kinds: list[set[str]]
    topologies: list[list[int]]
    markers: Path
    http_url: str
    stored: dict[int, int] = field(default_factory=dict)  # agent index -> stored version
    trusted: set[tuple[int, int]] = field(default_factory=set)  # (agent index, version)
    versions: dict[int, int] = field(default_factory=dict)  # agent index -> version of the file

    def agent(self, index: int) -> dict[str, Any]:
        version = self.versions.get(index, 0)
        tag = f"a{index}_v{version}"
        config: dict[str, Any] = {"model": "test", "system_prompt": f"version {version}", "capabilities": []}
        tool_use: dict[str, Any] = {}
        kinds = self.kinds[index]
        if "python_tool" in kinds:
            tool_use["tools"] = [f"{MODULE}:tool_{tag}"]
        servers = []
        if "mcp_stdio" in kinds:
            servers.append(mcp_command(self.markers / f"mcp_{tag}"))
        if "mcp_http" in kinds:
            servers.append({"url": f"{self.http_url}/http_{tag}/mcp"})
        if servers:
            tool_use["mcp_servers"] = servers
            tool_use["connect_timeout_seconds"] = 5
        if tool_use:
            config["capabilities"].append("tool_use")
            config.setdefault("mixins", {})["tool_use"] = tool_use
        if "output_model" in kinds:
            config["capabilities"].append("structured_output")
            config.setdefault("mixins", {})["structured_output"] = {"model": f"{MODULE}:Model_{tag}"}
        if "base_url" in kinds:
            config["base_url"] = "http://127.0.0.1:9/v1"
        if "api_key_env" in kinds:
            config["api_key_env"] = "ANTHROPIC_API_KEY"
        if "local_model" in kinds:
            config["model"] = "local:/nonexistent/model.gguf"
        return {"name": f"a{index}", "role": "writer", "config": config}

    def document(self) -> dict[str, Any]:
        return {
            "agents": [self.agent(index) for index in range(len(self.kinds))],
            "topologies": [
                {
                    "name": f"t{number}",
                    "type": "pipeline",
                    "agents": {f"s{i}": f"a{a}" for i, a in enumerate(members)},
                }
                for number, members in enumerate(self.topologies)
            ],
        }

    def needs_trust(self, index: int) -> bool:
        return bool(self.kinds[index])

    def runnable(self, topology: int) -> bool:
        return all(
            not self.needs_trust(a) or (a, self.stored[a]) in self.trusted for a in self.topologies[topology]
        )


class _Reached(BaseHTTPRequestHandler):
    """An MCP HTTP server that only records that it was reached (path = the agent and version)."""

    directory: Path

    def _record(self) -> None:
        name = self.path.strip("/").split("/")[0]
        (self.directory / name).touch()
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = _record

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def http_marker(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    directory = tmp_path / "marks"
    directory.mkdir()
    handler = type("Reached", (_Reached,), {"directory": directory})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", directory
    finally:
        server.shutdown()
        server.server_close()


FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.slow
def test_nothing_untrusted_ever_runs(cli, tmp_path, monkeypatch, http_marker):
    url, markers = http_marker
    write_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    monkeypatch.setenv(MARKER_VARIABLE, str(markers))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-planted")
    counts = {"refused": 0, "ran": 0, "ran code": 0}
    examples = iter(range(10_000))

    @FUZZ
    @given(
        AGENTS,
        st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=3), min_size=1, max_size=2),
        OPERATIONS,
    )
    def check(kinds: list[set[str]], topologies: list[list[int]], operations: list[tuple[Any, ...]]) -> None:
        db = tmp_path / f"fuzz-{next(examples)}.db"
        for mark in markers.iterdir():
            mark.unlink()
        world = World(kinds, [[a % len(kinds) for a in t] for t in topologies], markers, url)

        def qmcp(*args: str) -> Any:
            from typer.testing import CliRunner

            from qmcp.cli import app

            return CliRunner().invoke(app, ["--db", str(db), *args])

        for operation in operations:
            kind = operation[0]
            if kind == "apply":
                _, trust, edits = operation
                for index in edits:
                    if index < len(kinds):
                        world.versions[index] = world.versions.get(index, 0) + 1
                path = tmp_path / "team.yaml"
                path.write_text(yaml.safe_dump(world.document()))
                result = qmcp("apply", *(["--trust"] if trust else []), "-f", str(path))
                assert result.exit_code == 0, result.stderr
                world.stored = {index: world.versions.get(index, 0) for index in range(len(kinds))}
                if trust:
                    world.trusted |= set(world.stored.items())
            elif kind == "trust_agent":
                index = operation[1] % len(kinds)
                assert qmcp("trust", "agent", f"a{index}").exit_code == 0
                world.trusted.add((index, world.stored[index]))
            elif kind == "trust_topology":
                number = operation[1] % len(world.topologies)
                assert qmcp("trust", "topology", f"t{number}").exit_code == 0
                world.trusted |= {(a, world.stored[a]) for a in world.topologies[number]}
            else:
                number = operation[1] % len(world.topologies)
                before = marks(markers)
                result = qmcp(
                    "--model",
                    "test",
                    "agents",
                    "topologies",
                    "run",
                    f"t{number}",
                    "--input-json",
                    '{"prompt": "go"}',
                )
                if world.runnable(number):
                    assert "not trusted" not in result.stderr, result.stderr
                    counts["ran"] += 1
                    counts["ran code"] += marks(markers) != before
                else:
                    assert result.exit_code == 2 and "is not trusted to run" in result.stderr, result.stderr
                    assert marks(markers) == before, "a refused run ran something"
                    counts["refused"] += 1
            for mark in marks(markers):
                agent, version = mark.split("_a", 1)[1].removesuffix(".called").split("_v")
                pair = (int(agent), int(version))
                assert pair in world.trusted, f"{mark} ran, but a{agent} version {version} was never trusted"

    check()
    print(f"\ntrust fuzz: {counts}")
    assert counts["refused"] > 0 and counts["ran code"] > 0  # both sides of the property were exercised
