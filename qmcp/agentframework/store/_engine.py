"""Database engines: SQLite (WAL, busy timeout) by default, PostgreSQL through asyncpg.

The schema is brought to this qmcp's revision on first use of a URL in a process (again if its SQLite file was deleted and
made anew). A URL that cannot work (no such directory, not a database, a read-only file, no server
answering) is one `DatabaseUnavailableError` naming it, password masked. Databases open at the same time on one
URL in one event loop share one engine (one connection pool): 100 concurrent runs must not hold
100 PostgreSQL connections. The last one to close disposes its connections; the engine is kept
(for a few URLs per process) and reused by the next Database on its URL, in any event loop,
because compiling its statements again cost every run about 10 ms.

What is kept belongs to an `EngineCache`: the process's is `engine_cache()`, made on first use, and
`close_engines()` closes everything it keeps idle — engines, the SQLite files held open for their WAL,
the synchronous engines of short writes — for a host that wants its file handles back (tests, a
server shutting down, a program done with qmcp). Engines of open `Database`s close with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydantic_core
from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ...config import settings
from ...redaction import mask_url, register_secret
from ..errors import DatabaseUnavailableError, InvalidConfigError, StorageError
from ..extras import require
from ..flowcall import WRITER_PRAGMAS, json_text
from ._migrate import HEAD, behind, check_known, current_revision, read_revision, upgrade
from ._storable import store_nul_safely

__all__ = [
    "CHECKPOINT_EVERY",
    "JSON_CODEC",
    "SCHEMA_READY_VARIABLE",
    "Checkpointer",
    "EngineCache",
    "acquire_engine",
    "as_storage_error",
    "checkpointer",
    "close_engines",
    "create_engine",
    "engine_cache",
    "ensure_schema",
    "inline_engine",
    "is_locked",
    "is_sqlite",
    "migrate",
    "release_engine",
    "schema_ready_variables",
    "schema_revision",
    "storage_errors",
]

_log = logging.getLogger("qmcp")

_BUSY_TIMEOUT_MS = 30_000
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6  # primary result codes: another connection holds the lock
_IDLE_URLS = 8  # URLs whose idle engines (and SQLite holders) are kept, least recently used out
_IDLE_PER_URL = 4  # idle engines kept per URL (one per event loop that used it at once)


def _json_value(text: str | bytes) -> Any:
    try:
        return pydantic_core.from_json(text)
    except ValueError:  # escaped lone surrogates (rows written by `json`), nesting beyond 200 levels
        return json.loads(text)


JSON_CODEC: dict[str, Any] = {"json_serializer": json_text, "json_deserializer": _json_value}
"""How JSON columns are written and read: pydantic-core's encoder is 3–7× faster than `json`'s,
and every step row, agent snapshot and run output goes through it; `json` takes what it refuses."""


def is_locked(error: BaseException) -> bool:
    """Whether a SQLite error (or SQLAlchemy's wrapping of one) is another connection's lock."""
    code = getattr(getattr(error, "orig", error), "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def as_storage_error(error: BaseException, url: str) -> StorageError | None:
    """`error` as one line naming the database, if it is the database failing (disk full, file-size
    limit, I/O error, lost connection); None for anything else."""
    if isinstance(error, StorageError):
        return error
    cause = getattr(error, "orig", None) or error
    if (
        not isinstance(error, DBAPIError | sqlite3.Error)
        and type(cause).__module__.split(".")[0] != "asyncpg"
    ):
        return None
    cause = getattr(cause, "__cause__", None) or cause
    text_ = " ".join(str(cause).split()).split(" [SQL:")[0] or type(cause).__name__
    return StorageError(f"the database {mask_url(url)} failed: {text_}")


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn the database failing inside the block into one `StorageError` line naming it."""
    try:
        yield
    except Exception as error:
        converted = as_storage_error(error, url)
        if converted is None or converted is error:
            raise
        raise converted from None


def _sqlite_file(engine: AsyncEngine) -> str | None:
    path = engine.url.database
    if engine.dialect.name != "sqlite" or path in (None, "", ":memory:") or path.startswith("file:"):
        return None
    return path


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The path of `engine`'s SQLite file; None for PostgreSQL or an in-memory database."""
    return _sqlite_file(engine)


def file_identity(path: str | None) -> tuple[int, int] | None:
    """The (device, inode) of the file at `path`, None if there is none: a file removed or replaced
    under an open connection changes it."""
    return _identity(path)


def _identity(path: str | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")  # first: the mode switch may wait for a lock
    _switch_to_wal(cursor)
    for pragma in WRITER_PRAGMAS:
        cursor.execute(pragma)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """Put a rollback-journal file in WAL mode (once: the mode is stored in the file).

    The switch takes an exclusive lock. When connections opening the same new file at once each
    hold a shared lock while asking for it, SQLite breaks the deadlock by answering SQLITE_BUSY at
    once, without the busy timeout; the one that got it switches the file, so the others look
    again after a short pause (seen with four concurrent first opens under load).
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        cursor.execute("PRAGMA journal_mode")
        if cursor.fetchone()[0] == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            name = getattr(error, "sqlite_errorname", "")
            if name == "SQLITE_READONLY":  # a read-only file keeps its mode: readers still read
                return
            if name != "SQLITE_BUSY" or time.monotonic() >= deadline:
                raise
        time.sleep(pause)  # the driver's thread, not the event loop
        pause = min(pause * 2, 0.2)


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url`; raises `InvalidConfigError` for a URL that is not async SQLite/PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidConfigError(
            f"invalid database URL {mask_url(url)!r}: use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"
        ) from None
    register_secret(parsed.password if isinstance(parsed.password, str) else None)  # masked where it shows
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise InvalidConfigError(
            f"unsupported database URL {mask_url(url)!r}: use sqlite+aiosqlite:///PATH or postgresql+asyncpg://..."
        )
    if parsed.drivername == "sqlite+aiosqlite":
        engine = create_async_engine(parsed, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000}, **JSON_CODEC)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    require("asyncpg", extra="postgres", feature="PostgreSQL", load=False)
    current = settings()
    # qmcp never keeps a transaction open while it waits on anything but its own statements: a session
    # idle in one for longer than a lease is a stalled process (paused, SIGSTOPped) whose lease has
    # lapsed, and the row locks it holds would block the takeover forever. The server ends it.
    idle_ms = max(1000, round(current.lease_seconds * 1000))
    return store_nul_safely(
        create_async_engine(
            parsed,
            pool_size=current.db_pool_size,
            max_overflow=current.db_max_overflow,
            pool_pre_ping=True,
            connect_args={"server_settings": {"idle_in_transaction_session_timeout": str(idle_ms)}},
            **JSON_CODEC,
        )
    )


CHECKPOINT_EVERY = 64
"""Step commits between two checkpoints requested of a SQLite file's `Checkpointer` (about 400 WAL pages)."""


class Checkpointer:
    """Copies a SQLite file's WAL back into the file from a thread of its own.

    SQLite checkpoints when a commit finds the WAL over its threshold (`WAL_CHECKPOINT_PAGES`), in
    that commit; with `synchronous=NORMAL` the checkpoint waits for two fsyncs of megabytes (the WAL,
    then the file): 5–9 ms here, paid by one step in about 200 (0.03–0.045 ms a step of a pipeline).
    The step writer asks this thread for a passive checkpoint every `CHECKPOINT_EVERY` commits, and
    when it closes: a passive checkpoint takes no lock a writer needs, so steps go on committing
    while it waits for the disk. The first write after a checkpoint that copied the whole WAL starts
    the WAL over; in a run of steps that never wait, the commit that crosses the threshold finds
    most of the WAL copied and flushed already (it still starts the WAL over, so the WAL stays the
    size it was). Durability is
    unchanged: a commit is in the WAL before it returns, as before; a checkpoint only moves
    committed pages into the file.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._pending: Future[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qmcp-checkpoint")
        self._writers: list[sqlite3.Connection] = []
        self._closed = False
        self._lock = threading.Lock()  # runs in other threads' event loops may share the file

    def take_writer(self) -> sqlite3.Connection | None:
        """A step writer's connection to this file that an earlier run gave back (`keep_writer`), if
        any: a new connection costs a run about 0.5 ms (opening, and parsing the schema again)."""
        with self._lock:
            return self._writers.pop() if self._writers else None

    def keep_writer(self, conn: sqlite3.Connection) -> None:
        """Keep a step writer's connection for the next run on this file, or close it: when it is in
        a transaction, when this checkpointer is closed (its file replaced, `close_engines()`), or
        when enough are kept. A kept connection holds no lock, so checkpoints go on."""
        with self._lock:
            if not (self._closed or conn.in_transaction or len(self._writers) >= _IDLE_PER_URL):
                self._writers.append(conn)
                return
        conn.close()

    def request(self) -> None:
        """Checkpoint soon, unless a checkpoint is under way already or this checkpointer was closed
        (its file replaced, or `close_engines()`: the commits then checkpoint as SQLite does)."""
        if self._pending is None or self._pending.done():
            try:
                self._pending = self._executor.submit(self._checkpoint)
            except RuntimeError:  # closed
                self._pending = None

    def wait(self) -> None:
        """Return when the checkpoint under way, if any, is over."""
        if self._pending is not None:
            self._pending.result()

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, check_same_thread=False)
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (
            sqlite3.Error
        ) as error:  # the file went away or failed: its next commit checkpoints, or says so
            _log.debug("checkpoint of %s failed: %s", self._path, error)
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Wait for the checkpoint under way, if any, and close the file and the kept writers."""
        with self._lock:
            self._closed = True
            writers, self._writers = self._writers, []
        for conn in writers:
            conn.close()
        self._executor.submit(self._close)
        self._executor.shutdown(wait=True)


class EngineCache:
    """The engines a process keeps between `Database`s, and the files they hold open; `close()` releases them."""

    def __init__(self) -> None:
        self.schema_ready: dict[str, tuple[int, int] | None] = {}  # URL -> identity of its SQLite file then
        self.in_use: dict[tuple[str, int], list[Any]] = {}  # (url, event loop) -> [engine, users]
        self.idle: OrderedDict[str, list[AsyncEngine]] = OrderedDict()
        self.wal_holders: dict[str, sqlite3.Connection] = {}
        self.inline_engines: dict[str, Engine] = {}
        self.checkpointers: dict[str, Checkpointer] = {}
        self.schema_locks: dict[tuple[str, int], asyncio.Lock] = {}

    def acquire(self, url: str) -> AsyncEngine:
        """The engine for `url` in this event loop: the one in use, an idle one, or a new one."""
        try:
            key = (url, id(asyncio.get_running_loop()))
        except RuntimeError:  # no loop yet: nothing to share with
            return create_engine(url)
        entry = self.in_use.get(key)
        if entry is None:
            idle = self.idle.get(url)
            entry = self.in_use[key] = [idle.pop() if idle else create_engine(url), 0]
        entry[1] += 1
        engine: AsyncEngine = entry[0]
        return engine

    async def release(self, url: str, engine: AsyncEngine) -> None:
        """Drop one user of `engine`; the last one closes its connections and keeps it idle."""
        for key, entry in list(self.in_use.items()):
            if entry[0] is engine:
                entry[1] -= 1
                if entry[1] > 0:
                    return
                del self.in_use[key]
                break
        self._hold_wal(url, engine)
        await engine.dispose()
        engines = self.idle.setdefault(url, [])
        if len(engines) < _IDLE_PER_URL:
            engines.append(engine)
        self.idle.move_to_end(url)
        while len(self.idle) > _IDLE_URLS:
            evicted, _ = self.idle.popitem(last=False)
            self._close_files(evicted)

    def inline(self, url: str, engine: AsyncEngine) -> Engine | None:
        """A synchronous engine on the SQLite file of `engine`, for short writes made in the event
        loop's own thread: through aiosqlite every statement, and the commit, is a round trip to its
        thread (about 0.3 ms each here). It never waits for a lock (timeout 0): a locked file is the
        caller's cue to write through `engine`, which waits. None for PostgreSQL and in-memory SQLite."""
        path = engine.url.database
        if engine.dialect.name != "sqlite" or path in (None, "", ":memory:"):
            return None
        inline = self.inline_engines.get(url)
        if inline is None:
            inline = self.inline_engines[url] = create_sync_engine(
                engine.url.set(drivername="sqlite"),
                connect_args={
                    "timeout": 0,
                    "check_same_thread": False,
                },  # pooled, used by one thread at a time
                **JSON_CODEC,
            )
            event.listen(inline, "connect", _inline_pragmas)
        return inline

    def checkpointer(self, url: str, engine: AsyncEngine) -> Checkpointer | None:
        """The `Checkpointer` of `engine`'s SQLite file (one per file in the process); None for
        PostgreSQL and in-memory SQLite."""
        path = _sqlite_file(engine)
        if path is None:
            return None
        checkpointer = self.checkpointers.get(url)
        if checkpointer is None:
            checkpointer = self.checkpointers[url] = Checkpointer(path)
        return checkpointer

    def _hold_wal(self, url: str, engine: AsyncEngine) -> None:
        """Keep a SQLite file open while its engine is idle, so that closing the pool is not closing
        the file's last connection: that one checkpoints the whole WAL (5 ms after a 200-step run).
        The holder has read the file once, so SQLite counts it, and holds no transaction, so WAL
        checkpoints go on as usual."""
        path = engine.url.database
        if engine.dialect.name != "sqlite" or path in (None, "", ":memory:") or url in self.wal_holders:
            return
        try:
            holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:  # no such directory: a refused open is being given back
            return
        try:
            holder.execute("SELECT count(*) FROM sqlite_master").fetchall()
        except sqlite3.Error:  # not a database, or unreadable: nothing worth holding open
            holder.close()
            return
        self.wal_holders[url] = holder

    def _close_files(self, url: str) -> None:
        holder = self.wal_holders.pop(url, None)
        if holder is not None:
            holder.close()
        inline = self.inline_engines.pop(url, None)
        if inline is not None:
            inline.dispose()
        checkpointer = self.checkpointers.pop(url, None)
        if checkpointer is not None:
            checkpointer.close()

    def forget_file(self, url: str) -> None:
        """The SQLite file of `url` was replaced: close what still holds the old one open."""
        holder = self.wal_holders.pop(url, None)
        if holder is not None:
            holder.close()
        checkpointer = self.checkpointers.pop(url, None)
        if checkpointer is not None:
            checkpointer.close()
        inline = self.inline_engines.get(url)
        if inline is not None:
            inline.dispose()  # its next connections open the new file

    def close(self) -> None:
        """Close every idle engine and every file kept open for one; the next `Database` opens anew.

        Engines in use by open `Database`s stay theirs (they close them when they exit); their
        SQLite files stay held until those exit too. Idle engines have no connections (they were
        disposed when their last `Database` closed): dropping them frees their compiled statements.
        """
        busy = {url for url, _loop in self.in_use}
        for url in list(self.idle):
            del self.idle[url]
        for url in {*self.wal_holders, *self.inline_engines, *self.checkpointers}:
            if url not in busy:
                self._close_files(url)
        self.schema_ready.clear()  # checked again (cheaply) by the next Database on each URL
        self.schema_locks.clear()


_cache: EngineCache | None = None


def engine_cache() -> EngineCache:
    """The process's `EngineCache`, made on first use."""
    global _cache
    if _cache is None:
        _cache = EngineCache()
    return _cache


def close_engines() -> None:
    """Release the engines and SQLite files qmcp keeps open between runs (`engine_cache().close()`)."""
    if _cache is not None:
        _cache.close()


def acquire_engine(url: str) -> AsyncEngine:
    return engine_cache().acquire(url)


async def release_engine(url: str, engine: AsyncEngine) -> None:
    await engine_cache().release(url, engine)


def inline_engine(url: str, engine: AsyncEngine) -> Engine | None:
    return engine_cache().inline(url, engine)


def checkpointer(url: str, engine: AsyncEngine) -> Checkpointer | None:
    return engine_cache().checkpointer(url, engine)


def _inline_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The async engine has already put the file in WAL mode (persistent); switching needs a lock.
    cursor = dbapi_connection.cursor()
    for pragma in WRITER_PRAGMAS:
        cursor.execute(pragma)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def ensure_schema(engine: AsyncEngine, *, writable: bool = True) -> None:
    """Bring the database to this qmcp's schema once per URL per process (see `_migrate.py`).

    A database at the head revision costs one query; `writable` (a caller that will write) adds a
    write that changes nothing, so a read-only SQLite file is refused here. A reader's open writes
    nothing, and is not remembered as that check. One behind (new, made before migrations, or
    by an older qmcp) is upgraded, unless `QMCP_AUTO_MIGRATE=0`: then it is refused with one line
    naming `qmcp db upgrade`. A SQLite file deleted and made anew since is a new database: it is
    checked again, and connections kept open on the deleted file are closed. Within a process, the
    first runs on a new URL check it one at a time.
    """
    cache = engine_cache()
    key = engine.url.render_as_string(hide_password=False)
    if key in cache.schema_ready and _sqlite_file(engine) is None:
        return
    lock = cache.schema_locks.setdefault((key, id(asyncio.get_running_loop())), asyncio.Lock())
    async with lock:
        await _ensure_schema(engine, cache, writable)


async def _ensure_schema(engine: AsyncEngine, cache: EngineCache, writable: bool) -> None:
    key = engine.url.render_as_string(hide_password=False)
    path = _sqlite_file(engine)
    identity = _identity(path)
    if key not in cache.schema_ready and os.environ.get(SCHEMA_READY_VARIABLE) == _schema_mark(key, identity):
        cache.schema_ready[key] = identity  # the process that started this one checked it
        return
    if key in cache.schema_ready:
        if path is None or (identity is not None and cache.schema_ready[key] == identity):
            return
        cache.forget_file(key)
    _check_directory(path, key)
    try:
        async with engine.begin() as conn:
            revision = await conn.run_sync(read_revision)
            if (
                writable and revision == HEAD and path is not None
            ):  # a write that changes nothing: a read-only file fails here, not mid-run
                await conn.exec_driver_sql("DELETE FROM executions WHERE 0")
        if revision != HEAD:
            check_known(revision, key)
            if not settings().auto_migrate:
                raise behind(revision, key)
            await upgrade(key, engine=engine)
    except (DBAPIError, OSError) as error:  # OSError: the server refused or is unreachable
        raise _unavailable(key, error) from None
    if writable or path is None:
        cache.schema_ready[key] = _identity(path)


SCHEMA_READY_VARIABLE = "QMCP_SCHEMA_READY"
"""What a process passes to the processes it starts on the database it checked (a Metaflow flow's
tasks): they skip the check, a transaction with a write that each of them would otherwise take."""


def schema_ready_variables(engine: AsyncEngine) -> dict[str, str]:
    """`{SCHEMA_READY_VARIABLE: mark}` for the environment of a child process, if this process has
    checked `engine`'s database for writing (else nothing).

    The mark names this qmcp's schema revision, a hash of the URL (not the URL: it may hold a
    password) and, for SQLite, the file's identity: a child on another database, another qmcp, or
    a file made anew since, checks as usual.
    """
    key = engine.url.render_as_string(hide_password=False)
    identity, checked = _identity(_sqlite_file(engine)), engine_cache().schema_ready
    if key not in checked or checked[key] != identity:
        return {}
    return {SCHEMA_READY_VARIABLE: _schema_mark(key, identity)}


def _schema_mark(key: str, identity: tuple[int, int] | None) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{HEAD}:{digest}" + ("" if identity is None else f":{identity[0]}.{identity[1]}")


def _check_directory(path: str | None, url: str) -> None:
    if path is not None and not Path(path).parent.is_dir():
        raise DatabaseUnavailableError(
            f"cannot open the database {mask_url(url)}: the directory {Path(path).parent} does not exist"
        )


def _no_file(path: str | None) -> bool:
    return path is not None and not Path(path).exists()


async def migrate(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database at `url` to `revision` (`qmcp db upgrade`); its revision before and after."""
    engine = create_engine(url)
    try:
        _check_directory(_sqlite_file(engine), url)
        try:
            return await upgrade(url, revision, engine=engine)
        except (DBAPIError, OSError) as error:
            raise _unavailable(url, error) from None
    finally:
        await engine.dispose()


async def schema_revision(url: str) -> str | None:
    """The schema revision of the database at `url` (`qmcp db current`); None before its first upgrade."""
    engine = create_engine(url)
    try:
        path = _sqlite_file(engine)
        _check_directory(path, url)
        if _no_file(path):
            return None  # asking makes no file
        try:
            return await current_revision(engine)
        except (DBAPIError, OSError) as error:
            raise _unavailable(url, error) from None
    finally:
        await engine.dispose()


def _unavailable(url: str, error: BaseException) -> DatabaseUnavailableError:
    """One line saying why the database at `url` cannot be used."""
    cause = getattr(error, "orig", error)
    cause = getattr(cause, "__cause__", None) or cause
    text_ = " ".join(str(cause).split()) or type(cause).__name__
    name = getattr(cause, "sqlite_errorname", "")
    reason = {
        "SQLITE_NOTADB": "the file is not a SQLite database",
        "SQLITE_READONLY": "the file is read-only",
        "SQLITE_CANTOPEN": "the file cannot be opened (check the path and its permissions)",
    }.get(name)
    if reason is None and isinstance(cause, OSError | ConnectionError):
        reason = f"no database server answers there ({text_})"
    return DatabaseUnavailableError(f"cannot open the database {mask_url(url)}: {reason or text_}")
