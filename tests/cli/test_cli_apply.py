"""`qmcp apply -f FILE`: declarative teams, idempotence, and errors with the path of the bad field."""

from __future__ import annotations

import json
from pathlib import Path

TEAM = """\
agents:
  - name: researcher
    role: researcher
    description: Finds facts
    config: {model: test, max_tokens: 128}
  - name: skeptic
    role: critic
    config: {model: test}
  - name: editor
    role: synthesizer
topologies:
  - name: research
    type: ensemble
    description: Two views, one answer
    config: {aggregation_method: synthesis, failure_threshold: 0.5}
    agents: {one: researcher, two: skeptic, aggregator: editor}
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_apply_twice_changes_nothing(cli, tmp_path):
    team = _write(tmp_path, "team.yaml", TEAM)
    first = cli.json("apply", "-f", team)
    assert first["changed"] is True
    assert {(r["kind"], r["name"], r["action"]) for r in first["results"]} == {
        ("agent", "researcher", "created"),
        ("agent", "skeptic", "created"),
        ("agent", "editor", "created"),
        ("topology", "research", "created"),
    }
    second = cli.json("apply", "-f", team)
    assert second["changed"] is False
    assert {r["action"] for r in second["results"]} == {"unchanged"}
    assert "no changes" in cli.ok("apply", "-f", team).stdout

    stored = cli.json("agents", "topologies", "show", "research")
    assert stored["agents"]["aggregator"]["name"] == "editor"
    assert stored["config"]["failure_threshold"] == 0.5
    assert cli.json("agents", "show", "researcher")["config"]["max_tokens"] == 128

    changed = _write(tmp_path, "team.yaml", TEAM.replace("max_tokens: 128", "max_tokens: 64"))
    third = cli.json("apply", "-f", changed)
    assert [(r["name"], r["action"]) for r in third["results"] if r["action"] != "unchanged"] == [
        ("researcher", "updated")
    ]
    out = cli.ok("apply", "-f", changed).stdout
    assert "no changes" in out


def test_apply_json_and_stdin(cli, tmp_path):
    document = {"agents": [{"name": "solo", "role": "writer", "config": {"model": "test"}}]}
    team = _write(tmp_path, "team.json", json.dumps(document))
    assert cli.json("apply", "-f", team)["results"] == [
        {"kind": "agent", "name": "solo", "action": "created"}
    ]
    piped = json.dumps({"agents": [{"name": "piped", "role": "critic"}]})
    result = cli.ok("apply", "-f", "-", input=piped)
    assert "agent piped created" in result.stdout
    assert "<stdin>: 1 created" in result.stdout


def test_topology_may_use_stored_agents(cli, tmp_path):
    cli.ok("agents", "create", "stored", "writer", "--model", "test")
    team = _write(
        tmp_path, "t.yaml", "topologies:\n  - {name: line, type: pipeline, agents: {only: stored}}\n"
    )
    assert cli.json("apply", "-f", team)["results"] == [
        {"kind": "topology", "name": "line", "action": "created"}
    ]


def test_bad_field_is_reported_with_its_path(cli, tmp_path):
    bad = _write(tmp_path, "team.yaml", TEAM.replace("failure_threshold: 0.5", "failure_threshold: 3"))
    cli.user_error(
        "apply", "-f", bad,
        says=f"{bad}: topologies[0].config.failure_threshold: Input should be less than or equal to 1",
    )  # fmt: skip
    assert cli.json("agents", "list") == []  # nothing written


def test_every_problem_is_listed_before_anything_is_written(cli, tmp_path):
    bad = _write(
        tmp_path,
        "bad.yaml",
        """\
agents:
  - {name: fine, role: writer}
  - {name: Shouty, role: wizard, config: {temperature: 7}}
topologies:
  - {name: pair, type: debate, agents: {proponent: fine}}
  - {name: lost, type: pipeline, agents: {a: ghost}}
