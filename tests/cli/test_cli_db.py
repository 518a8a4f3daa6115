"""`qmcp db upgrade` and `qmcp db current`, and what a command says when the database is behind."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from qmcp.agentframework.store import SCHEMA_HEAD


def test_db_current_and_upgrade(cli: Any):
    assert cli.json("db", "current")["revision"] is None
    assert not Path(cli.db).exists()  # asking made no file
    assert "behind: run qmcp --db" in cli.ok("db", "current").stdout
    upgraded = cli.json("db", "upgrade")
    assert (upgraded["from"], upgraded["to"]) == (None, SCHEMA_HEAD)
    assert "nothing to do" in cli.ok("db", "upgrade").stdout
    assert cli.json("db", "current") == {
        "database": upgraded["database"],
        "revision": SCHEMA_HEAD,
        "head": SCHEMA_HEAD,
    }
    assert "(up to date)" in cli.ok("db", "current").stdout


def test_without_upgrades_on_first_use_commands_name_qmcp_db_upgrade(
    cli: Any, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("QMCP_AUTO_MIGRATE", "0")
    cli.user_error("agents", "list", says="run `qmcp db upgrade`")
    with sqlite3.connect(cli.db) as conn:  # nothing written
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    cli.ok("db", "upgrade")
    cli.ok("agents", "list")


def test_db_upgrade_of_a_missing_directory_is_one_line(cli: Any, tmp_path: Path):
    cli.db = str(tmp_path / "nope" / "x.db")
    cli.user_error("db", "upgrade", says="does not exist")
