"""Database engines: SQLite (WAL, busy timeout) by default, PostgreSQL through asyncpg.

Tables are created on first use of a URL in a process.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel

from ..errors import InvalidConfigError

__all__ = ["create_engine", "ensure_schema", "is_sqlite"]

_BUSY_TIMEOUT_MS = 30_000
_schema_ready: set[str] = set()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")  # first: the mode switch may wait for a lock
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url`; raises `InvalidConfigError` for a URL that is not async SQLite/PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidConfigError(
            f"invalid database URL {url!r}: use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"
        ) from None
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise InvalidConfigError(
            f"unsupported database URL {url!r}: use sqlite+aiosqlite:///PATH or postgresql+asyncpg://..."
        )
    if parsed.drivername == "sqlite+aiosqlite":
        engine = create_async_engine(parsed, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(parsed, pool_size=10, max_overflow=20, pool_pre_ping=True)


async def ensure_schema(engine: AsyncEngine) -> None:
    """Create the tables once per URL per process; safe when several processes race to do it."""
    key = engine.url.render_as_string(hide_password=False)
    if key in _schema_ready:
        return
    from .. import models  # noqa: F401  (registers the tables on SQLModel.metadata)

    for attempt in range(3):
        try:
            async with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    # CREATE TYPE/TABLE race between processes: create the schema one at a time.
                    await conn.execute(text("SELECT pg_advisory_xact_lock(7170000)"))
                await conn.run_sync(SQLModel.metadata.create_all)
                missing = await conn.run_sync(_missing_columns)
            break
        except DBAPIError as error:
            # Another process created a table between our check and our CREATE: check again.
            if ("already exists" not in str(error) and "duplicate key" not in str(error)) or attempt == 2:
                raise
    if missing:
        raise InvalidConfigError(
            f"the database at {engine.url.render_as_string(hide_password=True)} was made by an older qmcp "
            f"(missing {', '.join(missing[:3])}); use a new database file or URL (there are no migrations "
            "before the first release)"
        )
    _schema_ready.add(key)


def _missing_columns(conn: Any) -> list[str]:
    """Columns this qmcp needs that existing tables lack (tables created by an older version)."""
    inspector = inspect(conn)
    missing = []
    for table in SQLModel.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing += [f"{table.name}.{column.name}" for column in table.columns if column.name not in present]
    return missing
