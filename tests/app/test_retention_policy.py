"""Retention in the application layer: durations, the `QMCP_RETENTION` grammar, and who may prune."""

from __future__ import annotations

from datetime import timedelta

import pytest

from qmcp.agentframework.errors import InvalidConfigError, PermissionDeniedError
from qmcp.agentframework.models import ExecutionStatus, Topology
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.store import Database
from qmcp.app import (
    Caller,
    CallerPolicy,
    Door,
    PruneRequest,
    RetentionPolicy,
    parse_duration,
    prune_executions,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("90m", 5400), ("12h", 43_200), ("30d", 2_592_000), ("2w", 1_209_600), (" 0S ", 0)],
)
def test_durations(text, seconds):
    assert parse_duration(text, "--older-than") == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "1.5h", "-1d", "30 days", "1y"])
def test_a_wrong_duration_is_one_line_naming_the_option_and_the_form(text):
    with pytest.raises(InvalidConfigError, match=r"^--older-than .* is not a duration: write a whole number"):
        parse_duration(text, "--older-than")


def test_a_duration_past_a_hundred_years_is_refused():
    with pytest.raises(InvalidConfigError, match="too long"):
        parse_duration("99999999w", "older_than")


def test_the_retention_grammar():
    assert RetentionPolicy.parse("") is None and RetentionPolicy.parse("  ") is None
    plain = RetentionPolicy.parse("30d")
    assert plain is not None and plain.interval == timedelta(hours=1)
    assert plain.request.filter().older_than == timedelta(days=30)
    assert plain.request.filter().statuses == {
        ExecutionStatus.COMPLETED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
    }
    assert plain.request.vacuum is False  # the schedule never rewrites the file unless asked
    full = RetentionPolicy.parse("7d:completed,interrupted:keep-last=100:topology=nightly:vacuum", "90m")
    assert full is not None and full.interval == timedelta(minutes=90) and full.request.vacuum is True
    chosen = full.request.filter()
    assert chosen.statuses == {ExecutionStatus.COMPLETED, ExecutionStatus.INTERRUPTED}
    assert (chosen.keep_last, chosen.topology) == (100, "nightly")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("30x", "'30x' is not a duration"),
        ("30d:running", "never deletes running"),
        ("30d:done", "unknown status 'done'"),
        ("30d:keep-last=many", "keep-last=many is not a whole number"),
        ("30d:keep=3", "'keep' is not a retention option"),
    ],
)
def test_a_wrong_retention_is_one_line_naming_the_setting_and_the_form(text, says):
    with pytest.raises(InvalidConfigError) as refused:
        RetentionPolicy.parse(text)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"QMCP_RETENTION={text!r}: ")
    assert says in message and "the form is AGE[:STATUS,...]" in message


def test_a_wrong_interval_is_refused():
    with pytest.raises(InvalidConfigError, match="QMCP_RETENTION_INTERVAL '0s' must be longer than 0s"):
        RetentionPolicy.parse("30d", "0s")
    with pytest.raises(InvalidConfigError, match="QMCP_RETENTION_INTERVAL 'hourly' is not a duration"):
        RetentionPolicy.parse("30d", "hourly")


def test_the_request_names_each_field_as_its_door_does():
    with pytest.raises(InvalidConfigError, match=r"needs --older-than AGE \(30d\) or --keep-last N"):
        PruneRequest().filter({"older_than": "--older-than", "keep_last": "--keep-last"})
    with pytest.raises(InvalidConfigError, match="needs older_than AGE"):
        PruneRequest().filter()


async def test_a_remote_caller_prunes_only_when_the_operator_allows_it(sqlite_url, agent):
    result = await LocalRunner(db_url=sqlite_url).run(
        Topology(name="one", topology_type="pipeline"), {"only": agent("solo", "writer")}, {"prompt": "x"}
    )
    request = PruneRequest(older_than="0s")
    async with Database(sqlite_url) as db:
        for door in (Door.HTTP, Door.CONSOLE, Door.MCP):
            with pytest.raises(PermissionDeniedError, match="qmcp serve --allow-remote-prune"):
                await prune_executions(
                    db, request, Caller.client(door, authenticated=True), policy=CallerPolicy()
                )
        assert (await db.get_execution(result.execution_id)).id == result.execution_id  # nothing deleted
        allowed = CallerPolicy(allow_remote_prune=True)
        dry = await prune_executions(
            db, PruneRequest(older_than="0s", dry_run=True), Caller.client(Door.HTTP), policy=allowed
        )
        assert dry.executions == 1 and "nothing was deleted (dry run)" in dry.summary
        done = await prune_executions(db, request, Caller.operator(Door.CLI))  # the operator always may
        assert done.executions == 1 and done.summary.startswith("deleted 1 execution(s), 1 step(s)")
        assert "after VACUUM" in done.summary and "reclaimed" in done.summary


def test_the_policy_reads_the_setting(monkeypatch):
    assert CallerPolicy.from_settings().allow_remote_prune is False
    monkeypatch.setenv("QMCP_ALLOW_REMOTE_PRUNE", "1")
    assert CallerPolicy.from_settings().allow_remote_prune is True
