"""Schema migrations (Alembic): the revision a database is at, and upgrading it, on SQLite and PostgreSQL.

The scripts live in `store/migrations` (shipped in the package). A database records its revision in
its own `qmcp_schema_version` table (not `alembic_version`: a program's own Alembic history can
share the database). The first `Database` on a URL in a process reads that one row; only when it is
behind does Alembic load, and then one process upgrades at a time, in one transaction: SQLite's
write lock (`BEGIN IMMEDIATE`), PostgreSQL's advisory lock. A failed migration leaves nothing
half-written; a process that waited finds the database upgraded and does nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.exc import OperationalError

from ...redaction import mask_url
from ..errors import InvalidConfigError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "HEAD",
    "REVISIONS",
    "VERSION_TABLE",
    "PreBaselineSchemaError",
    "SchemaBehindError",
    "current_revision",
    "downgrade",
    "read_revision",
    "upgrade",
]

VERSION_TABLE = "qmcp_schema_version"
REVISIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008")
"""Every revision in order, the last the head: known without loading Alembic (pinned by a test)."""
HEAD = REVISIONS[-1]
SCRIPTS = "qmcp.agentframework.store:migrations"
_PG_LOCK = 7170000  # the advisory lock the schema is changed under


class PreBaselineSchemaError(InvalidConfigError):
    """Tables made by a qmcp older than the baseline: they lack columns no migration adds."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(
            f"the database was made by a qmcp older than its first migration (missing {', '.join(self.missing[:3])}); "
            "use a new database file or URL"
        )


class SchemaBehindError(InvalidConfigError):
    """The database is behind this qmcp's schema and upgrading on first use is off."""


def read_revision(conn: Connection) -> str | None:
    """The revision the database is at; None when it has no version table (new, or made before migrations)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(read_revision)


def check_known(revision: str | None, url: str) -> None:
    """Refuse a database made by a newer qmcp: this one cannot know what its tables mean."""
    if revision is not None and revision not in REVISIONS:
        raise InvalidConfigError(
            f"the database {mask_url(url)} is at schema revision {revision!r}, made by a newer qmcp "
            f"(this one knows up to {HEAD!r}); upgrade qmcp"
        )


def behind(revision: str | None, url: str) -> SchemaBehindError:
    """The one line for a database that needs `qmcp db upgrade` when upgrading on first use is off."""
    return SchemaBehindError(
        f"the database {mask_url(url)} is at schema revision {revision or 'none'}, this qmcp needs {HEAD}: "
        "run `qmcp db upgrade` (QMCP_AUTO_MIGRATE=0 keeps qmcp from upgrading it on first use)"
    )


def _alembic(conn: Connection, revision: str, *, down: bool = False) -> None:
    """Run Alembic's upgrade (or downgrade) to `revision` on `conn`, inside its transaction.

    On SQLite, foreign keys are off for the migrations' connection (a table is changed by copying
    it, and dropping the original would trip them) and are checked before the transaction commits.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPTS)
    config.attributes["connection"] = conn
    (command.downgrade if down else command.upgrade)(config, revision)
    if conn.dialect.name == "sqlite":
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise InvalidConfigError(f"the migration left rows whose references are gone: {broken[:3]}")


def _empty(conn: Connection) -> bool:
    from ..models import metadata

    return not set(inspect(conn).get_table_names()) & set(metadata.tables)


def _create_at_head(conn: Connection) -> None:
    from ..models import metadata

    metadata.create_all(conn)
    conn.execute(
        text(
            f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
        )
    )
    conn.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:head)"), {"head": HEAD})


def _immediate_transactions(engine: AsyncEngine) -> None:
    """SQLite: begin with the write lock, so DDL and the version row commit (or roll back) together
    and a second process waits (busy timeout) instead of creating the same tables."""

    @event.listens_for(engine.sync_engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=OFF")  # outside any transaction: see `_alembic`
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


async def upgrade(
    url: str, revision: str = "head", engine: AsyncEngine | None = None, *, create_new: bool = True
) -> tuple[str | None, str | None]:
    """Upgrade the database at `url` to `revision`; returns its revision before and after.

    A database without any of qmcp's tables is made at the head directly (`create_new`): the models'
    tables and the version row, without loading Alembic (a quarter of a second), which a test keeps
    equal to what running every migration makes. `engine` is used only for an in-memory SQLite
    database (a new engine would be another database); elsewhere the upgrade runs on an engine of
    its own, closed after.
    """
    return await _change(url, revision, engine, create_new=create_new, down=False)


async def downgrade(url: str, revision: str) -> tuple[str | None, str | None]:
    """Take the database at `url` back to `revision` (for an older qmcp); its revision before and after."""
    return await _change(url, revision, None, create_new=False, down=True)


async def _change(
    url: str, revision: str, engine: AsyncEngine | None, *, create_new: bool, down: bool
) -> tuple[str | None, str | None]:
    from ._engine import create_engine

    own = engine is None or not _in_memory(engine)
    migrating = create_engine(url) if own else engine
    assert migrating is not None
    if own and migrating.dialect.name == "sqlite":
        _immediate_transactions(migrating)
    try:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with migrating.begin() as conn:
                    if migrating.dialect.name == "postgresql":
                        await conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_LOCK})"))
                    before = await conn.run_sync(read_revision)
                    check_known(before, url)
                    if before == revision or (revision == "head" and before == HEAD):
                        pass
                    elif (
                        not down and create_new and revision in ("head", HEAD) and await conn.run_sync(_empty)
                    ):
                        await conn.run_sync(_create_at_head)
                    else:
                        await conn.run_sync(lambda sync: _alembic(sync, revision, down=down))
                    after = await conn.run_sync(read_revision)
                return before, after
            except OperationalError as error:
                # SQLite answers "database is locked" at once, without its busy timeout, to break a
                # deadlock between processes opening one file together: the transaction (which reads
                # the revision first) is simply tried again.
                if migrating.dialect.name != "sqlite" or "locked" not in str(error) or attempt >= 5:
                    raise
                await asyncio.sleep(0.05 * attempt)
    finally:
        if own:
            await migrating.dispose()


def _in_memory(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")
