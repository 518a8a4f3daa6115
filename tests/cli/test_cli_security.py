"""Hostile input at the CLI: team files within bounds, NUL refused, and no password ever printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from qmcp.cli._state import CliState
from qmcp.redaction import has_password, mask_url, redact

# -- team files: size, alias expansion, nesting, duplicate keys ----------------------------------------

BOMB = "".join(
    f"{level}: &{level} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, level in zip("abcdefgh", "bcdefghi", strict=True)
)
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + BOMB


@pytest.mark.slow
def test_an_alias_bomb_is_refused_in_under_a_second_with_one_line(run_qmcp, tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 450  # 9 levels of 9 aliases: about 387 million strings once expanded
    started = time.perf_counter()
    result = run_qmcp("apply", "-f", str(bomb))
    elapsed = time.perf_counter() - started
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: {bomb}: line 6: expands to more than 200,000 values (stopped reading at 207,600, 38 alias(es) "
        "expanded; each use of an alias counts what it repeats); write the file out without aliases, or split it"
    ]
    assert elapsed < 1.0, f"the whole command took {elapsed:.2f} s"


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        (
            "dup.yaml",
            "agents:\n  - name: a\n    role: writer\n    name: b\n",
            "line 4, column 5: key 'name' is given twice",
        ),
        (
            "dup.json",
            '{"agents": [], "agents": [{"name": "a"}]}',
            "key 'agents' is given twice in one object",
        ),
        (
            "merge.yaml",
            "base: &b {role: writer}\nagents:\n  - {<<: *b, name: a, role: critic}\n",
            "base: unknown section",
        ),
        ("recursive.yaml", "agents: &a [*a]\n", "line 1: alias *a is used inside the node it names"),
        (
            "anchors.yaml",
            "a: &x 1\nagents: &x []\n",
            "invalid YAML at line 2, column 9: anchor &x is given twice; rename one",
        ),
        ("deep.yaml", "agents: " + "[" * 200 + "]" * 200 + "\n", "nested deeper than 64 levels"),
        ("deep.json", '{"agents": ' + "[" * 5000 + "]" * 5000 + "}", "nested deeper than 64 levels"),
        (
            "long-int.yaml",
            "agents:\n  - name: a\n    config:\n      max_tokens: " + "9" * 5000 + "\n",
            "line 4: an integer of 5,000 digits; at most 1,000 are read",
        ),
        (
            "long-int.json",
            '{"agents": [{"name": "a", "config": {"max_tokens": -' + "9" * 5000 + "}}]}",
            "long-int.json: an integer of 5,000 digits; at most 1,000 are read",
        ),
        (
            "infinite.json",
            '{"agents": [{"name": "a", "config": {"model": "test", "output_schema": {"x": 1e999}}}]}',
            "infinite.json: NaN or Infinity, which JSON and the databases cannot hold",
        ),
        (
            "nan.yaml",
            "agents:\n  - name: a\n    config:\n      temperature: .nan\n",
            "nan.yaml: line 4: NaN or Infinity",
        ),
        (
            "many.yaml",
            "agents: [" + "1," * 200_001 + "]\n",
            "many.yaml: line 1: more than 200,000 values (stopped reading at value 200,001); split it",
        ),
        (
            "entries.yaml",
            "agents:\n" + "- {name: a}\n" * 2001,
            "agents: 2,001 entries; a file declares at most 2,000 agents, split it into several files",
        ),
        (
            "many.json",
            '{"agents": [' + '"a",' * 200_001 + '"a"]}',
            "many.json: more than 200,000 values (stopped reading at value 200,001); split it",
        ),
        (
            "big.yaml",
            "agents: []\n" + "#" * (4 * 1024 * 1024) + "\n",
            "larger than 4 MB; split it into several files",
        ),
    ],
)
def test_team_files_beyond_the_bounds_are_refused_in_one_line(cli, tmp_path, name, text, says):
    path = tmp_path / name
    path.write_text(text)
    cli.user_error("apply", "-f", str(path), says=says)
    assert cli.json("agents", "list") == []


def test_run_input_json_is_counted_before_it_is_decoded(cli, tmp_path):
    cli.ok("agents", "create", "solo", "writer", "--model", "test")
    cli.ok("agents", "topologies", "create", "line", "pipeline", "--agent", "only=solo")
    many, deep = tmp_path / "input.json", tmp_path / "deep.json"
    many.write_text('{"prompt": [' + "1," * 1_000_000 + "1]}")
    cli.user_error(
        "agents", "topologies", "run", "line", "--input-file", str(many),
        says=f"--input-file {many}: more than 200,000 values (stopped reading at value 200,001)",
    )  # fmt: skip
    cli.user_error(
        "agents", "topologies", "run", "line", "--input-json", '{"prompt": [' + "1," * 200_001 + "1]}",
        says="--input-json: more than 200,000 values (stopped reading at value 200,001)",
    )  # fmt: skip
    cli.user_error(
        "agents", "topologies", "run", "line", "--input-file", "/dev/zero",
        says="--input-file /dev/zero: larger than 4 MB",
    )  # fmt: skip
    for depth in (101, 1_000, 100_000):  # past the decoder's recursion too: one line, not a RecursionError
        deep.write_text('{"prompt": ' + "[" * depth + "]" * depth + "}")
        cli.user_error(
            "agents", "topologies", "run", "line", "--input-file", str(deep),
            says="input_data is nested deeper than 100 levels; flatten it",
        )  # fmt: skip
    cli.user_error(
        "agents", "topologies", "run", "line", "--input-json", '{"prompt": ' + "[" * 1_000 + "]" * 1_000 + "}",
        says="input_data is nested deeper than 100 levels; flatten it",
    )  # fmt: skip
    assert cli.json("executions", "list") == []


def test_an_endless_file_is_read_only_up_to_the_bound(cli):
    cli.user_error("apply", "-f", "/dev/zero", says="/dev/zero: larger than 4 MB")


def test_cli_refuses_nul_in_input_and_in_team_files(cli, tmp_path):
    cli.ok("agents", "create", "solo", "writer", "--model", "test")
    cli.ok("agents", "topologies", "create", "line", "pipeline", "--agent", "only=solo")
    cli.user_error(
        "agents", "topologies", "run", "line", "--input-json", '{"prompt": "a\\u0000b"}',
        says="input_data.prompt contains a NUL character (\\x00), which the database cannot store; remove it",
    )  # fmt: skip
    assert cli.json("executions", "list") == []
    team = tmp_path / "team.json"
    team.write_text(json.dumps({"agents": [{"name": "bad", "config": {"system_prompt": "a\x00"}}]}))
    cli.user_error("apply", "-f", str(team), says="config.system_prompt contains a NUL character")
    assert [a["name"] for a in cli.json("agents", "list")] == ["solo"]


# -- passwords -------------------------------------------------------------------------------------------


def test_urls_are_masked():
    url = "postgresql+asyncpg://qmcp:s3cr%40t@db.example:5432/runs"
    assert mask_url(url) == "postgresql+asyncpg://qmcp:***@db.example:5432/runs"
    assert redact(f"cannot reach '{url}' (also postgresql://u:p@ss@h/d)") == (
        "cannot reach 'postgresql+asyncpg://qmcp:***@db.example:5432/runs' (also postgresql://u:***@h/d)"
    )
    assert has_password(url) and not has_password(mask_url(url))
    for harmless in ("sqlite+aiosqlite:///./agent.db", "postgresql://qmcp@db/runs", "no url here"):
        assert redact(harmless) == harmless and not has_password(harmless)


def test_hints_never_carry_a_password():
    with_password = CliState(db="postgresql+asyncpg://qmcp:hunter2@db/runs")
    assert with_password.command("executions", "resume", "X") == (
        "qmcp --db 'postgresql+asyncpg://qmcp:***@db/runs' executions resume X "
        "(password hidden: put the URL in QMCP_DATABASE_URL and leave out --db)"
    )
    assert CliState(db="postgresql+asyncpg://qmcp@db/runs").command("x") == (
        "qmcp --db postgresql+asyncpg://qmcp@db/runs x"
    )
    assert (
        CliState().command("executions", "resume", "X") == "qmcp executions resume X"
    )  # from the environment


def test_log_lines_mask_passwords(capsys):
    from qmcp.observability import configure_logging, get_logger

    configure_logging("INFO")
    get_logger().info("db.open", url="postgresql://qmcp:hunter2@db/runs", note="see postgresql://a:b@c/d")
    err = capsys.readouterr().err
    assert "hunter2" not in err and ":b@" not in err
    assert "postgresql://qmcp:***@db/runs" in err and "postgresql://a:***@c/d" in err


PASSWORD = "PlantedPassw0rd"


def test_bad_database_urls_never_show_their_password(qmcp_exe, tmp_path):
    for url, says in (
        (
            f"mysql://admin:{PASSWORD}@db.example/runs",
            "unsupported database URL 'mysql://admin:***@db.example/runs'",
        ),
        (f"postgresql+asyncpg://admin:{PASSWORD}@127.0.0.1:1/runs", "error:"),
    ):
        for args in (["--db", url, "agents", "list"], ["--verbose", "--db", url, "agents", "list"]):
            result = subprocess.run(
                [qmcp_exe, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
            )
            assert result.returncode != 0
            assert says in result.stderr
            assert PASSWORD not in result.stdout + result.stderr


TEAM = """\
agents:
  - {name: writer, role: writer, config: {model: test}}
  - name: gated
    role: writer
    config: {model: test, capabilities: [human_in_loop], mixins: {human_in_loop: {when: after}}}
  - name: broken
    role: writer
    config: {model: test, capabilities: [tool_use], mixins: {tool_use: {tools: [no_such_tool]}}}
