"""A key is masked by its value wherever qmcp shows or keeps text, whatever its variable is named.

The agent reads its key from `LLM_CREDENTIAL` (a name that says nothing of a key), and its provider
answers 401 quoting that key: the CLI's output, the rows and the log records must not hold it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _key_echo import ODD_VARIABLE, key_echo, keyed_team, odd_key
from hypothesis import given, settings
from hypothesis import strategies as st

from qmcp.agentframework.models import AgentType, PipelineConfig, Topology, TopologyType
from qmcp.agentframework.runners import LocalRunner, RunConfig
from qmcp.redaction import MASK, MIN_SECRET_LENGTH, StreamMask, redact, register_secret


class _Records(logging.Handler):
    """Every record of the `qmcp` logger, as a host's handler would format it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {getattr(record, 'qmcp_fields', '')}")


@pytest.fixture
def records() -> Iterator[_Records]:
    handler, logger = _Records(), logging.getLogger("qmcp")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _stored_errors(db_file: Path) -> list[str]:
    with sqlite3.connect(db_file) as db:
        rows = db.execute(
            "SELECT error FROM executions UNION ALL SELECT error FROM execution_steps"
        ).fetchall()
    return [error for (error,) in rows if error]


def test_a_key_in_an_oddly_named_variable_never_reaches_cli_output_rows_or_logs(
    cli, db_file, tmp_path, monkeypatch, records
):
    key = odd_key()
    monkeypatch.setenv(ODD_VARIABLE, key)
    monkeypatch.setenv("QMCP_LOG_LEVEL", "DEBUG")
    with key_echo() as (base_url, seen):
        team = tmp_path / "team.yaml"
        team.write_text(yaml.safe_dump(keyed_team(base_url)))
        cli.ok("apply", "-f", str(team))
        cli.ok("trust", "agent", "keyed")
        result = cli("agents", "topologies", "run", "keyed", "--input-json", '{"prompt": "hi"}')
    assert seen and set(seen) == {key}  # the key was sent, and quoted back
    assert result.exit_code != 0 and "401" in result.stderr and MASK in result.stderr
    errors = _stored_errors(db_file)
    assert len(errors) == 2 and all("401" in error and MASK in error for error in errors), errors
    assert any("step.failed" in line for line in records.lines)
    everything = "\n".join([result.stdout, result.stderr, *errors, *records.lines])
    assert key not in everything


async def test_a_key_in_an_oddly_named_variable_never_reaches_a_run_result_rows_or_logs(
    tmp_path, monkeypatch, records
):
    key = odd_key()
    monkeypatch.setenv(ODD_VARIABLE, key)
    with key_echo() as (base_url, seen):
        agent = keyed_team(base_url)["agents"][0]  # type: ignore[index]
        agents = {"only": AgentType(name="keyed", config=agent["config"])}
        topology = Topology(
            name="keyed", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump()
        )
        runner = LocalRunner(
            config=RunConfig(log_level="DEBUG"), db_url=f"sqlite+aiosqlite:///{tmp_path}/r.db"
        )
        result = await runner.run(topology, agents, {"prompt": "p"})
    assert seen == [key] and str(result.status) == "failed" and MASK in (result.error or "")
    errors = await asyncio.to_thread(_stored_errors, tmp_path / "r.db")
    assert len(errors) == 2 and any("step.failed" in line for line in records.lines)
    assert key not in json.dumps([result.model_dump(mode="json"), errors, records.lines])


def test_registered_secrets_are_masked_by_value_longest_first_and_short_ones_are_not():
    secret = odd_key()
    longer = secret + "-and-more"
    assert redact(f"said {secret}") == f"said {secret}"  # not registered yet, not key-shaped
    register_secret(secret)
    register_secret(longer)
    assert redact(f"said {secret}, then {longer}.") == f"said {MASK}, then {MASK}."
    short = "x" * (MIN_SECRET_LENGTH - 1)
    register_secret(short)  # would mask ordinary words: ignored
    assert redact(f"a {short} b") == f"a {short} b"


def test_the_server_token_and_database_passwords_are_masked_by_value(monkeypatch):
    from qmcp.agentframework.store import Database
    from qmcp.server import ServerOptions, create_app

    token, password = odd_key(), odd_key()
    create_app(ServerOptions.from_settings(db_url="sqlite+aiosqlite:///:memory:", api_token=token))
    Database(f"postgresql+asyncpg://u:{password}@127.0.0.1:1/db")  # opening registers its password
    assert (
        redact(f"bad token {token}; password {password} refused")
        == f"bad token {MASK}; password {MASK} refused"
    )


_STREAM_SECRETS = ("cred0123456789abcdef", "open sesame 42", "an open sesame 42 door")  # one holds another


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [*_STREAM_SECRETS, " ", "\n", "x", "an ", "cred", "open ", "sesame", " door", "Bearer ", "sk-"]
        )
        | st.text(alphabet="abcdef0123456789 -'", max_size=20),
        max_size=30,
    ).map("".join),
    st.lists(st.integers(1, 12), min_size=1, max_size=40),
)
def test_a_streamed_text_is_masked_as_the_whole_text_however_it_is_cut(text, sizes):
    """`StreamMask`: the pieces it lets through join into `redact(whole text)`, wherever the cuts fall."""
    for secret in _STREAM_SECRETS:
        register_secret(secret)
    mask, shown, at = StreamMask(), [], 0
    for size in itertools.cycle(sizes):
        if at >= len(text):
            break
        shown.append(mask.feed(text[at : at + size]))
        at += size
    shown.append(mask.flush())
    assert "".join(shown) == redact(text)
    assert not any(secret in piece for piece in shown for secret in _STREAM_SECRETS)
