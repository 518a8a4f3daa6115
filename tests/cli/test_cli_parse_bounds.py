"""Hostile team files up to the 4 MB bound are refused fast and small, each in a fresh `qmcp` process.

Each file is refused within 2 s of the CLI's own start-up (a `qmcp --help` measured alongside) and
300 MB of peak RSS, with one line naming the bound and where reading stopped. A driver process
runs `qmcp` and reports its wall time and `ru_maxrss`, so no other test's child counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from qmcp.cli._documents import MAX_FILE_BYTES, parse_document

_DRIVER = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
elapsed = time.perf_counter() - started
rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"code": result.returncode, "stderr": result.stderr, "seconds": elapsed, "rss_mb": rss_mb}))
"""

N = 2_000_000


def _flat() -> str:
    return "[" + ",".join(["a"] * N) + "]\n"


def _in_output_schema() -> str:
    return "agents:\n- name: x\n  config:\n    output_schema: [" + ",".join(["1"] * (N - 100)) + "]\n"


def _plain_agents() -> str:
    return "agents:\n" + "".join(f"- {{name: a{i}, role: writer}}\n" for i in range(60_000))


def _json_values() -> str:
    return "[" + ",".join(["1"] * N) + "]"


def _invalid_entries() -> str:
    return "agents:\n" + "".join(f"- {{x: {i}}}\n" for i in range(50_000))


def _valid_agents_then_one_invalid() -> str:
    """66,000 valid agents within the value bound: validating each would take seconds."""
    return "agents:\n" + "".join(f"- {{name: a{i}}}\n" for i in range(66_000)) + "- {x: 1}\n"


def _invalid_agents_and_topologies() -> str:
    """As many invalid entries as a file may declare: each one validated, 20 problems listed."""
    agents = "".join(f"- {{x: {i}}}\n" for i in range(2_000))
    return f"agents:\n{agents}topologies:\n{agents}"


def _valid_team_then_one_invalid() -> str:
    """As many valid agents and topologies as a file may declare, the last topology invalid."""
    agents = "".join(
        f"- {{name: a{i}, role: writer, description: d, config: {{model: test, max_tokens: 100}}}}\n"
        for i in range(2_000)
    )
    topologies = "".join(f"- {{name: t{i}, type: pipeline, agents: {{plan: a{i}}}}}\n" for i in range(1_999))
    return f"agents:\n{agents}topologies:\n{topologies}- {{name: bad, type: mesh}}\n"


def _measure(qmcp_exe: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "QMCP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    driver = subprocess.run(
        [sys.executable, "-c", _DRIVER, qmcp_exe, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=True,
    )
    measured: dict[str, Any] = json.loads(driver.stdout)
    return measured


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "build", "says"),
    [
        ("flat.yaml", _flat, "line 1: more than 200,000 values (stopped reading at value 200,001)"),
        (
            "schema.yaml",
            _in_output_schema,
            "line 4: more than 200,000 values (stopped reading at value 200,001)",
        ),
        (
            "agents.yaml",
            _plain_agents,
            "line 40001: more than 200,000 values (stopped reading at value 200,001)",
        ),
        ("values.json", _json_values, "more than 200,000 values (stopped reading at value 200,001)"),
        ("invalid.yaml", _invalid_entries, "agents: 50,000 entries; a file declares at most 2,000 agents"),
        ("full.yaml", _valid_team_then_one_invalid, "topologies[1999].type: unknown topology type 'mesh'"),
        ("invalid-2000.yaml", _invalid_agents_and_topologies, "and 9,980 more"),
        (
            "valid-agents.yaml",
            _valid_agents_then_one_invalid,
            "agents: 66,001 entries; a file declares at most 2,000 agents, split it into several files",
        ),
    ],
)
def test_a_hostile_file_up_to_the_size_bound_is_refused_in_2_s_and_300_mb(
    qmcp_exe, tmp_path, name, build, says
):
    path = tmp_path / name
    path.write_text(build())
    assert path.stat().st_size <= MAX_FILE_BYTES
    baseline = _measure(qmcp_exe, tmp_path, "--help")
    refused = _measure(qmcp_exe, tmp_path, "apply", "-f", str(path))
    assert refused["code"] == 2, refused["stderr"]
    lines = refused["stderr"].strip().splitlines()
    assert says in lines[-1]
    assert "alias" not in refused["stderr"]
    assert len(lines) <= 21  # at most 20 problems listed, then "and N more"
    if name != "invalid-2000.yaml":
        assert len(lines) == 1
    seconds = refused["seconds"] - baseline["seconds"]
    assert seconds < 2.0, f"refused after {seconds:.2f} s past start-up"
    assert refused["rss_mb"] < 300, f"peak RSS {refused['rss_mb']:.0f} MB"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[1, 2.5, true, null, ~, 2020-01-01, '3', !!str 4, 0x1F, 1_000]",
        "a: &x {b: [1, 2]}\nc: *x\nd: &s text\ne: *s\n",
        "base: &b {role: writer}\nagents:\n  - {<<: *b, name: a, role: critic}\n",
        "!!set {a, b}\n",
        "a: !!binary aGVsbG8=\nb: !!int '12'\n",
        "agents:\n  - name: a\n    config: {model: test, output_schema: {type: object}}\n",
    ],
)
def test_team_files_read_from_events_hold_what_pyyaml_reads(text):
    """Counting from events must not change the data: it is built the same as PyYAML's safe loader."""
    assert parse_document("team.yaml", text) == yaml.safe_load(text)


def test_problems_past_twenty_are_counted_not_listed(cli, tmp_path):
    """Field problems and what only the whole team can check (model strings) are both capped."""
    for name, entry, tail in [
        ("fields.yaml", "- {{x: {i}}}\n", "and 40 more"),  # 2 problems each
        ("models.yaml", "- {{name: a{i}, config: {{model: nonsense}}}}\n", "and 10 more"),
    ]:
        path = tmp_path / name
        path.write_text("agents:\n" + "".join(entry.format(i=i) for i in range(30)))
        result = cli("apply", "-f", str(path))
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2
        assert len(lines) == 21 and lines[-1] == f"error: {path}: {tail}", lines[-3:]
    assert cli.json("agents", "list") == []