topologies:
  - {name: fine, type: pipeline, agents: {only: writer}}
  - {name: paused, type: pipeline, agents: {one: writer, two: gated}}
  - {name: failing, type: pipeline, agents: {one: writer, two: broken}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("given", ["--db", "QMCP_DATABASE_URL"])
def test_a_planted_password_never_appears_in_any_cli_output(qmcp_exe, db_url, tmp_path, given):
    if db_url.startswith("sqlite"):
        pytest.skip("passwords live in PostgreSQL URLs")
    url = db_url.replace("postgresql+asyncpg://postgres@", f"postgresql+asyncpg://postgres:{PASSWORD}@")
    assert PASSWORD in url  # the server trusts local connections: any password is accepted
    team = tmp_path / "team.yaml"
    team.write_text(TEAM)
    outputs: list[str] = []

    def qmcp(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [qmcp_exe, *(["--db", url] if given == "--db" else []), *args]
        environment = {**os.environ, "QMCP_LOG_LEVEL": "DEBUG"} | (
            {"QMCP_DATABASE_URL": url} if given != "--db" else {}
        )
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=environment
        )
        outputs.append(f"$ {' '.join(args)}\n{result.stdout}{result.stderr}")
        return result

    qmcp("apply", "-f", str(team))  # `broken` names a tool: stored untrusted
    refused = qmcp(
        "--model", "test", "agents", "topologies", "run", "failing", "--input-json", '{"prompt": "x"}'
    )
    assert refused.returncode == 2 and "trust agent broken" in refused.stderr
    qmcp("apply", "--trust", "-f", str(team))
    qmcp("--model", "test", "agents", "topologies", "run", "fine", "--input-json", '{"prompt": "x"}')
    failed = qmcp(
        "--verbose",
        "--model",
        "test",
        "agents",
        "topologies",
        "run",
        "failing",
        "--input-json",
        '{"prompt": "x"}',
    )
    assert failed.returncode == 1 and "resume it with: qmcp " in failed.stderr
    paused = qmcp(
        "--model", "test", "agents", "topologies", "run", "paused", "--input-json", '{"prompt": "x"}'
    )
    request = re.search(r"respond '?([^' ]+)'? approve", paused.stdout)
    assert request, paused.stdout
    execution = re.search(r"execution ([0-9a-f-]{36})", paused.stdout)
    assert execution
    qmcp("executions", "respond", request.group(1), "approve", "--no-resume")
    qmcp("executions", "cancel", execution.group(1))
    qmcp("--model", "test", "executions", "resume", execution.group(1))
    if given == "--db":  # commands that print no hint: once is enough
        for command in (
            ["agents", "show", "broken"],
            ["agents", "topologies", "show", "failing"],
            ["executions", "list"],
            ["trust", "agent", "broken"],
        ):
            qmcp(*command)
        qmcp("--format", "json", "executions", "show", execution.group(1))
    everything = "\n".join(outputs)
    assert PASSWORD not in everything
    if given == "--db":
        assert "--db 'postgresql+asyncpg://postgres:***@127.0.0.1:5432/" in everything
        assert "(password hidden: put the URL in QMCP_DATABASE_URL and leave out --db)" in everything
    else:
        assert "resume it with: qmcp executions resume" in everything and "--db" not in everything


def test_a_limit_past_what_the_database_takes_is_one_line(cli):
    cli.user_error(
        "executions", "list", "--limit", "99999999999999999999",
        says="limit must be between 0 and 1,000,000,000 (got 99999999999999999999)",
    )  # fmt: skip