""",
    )
    result = cli("apply", "-f", bad)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        f"error: {bad}: agents[1].name: invalid agent name 'Shouty': "
        "use 1-64 lowercase letters, digits, '_' or '-', starting with a letter"
    )
    assert f"error: {bad}: agents[1].role: Input should be 'generalist'" in result.stderr
    assert (
        f"error: {bad}: agents[1].config.temperature: Input should be less than or equal to 2"
        in result.stderr
    )
    assert "Traceback" not in result.stderr

    fixed = Path(bad).read_text().replace("  - {name: Shouty, role: wizard, config: {temperature: 7}}\n", "")
    semantic = _write(tmp_path, "semantic.yaml", fixed)
    result = cli("apply", "-f", semantic)
    assert result.exit_code == 2
    assert f"error: {semantic}: topologies[0].agents: missing agents for slot(s): opponent" in result.stderr
    assert (
        f"error: {semantic}: topologies[1].agents.a: agent 'ghost' is neither in this file nor in the "
        "database" in result.stderr
    )
    assert cli.json("agents", "list") == []


def test_unreadable_files(cli, tmp_path):
    cli.user_error("apply", "-f", str(tmp_path / "missing.yaml"), says="missing.yaml: no such file")
    broken = _write(tmp_path, "broken.yaml", "agents: [\n")
    cli.user_error("apply", "-f", broken, says="broken.yaml: invalid YAML at line 2")
    broken_json = _write(tmp_path, "broken.json", '{"agents": 5')
    cli.user_error("apply", "-f", broken_json, says="broken.json: invalid JSON at line 1")
    scalar = _write(tmp_path, "scalar.yaml", "just text\n")
    cli.user_error("apply", "-f", scalar, says="expected a mapping with 'agents' and/or 'topologies'")
    unknown = _write(tmp_path, "unknown.yaml", "agentz: []\n")
    cli.user_error("apply", "-f", unknown, says="agentz: unknown section")
    twice = _write(tmp_path, "twice.yaml", "agents: [{name: a, role: writer}, {name: a, role: critic}]\n")
    cli.user_error("apply", "-f", twice, says="agents[1].name: 'a' is declared twice (also agents[0])")


def test_model_strings_are_checked_when_applied(cli, tmp_path):
    noted = _write(tmp_path, "noted.yaml", "agents:\n  - {name: a, config: {model: claude-sonet}}\n")
    result = cli.ok("apply", "-f", noted)
    assert result.stderr.startswith(f"note: {noted}: agents[0].config.model: anthropic lists no model")
    assert "agent a created" in result.stdout
    bad = _write(tmp_path, "bad.yaml", "agents:\n  - {name: b, config: {model: 'nope:thing'}}\n")
    cli.user_error("apply", "-f", bad, says=f"{bad}: agents[0].config.model: unknown model 'nope:thing'")
    assert [a["name"] for a in cli.json("agents", "list")] == ["a"]


def test_every_problem_of_every_check_comes_at_once_with_suggestions(cli, tmp_path):
    """Field checks and the checks against the team (models, slots, agents named) in one run, each
    misspelt field, role, type or agent with the name it was probably meant to be."""
    bad = _write(
        tmp_path,
        "typos.yaml",
        """\
agents:
  - {name: writer, role: writer, config: {model: test, temprature: 0.5, mixins: {memory: {limt: 3}}}}
  - {name: numbers, role: analist}
  - {name: priced, role: critic, config: {model: 'nope:thing'}}
  - {name: fine, role: critic, config: {model: test}}
topologies:
  - {name: a, type: pipline, agents: {one: fine}}
  - {name: b, type: pipeline, agents: {one: fien}}
  - {name: c, type: ensemble, config: {aggregation_methd: synthesis}, agents: {one: fine}}
  - {name: d, type: debate, agents: {proponent: fine}}
  - {name: e, type: pipeline, agents: {one: writer, two: numbers}}
  - {name: f, type: pipeline, agents: {one: fine}, descripton: x}
""",
    )
    result = cli("apply", "-f", bad)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    expected = [
        "agents[0].config.temprature: Extra inputs are not permitted; did you mean 'temperature'?",
        "agents[0].config.mixins.memory.limt: Extra inputs are not permitted; did you mean 'limit'?",
        "agents[1].role: Input should be",
        "did you mean 'analyst'?",
        "topologies[0].type: unknown topology type 'pipline'; did you mean 'pipeline'?",
        "topologies[2].config.aggregation_methd: Extra inputs are not permitted; did you mean 'aggregation_method'?",
        "topologies[5].descripton: Extra inputs are not permitted; did you mean 'description'?",
        "agents[2].config.model: unknown model 'nope:thing'",
        "topologies[1].agents.one: agent 'fien' is neither in this file nor in the database; did you mean 'fine'?",
        "topologies[3].agents: missing agents for slot(s): opponent",
    ]
    for text in expected:
        assert any(text in line for line in lines), (text, result.stderr)
    assert all(line.startswith(f"error: {bad}: ") for line in lines), result.stderr
    assert len(lines) == 9, result.stderr  # `e` names agents with problems of their own: not told again
    assert cli.json("agents", "list") == []


def test_more_than_twenty_problems_across_checks_are_counted(cli, tmp_path):
    agents = "".join(
        f"  - {{name: a{i}, role: critic, config: {{model: 'nope:thing'}}}}\n" for i in range(15)
    )
    topologies = "".join(f"  - {{name: t{i}, type: pipline}}\n" for i in range(10))
    bad = _write(tmp_path, "many.yaml", f"agents:\n{agents}topologies:\n{topologies}")
    lines = cli("apply", "-f", bad).stderr.strip().splitlines()
    assert len(lines) == 21 and lines[-1] == f"error: {bad}: and 5 more", lines[-3:]
    assert "did you mean 'pipeline'?" in lines[0] and "unknown model" in lines[-2]
