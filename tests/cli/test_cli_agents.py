"""`qmcp agents ...` through typer's test runner: create, list, show, delete, mixins, and the errors."""

from __future__ import annotations

import qmcp.cli


def test_public_surface():
    assert qmcp.cli.__all__ == ["app", "main"]


def test_create_list_show_delete(cli):
    out = cli.ok("agents", "create", "planner", "planner", "--description", "Plans", "--model", "test").stdout
    assert "created agent planner" in out
    cli.ok(
        "agents", "create", "critic", "critic", "--system-prompt", "Be harsh.", "--temperature", "0.2",
        "--max-tokens", "64",
    )  # fmt: skip

    listed = cli.json("agents", "list")
    assert [a["name"] for a in listed] == ["critic", "planner"]
    assert cli.json("agents", "list", "--role", "planner")[0]["description"] == "Plans"
    assert cli.json("agents", "list", "--role", "writer") == []
    assert "planner" in cli.ok("agents", "list").stdout

    shown = cli.json("agents", "show", "critic")
    assert shown["role"] == "critic"
    assert shown["config"]["system_prompt"] == "Be harsh."
    assert shown["config"]["temperature"] == 0.2
    assert shown["config"]["max_tokens"] == 64
    assert "created_at" in shown
    assert "Be harsh." in cli.ok("agents", "show", "critic").stdout

    assert cli.json("agents", "delete", "critic") == {"deleted": "critic"}
    assert [a["name"] for a in cli.json("agents", "list")] == ["planner"]


def test_per_command_format_wins(cli):
    cli.ok("agents", "create", "solo", "writer")
    assert cli.json("agents", "list")[0]["name"] == "solo"
    result = cli.ok("agents", "list", "--format", "json")
    assert result.stdout.lstrip().startswith("[")


def test_user_mistakes_are_one_line(cli):
    cli.user_error(
        "agents", "create", "bad", "wizard", says="unknown role 'wizard'; choose one of: generalist"
    )
    cli.user_error("agents", "create", "Bad", "planner", says="invalid agent name 'Bad'")
    cli.user_error("agents", "create", "hot", "planner", "--temperature", "9", says="temperature")
    cli.user_error("agents", "list", "--role", "wizard", says="unknown role 'wizard'")
    cli.user_error("agents", "show", "ghost", says="agent 'ghost' not found")
    cli.user_error("agents", "delete", "ghost", says="agent 'ghost' not found")
    cli.ok("agents", "create", "twice", "writer")
    cli.user_error("agents", "create", "twice", "writer", says="already exists")


def test_verbose_shows_the_traceback(cli):
    result = cli("--verbose", "agents", "show", "ghost")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: agent 'ghost' not found; list them with: qmcp agents list"
    )


def test_agent_in_a_topology_cannot_be_deleted(cli):
    cli.ok("agents", "create", "stage", "writer")
    cli.ok("agents", "topologies", "create", "line", "pipeline", "--agent", "only=stage")
    cli.user_error("agents", "delete", "stage", says="used by line.only; delete those topologies first")
    cli.ok("agents", "topologies", "delete", "line")
    cli.user_error("agents", "topologies", "show", "line", says="topology 'line' not found")
    cli.ok("agents", "delete", "stage")


def test_a_topology_that_ran_is_deleted_only_with_force(cli):
    cli.ok("agents", "create", "stage", "writer", "--model", "test")
    cli.ok("agents", "topologies", "create", "line", "pipeline", "--agent", "only=stage")
    run = cli.json("agents", "topologies", "run", "line", "--input-json", '{"prompt": "hi"}')
    cli.user_error("agents", "topologies", "delete", "line", says="referenced by 1 execution(s)")
    cli.user_error("agents", "topologies", "delete", "ghost", "line", says="topology 'ghost' not found")
    cli.ok("agents", "topologies", "delete", "line", "--force")
    shown = cli.json("executions", "show", run["execution_id"])
    assert shown["topology_name"] == "line" and shown["status"] == "completed"


def test_mixins(cli):
    rows = cli.json("agents", "mixins")
    assert rows and all(row["name"] for row in rows)
    assert set(rows[0]) == {"name", "version", "description", "dependencies"}
    table = cli.ok("agents", "mixins").stdout
    assert rows[0]["name"] in table


def test_usage_errors_exit_2(cli):
    assert cli("agents", "create", "only-a-name").exit_code == 2
    assert cli("--format", "yaml", "agents", "list").exit_code == 2
    assert cli("agents", "nonsense").exit_code == 2
