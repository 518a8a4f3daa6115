"""`Database`: one engine, the step store, and the record queries the runners, CLI and server share."""

from __future__ import annotations

import asyncio
import functools
import hmac
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Self, TypeVar

from sqlalchemy import (
    ColumnElement,
    Executable,
    String,
    and_,
    cast,
    delete,
    func,
    insert,
    not_,
    or_,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session, defer
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ...config import settings
from ..errors import ConflictError, ExpiredError, InvalidConfigError, NotFoundError, PermissionDeniedError
from ..models import (
    NUL,
    AgentRole,
    AgentType,
    Execution,
    ExecutionStatus,
    ExecutionStep,
    HumanRequest,
    HumanRequestStatus,
    HumanRequestType,
    HumanResponse,
    StepStatus,
    StepUsage,
    ToolInvocation,
    Topology,
    TopologyMembership,
    TrustRecord,
    Usage,
    check_id,
    check_json,
    gate_execution,
    gate_id_forms,
    gate_key,
    gate_request_id,
    nul_message,
    table_of,
    utcnow,
)
from ._engine import (
    JSON_CODEC,
    acquire_engine,
    checkpointer,
    ensure_schema,
    file_identity,
    inline_engine,
    is_locked,
    release_engine,
    sqlite_file,
)
from ._executions import ExecutionService, OwnerState, observed, owner_state
from ._reports import CostReport, cost_report
from ._retention import PruneFilter, PruneResult, prune_executions
from ._rows import row_inserter, row_reader
from ._steps import SqlStepStore
from ._usage import TOTALS, lock_execution, summed_totals, totals_of

__all__ = ["DEFINITION_CHANGED", "MAX_OFFSET", "Database", "check_page", "revoke_trust_of"]

T = TypeVar("T")

MAX_OFFSET = 1_000_000_000
"""The largest offset a list takes: beyond it SQLite's 64-bit integers overflow (a 500, not an answer)."""


_SLOW_INLINE_SECONDS = 0.002
"""An execution whose row took longer than this to write inline twice in a row is written from the
engine's thread from then on (`Database._write`)."""

SNAPSHOTS = ("topology_snapshot", "agents_snapshot", "teams_snapshot")
"""An execution's columns that hold its team as it ran: what runs and resumes read, not displays."""

_SLOW_ROWS_KEPT = 1024
"""How many such executions a `Database` remembers (a server's runs come and go)."""

_LOCKED_PAUSE_SECONDS, _LOCKED_PAUSE_MAX_SECONDS = 0.0005, 0.004
_LOCKED_WAIT_SECONDS = 0.1
"""How long a short write finding the SQLite file locked tries again inline, pausing between tries
(0.5 ms, doubling to 4 ms), before it goes to the engine, which waits on SQLite's busy handler."""


_TOPOLOGY_ROWS = (
    "SELECT t.*, m.slot_name, m.position, a.* FROM topologies AS t"
    " LEFT JOIN topology_memberships AS m ON m.topology_id = t.id"
    " LEFT JOIN agent_types AS a ON a.id = m.agent_id"
    " WHERE t.name = ? ORDER BY m.position, m.slot_name"
)


_TEAM_TOPOLOGY = "SELECT id, description, topology_type, config FROM topologies WHERE name = ?"
_TEAM_SLOTS = (
    "SELECT slot_name, position, agent_id FROM topology_memberships WHERE topology_id = ?"
    " ORDER BY position, slot_name"
)
_TEAM_AGENTS = (
    "SELECT id, name, description, role, config FROM agent_types"
    " WHERE id IN (SELECT agent_id FROM topology_memberships WHERE topology_id = ?)"
)
"""A stored team's definitions as SQLite holds them (`Database.store_team`): its topology, its slots, and
each of its agents once (a 10,000-member ensemble's slots share one: joined, its definition was read
10,000 times, 17 ms of every run's start)."""


@functools.cache
def _stored_text() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """The converters writing an agent's role and a JSON config to SQLite, as the ORM does."""
    dialect = sqlite.dialect(**JSON_CODEC)
    role = table_of(AgentType).c.role.type.bind_processor(dialect)
    config = table_of(AgentType).c.config.type.bind_processor(dialect)
    assert role is not None and config is not None
    assert table_of(Topology).c.config.type.bind_processor(dialect) is not None  # the same JSON type
    return role, config


_EXECUTION_COLUMNS = [column.key for column in table_of(Execution).columns]
_EXECUTION_INSERT = insert(table_of(Execution))


def _column_values(row: Execution) -> dict[str, Any]:
    return {key: getattr(row, key) for key in _EXECUTION_COLUMNS}


def check_page(limit: int, offset: int) -> None:
    """Refuse a page the databases cannot take, with one line."""
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidConfigError(f"offset must be between 0 and {MAX_OFFSET:,} (got {offset})")
    if not 0 <= limit <= MAX_OFFSET:
        raise InvalidConfigError(f"limit must be between 0 and {MAX_OFFSET:,} (got {limit})")


class Database:
    """Open with `async with Database(url) as db:`; the URL defaults to `QMCP_DATABASE_URL`.

    `read_only`: the caller only reads, so opening does not check that the database takes writes
    (a read-only file, a full disk still show what they hold); a writer learns it at open, not mid-run.
    """

    def __init__(self, url: str | None = None, *, read_only: bool = False) -> None:
        self.url = url or settings().database_url
        self.read_only = read_only
        self.engine = acquire_engine(self.url)
        self.sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self._checkpointer = checkpointer(self.url, self.engine)
        self.steps = SqlStepStore(self.engine, self._checkpointer)
        self.executions = ExecutionService(self)
        """Every change of an execution's status, owner and lease goes through this service."""
        self._inline = inline_engine(self.url, self.engine)
        self._writing: set[asyncio.Future[Any]] = set()
        file = sqlite_file(self.engine)
        self._file = os.path.abspath(file) if file is not None else None  # a later chdir changes nothing
        self._file_identity: tuple[int, int] | None = None
        self._slow_rows: set[uuid.UUID] = set()
        """Executions whose row is slow to write (`_write`'s `row`)."""
        self._slow_once: set[uuid.UUID] = set()
        """Executions whose row's last write was slow."""

    async def __aenter__(self) -> Self:
        try:
            await ensure_schema(self.engine, writable=not self.read_only)
        except BaseException:  # refused (unreachable, behind, newer): give back the engine taken in __init__
            await self.__aexit__()
            raise
        self._file_identity = file_identity(self._file)
        return self

    @property
    def sqlite_path(self) -> str | None:
        """The absolute path of the database's SQLite file, fixed when it was opened (a later chdir changes
        nothing); None for PostgreSQL or a database in memory."""
        return self._file

    def vanished(self) -> str | None:
        """Why the SQLite file opened is no longer at its path (removed, replaced), else None.

        SQLite goes on writing to a removed file through the connections that hold it open, so
        nothing fails: a run would end "completed" in a file nobody can open again. A run asks
        this at its end and fails instead."""
        if self._file is None or self._file_identity is None:
            return None
        if file_identity(self._file) == self._file_identity:
            return None
        return (
            f"the database file {self._file} was removed or replaced while the run was using it; "
            "what the run wrote there is lost"
        )

    async def __aexit__(self, *_exc: object) -> None:
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
        await self.steps.close()
        await release_engine(self.url, self.engine)

    async def _write(
        self,
        work: Callable[[Session], T],
        *,
        row: uuid.UUID | None = None,
        inline: Callable[[], T] | None = None,
    ) -> T:
        """Run `work` in a write transaction: in this thread on a free SQLite file, else on the engine.
        `inline`: the same write made without a session, for this thread (a transaction of its own).

        On the engine the transaction runs in a task of its own that a cancel of the caller does not
        interrupt: a write cancelled between its statement and its commit would hold SQLite's write
        lock (or a PostgreSQL row lock) in a pooled connection, and every other writer would wait.

        `row`: the execution whose row `work` writes. SQLite rewrites a whole row to change one of
        its columns, and an execution's row holds its team's snapshot: 5 MB for 10,000 slots, 20–40 ms
        to write, with the event loop and every step in flight stopped. Once an execution's row took
        longer than `_SLOW_INLINE_SECONDS` to write inline twice in a row, its writes (the lease's
        heartbeats, twice a second; the end of the run) go to the engine's thread, where SQLite works
        without the GIL. Twice: on a loaded machine a small row's write is now and then preempted for
        milliseconds, and a row sent to the engine holds the write lock across awaits from then on
        (a server's run starts waited up to 1.8 s behind such rows under 20 concurrent starts). The
        thread's CPU time would tell them apart at once, but reading it is a system call, and under
        load the loop lost more time there than in the writes (py-spy).

        A locked file (another connection writing: a slow row's write on the engine, a step batch
        from the step store's thread, another process) is tried again inline after a pause, for up
        to `_LOCKED_WAIT_SECONDS`, holding nothing meanwhile: going to the engine at once would put
        the write in the busy handler's sleeps (up to 100 ms each) and then hold the lock across
        awaits itself, so one write on the engine would send every write after it there too.
        """
        if self._inline is not None and (row is None or row not in self._slow_rows):
            pause, waited = _LOCKED_PAUSE_SECONDS, 0.0
            while True:
                started = time.perf_counter()
                try:
                    if inline is not None:
                        result = inline()
                    else:
                        with Session(self._inline, expire_on_commit=False) as session, session.begin():
                            result = work(session)
                except OperationalError as error:
                    if not is_locked(error):
                        raise
                    if waited >= _LOCKED_WAIT_SECONDS:
                        break
                    await asyncio.sleep(pause)  # holding nothing: the lock's holder finishes meanwhile
                    waited += pause
                    pause = min(pause * 2, _LOCKED_PAUSE_MAX_SECONDS)
                    continue
                if row is not None:
                    self._judge(row, time.perf_counter() - started)
                return result
        big = row is not None and row in self._slow_rows
        task = asyncio.ensure_future(self._write_on_engine(work, big=big))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return await asyncio.shield(task)

    def _judge(self, row: uuid.UUID, seconds: float) -> None:
        """Send `row`'s writes to the engine from now on if this write and the one before were slow."""
        if seconds <= _SLOW_INLINE_SECONDS:
            self._slow_once.discard(row)
        elif row in self._slow_once:
            if len(self._slow_rows) >= _SLOW_ROWS_KEPT:
                self._slow_rows.clear()
            self._slow_rows.add(row)
        else:
            if len(self._slow_once) >= _SLOW_ROWS_KEPT:
                self._slow_once.clear()
            self._slow_once.add(row)

    async def _write_on_engine(self, work: Callable[[Session], T], *, big: bool = False) -> T:
        """`work` in a transaction of the engine. `big`: it rewrites a slow row (`_write`), whose commit
        may leave the WAL over the checkpoint threshold (`WAL_CHECKPOINT_PAGES`; a 10,001-slot
        execution's row alone is 1,250 pages to rewrite), so the commit would checkpoint the whole WAL
        itself, fsyncs included, before the write returns: 40-65 ms at the end of such a run. It commits
        with the connection's automatic checkpoint off instead, and asks the file's `Checkpointer`
        thread for the same passive checkpoint right after (as the step writer does)."""
        if not big or self._checkpointer is None:
            async with self.sessions() as session, session.begin():
                return await session.run_sync(work)
        async with self.engine.connect() as conn:
            pages = (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one()
            await conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
            await conn.commit()  # the session's transaction is then its own, committed when it ends
            try:
                async with AsyncSession(bind=conn, expire_on_commit=False) as session, session.begin():
                    result = await session.run_sync(work)
            finally:
                await conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={int(pages)}")
                await conn.commit()
        self._checkpointer.request()
        return result

    async def _read(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a session that only reads: in this thread on a SQLite file (WAL readers wait
        for no writer; 0.1 ms against about 1.5 ms through aiosqlite), else on the engine."""
        if self._inline is not None:
            try:
                with Session(self._inline, expire_on_commit=False) as session:
                    return work(session)
            except OperationalError as error:
                if not is_locked(error):
                    raise
        async with self.sessions() as session:
            return await session.run_sync(work)

    async def _all(self, query: Any) -> list[Any]:
        return await self._read(lambda session: list(session.scalars(query).all()))

    async def _get(self, model: type[T], key: Any, skip: tuple[str, ...] = ()) -> T | None:
        """The row of `model` whose primary key is `key`, or None; the columns named in `skip` left
        unloaded (reading one on the instance raises)."""
        if self._inline is not None:  # a SQLite file: the row straight from the driver (`RowReader`)
            reader = row_reader(model, self._inline, skip)
            try:
                row: T | None = reader.get(self._inline, key)
                return row
            except sqlite3.OperationalError as error:
                if not is_locked(error):
                    raise
        deferred = [defer(getattr(model, name)) for name in skip]
        return await self._read(lambda session: session.get(model, key, options=deferred))

    async def _execute(self, statement: Executable) -> int:
        """Run one write statement in a transaction of its own; returns the rows it touched."""
        result = await self._write(lambda session: session.connection().execute(statement))
        return int(result.rowcount)

    # -- agents -------------------------------------------------------------------------------

    async def get_agent(self, name: str) -> AgentType:
        found = await self._all(select(AgentType).where(AgentType.name == name))
        agent: AgentType | None = found[0] if found else None
        if agent is None:
            raise NotFoundError(f"agent {name!r} not found; list them with: qmcp agents list")
        return agent

    async def list_agents(self, role: AgentRole | None = None) -> list[AgentType]:
        query = select(AgentType).order_by(AgentType.name)
        if role is not None:
            query = query.where(AgentType.role == role)
        return await self._all(query)

    async def delete_agent(self, name: str) -> None:
        """Refused while a topology uses the agent; the refusal names those topologies."""

        def remove(session: Session) -> None:
            agent = session.scalars(select(AgentType).where(AgentType.name == name)).first()
            if agent is None:
                raise NotFoundError(f"agent {name!r} not found; list them with: qmcp agents list")
            users = session.execute(
                select(Topology.name, TopologyMembership.slot_name)
                .join(Topology, col(Topology.id) == TopologyMembership.topology_id)
                .where(TopologyMembership.agent_id == agent.id)
                .order_by(col(Topology.name), col(TopologyMembership.position))
            ).all()
            if users:
                slots = ", ".join(f"{topology}.{slot}" for topology, slot in users)
                names = " ".join(sorted({topology for topology, _ in users}))
                raise InvalidConfigError(
                    f"agent {name!r} is used by {slots}; delete those topologies first "
                    f"(qmcp agents topologies delete {names}) or give the slots another agent"
                )
            session.execute(delete(AgentType).where(col(AgentType.id) == agent.id))
            revoke_trust_of(session, [name], DEFINITION_CHANGED)

        await self._write(remove)

    # -- topologies ---------------------------------------------------------------------------

    async def get_topology(self, name: str) -> tuple[Topology, dict[str, AgentType]]:
        """A stored topology and its agents by slot, in position order."""

        def read(session: Session) -> tuple[Topology | None, list[Any]]:
            topology = session.scalars(select(Topology).where(Topology.name == name)).first()
            if topology is None:
                return None, []
            rows = session.execute(
                select(TopologyMembership, AgentType)
                .join(AgentType, col(AgentType.id) == TopologyMembership.agent_id)
                .where(TopologyMembership.topology_id == topology.id)
                .order_by(col(TopologyMembership.position))
            ).all()
            return topology, list(rows)

        topology, rows = await self._read(read)
        if topology is None:
            raise NotFoundError(f"topology {name!r} not found; list them with: qmcp agents topologies list")
        return topology, {membership.slot_name: agent for membership, agent in rows}

    async def topology_fingerprint(self, name: str) -> str | None:
        """The stored rows of topology `name`, its slots and their agents, as one string that changes
        whenever any of them does (None when there is no such topology): what a cache of the team
        checked from them is keyed by. One query, no ORM objects: 0.1 ms where `get_topology` costs 1."""
        if self._inline is not None:  # a SQLite file: the driver's rows, in this thread
            connection = self._inline.raw_connection()  # from the pool: no SQLAlchemy result (half the cost)
            try:
                rows = connection.cursor().execute(_TOPOLOGY_ROWS, (name,)).fetchall()
            except sqlite3.OperationalError as error:
                if not is_locked(error):
                    raise
            else:
                return repr(rows) if rows else None
            finally:
                connection.close()
        query = text(_TOPOLOGY_ROWS.replace("?", ":name"))
        rows = await self._read(lambda session: session.execute(query, {"name": name}).all())
        return repr([tuple(row) for row in rows]) if rows else None

    async def list_topologies(self) -> list[tuple[Topology, int]]:
        """Every topology with its number of slots."""

        def read(session: Session) -> list[tuple[Topology, int]]:
            counts = dict(
                session.execute(
                    select(TopologyMembership.topology_id, func.count()).group_by(
                        col(TopologyMembership.topology_id)
                    )
                ).all()
            )
            topologies = session.scalars(select(Topology).order_by(col(Topology.name))).all()
            return [(t, counts.get(t.id, 0) if t.id is not None else 0) for t in topologies]

        return await self._read(read)

    async def delete_topology(self, name: str, *, keep_executions: bool = False) -> None:
        """Delete a topology and its slots (its agents stay).

        Refused while executions reference it unless `keep_executions`: those executions keep
        their snapshot of the team (and stay resumable), only their link to the row is cleared.
        """
        await self.delete_topologies([name], keep_executions=keep_executions)

    async def delete_topologies(self, names: Sequence[str], *, keep_executions: bool = False) -> None:
        """Delete topologies in one transaction: one refused (missing, or run without
        `keep_executions`) deletes none of them."""

        def remove(session: Session) -> None:
            for name in names:
                _remove_topology(session, name, keep_executions=keep_executions)

        await self._write(remove)

    async def save_team(
        self, topology: Topology, agents: Mapping[str, AgentType]
    ) -> tuple[Topology, dict[str, AgentType]]:
        """Store (or update by name) a topology and its agents in one transaction.

        Definitions given here win over stored ones with the same name, like `kubectl apply`;
        the slots of the topology are replaced by `agents`' slots, in dict order.
        """
        _check_definitions(list(agents.values()), [topology])
        for attempt in range(5):
            try:
                return await self._write(lambda session: _save_team(session, topology, agents))
            except IntegrityError:
                # Another writer stored the same names between our select and our insert: its
                # rows are there now, so the next attempt updates them instead.
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def store_team(self, topology: Topology, agents: Mapping[str, AgentType]) -> int:
        """`save_team` for a run's start: the stored topology's id. When a SQLite file already holds
        exactly these definitions (the driver's rows, written as the ORM would write ours), saving
        them would change nothing, so nothing is written: one query, 0.4–0.8 ms of CPU for a 200-slot
        team, against 2.3 ms for `save_team`'s reads into ORM rows and its empty transaction."""
        if self._inline is not None and agents:
            _check_definitions(list(agents.values()), [topology])
            try:
                with self._inline.connect() as conn:  # the driver's tuples, no Row objects
                    driver = conn.connection.driver_connection
                    assert driver is not None  # checked out of the pool: open
                    found = driver.execute(_TEAM_TOPOLOGY, (topology.name,)).fetchone()
                    slots = driver.execute(_TEAM_SLOTS, (found[0],)).fetchall() if found else []
                    team = driver.execute(_TEAM_AGENTS, (found[0],)).fetchall() if found else []
            except sqlite3.OperationalError as error:
                if not is_locked(error):
                    raise
            else:
                if found is not None and _holds_team(found, slots, team, topology, agents):
                    return int(found[0])
        stored, _ = await self.save_team(topology, agents)
        assert stored.id is not None
        return stored.id

    async def save_agent(self, agent: AgentType) -> AgentType:
        _check_definitions([agent], [])
        return await self._write(lambda session: _upsert_agents(session, [agent])[agent.name])

    async def save_definitions(
        self, agents: Sequence[AgentType], teams: Sequence[tuple[Topology, Mapping[str, AgentType]]]
    ) -> None:
        """Store agents, then topologies with their slots, in one transaction (`qmcp apply`): a
        failure stores none of them. Names that exist are updated, like `save_team`."""
        _check_definitions(
            [*agents, *(agent for _, slots in teams for agent in slots.values())],
            [topology for topology, _ in teams],
        )

        def save(session: Session) -> None:
            if agents:
                _upsert_agents(session, list(agents))
            for topology, slots in teams:
                _save_team(session, topology, slots)

        for attempt in range(5):
            try:
                await self._write(save)
                return
            except IntegrityError:  # another writer inserted one of the names first: update it now
                if attempt == 4:
                    raise

    # -- executions ---------------------------------------------------------------------------

    # Writes of execution rows belong to the execution service (`self.executions`), which calls these.

    async def add(self, row: Execution | HumanRequest, *steps: ExecutionStep) -> None:
        """Insert `row`, and after it in the same transaction the `steps` of its execution (a fork's
        inherited steps): all of them, or nothing."""

        def write(session: Session) -> None:
            if isinstance(row, Execution) and not steps:
                # One Core insert, not the unit of work: ~0.3 ms against ~1 ms through the session's flush.
                session.connection().execute(_EXECUTION_INSERT, _column_values(row))
                return
            session.add(row)
            if steps:
                session.flush()  # the execution first: its steps refer to it
                session.add_all(steps)

        if not isinstance(row, Execution):
            await self._write(write)
        elif steps or self._inline is None:
            await self._write(write, row=row.id)
        else:  # a run start's only write (a server's 202): on a SQLite file, the driver's insert (`RowInserter`)
            inline, inserter = self._inline, row_inserter(Execution, self._inline)
            await self._write(write, row=row.id, inline=lambda: inserter.insert(inline, row))

    async def execute_update(
        self, execution_id: uuid.UUID, values: Mapping[str, Any], *guard: ColumnElement[bool]
    ) -> bool:
        """Update an execution row if `guard` holds (a compare-and-set); whether it did."""
        statement = update(Execution).where(col(Execution.id) == execution_id, *guard).values(**values)
        result = await self._write(lambda session: session.connection().execute(statement), row=execution_id)
        return bool(result.rowcount)

    async def update_counting_usage(
        self, execution_id: uuid.UUID, values: Mapping[str, Any], *guard: ColumnElement[bool]
    ) -> Usage | None:
        """`execute_update`, setting the execution's totals to the sum of its usage rows too
        (`_usage.py`); the totals written, or None when `guard` did not hold."""
        statement = (
            update(Execution)
            .where(col(Execution.id) == execution_id, *guard)
            .values(**values, **summed_totals())
            .returning(*[getattr(Execution, name) for name in TOTALS])
        )
        return await self.run_counting_usage(execution_id, statement, {})

    async def run_counting_usage(
        self, execution_id: uuid.UUID, statement: Executable, params: Mapping[str, Any]
    ) -> Usage | None:
        """Run `statement`, an `UPDATE` of execution `execution_id` setting its totals and returning
        them (`TOTALS`), with `params`: `update_counting_usage` built once, for a write every run makes
        (`ExecutionService.finish`); the totals written, or None when its guard did not hold."""

        def write(session: Session) -> Any:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(lock_execution(execution_id))
            return session.connection().execute(statement, dict(params)).first()

        row = await self._write(write, row=execution_id)
        return None if row is None else totals_of(row)

    async def renew_lease(
        self, execution_id: uuid.UUID, token: str, until: datetime, now: datetime
    ) -> tuple[ExecutionStatus, bool] | None:
        """Extend the lease of `token`; None if `token` no longer owns the execution, else its status
        and whether a cancel was requested — one statement, so a heartbeat is one round trip."""
        statement = (
            update(Execution)
            .where(col(Execution.id) == execution_id, col(Execution.owner_token) == token)
            .values(lease_until=until, heartbeat_at=now)
            .returning(col(Execution.status), col(Execution.cancel_requested_at))
        )
        row = await self._write(
            lambda session: session.connection().execute(statement).first(), row=execution_id
        )
        return None if row is None else (ExecutionStatus(row[0]), row[1] is not None)

    async def get_execution(self, execution_id: uuid.UUID | str, *, snapshots: bool = True) -> Execution:
        """The execution as it stands now (`observed`): running with its owner gone reads `interrupted`.
        `snapshots=False` leaves its team snapshots unread (`SNAPSHOTS`: a 10,000-slot team's are
        5 MB of JSON) for a reader that only shows the execution, as the server's polled read does."""
        return observed(
            await self.stored_execution(execution_id, snapshots=snapshots), self.executions.clock.now()
        )

    async def stored_execution(self, execution_id: uuid.UUID | str, *, snapshots: bool = True) -> Execution:
        """The execution's row as written: for code that acts on its owner and lease with a
        compare-and-set (the execution service, a Metaflow task joining its run). Others read
        `get_execution`."""
        try:
            key = execution_id if isinstance(execution_id, uuid.UUID) else uuid.UUID(str(execution_id))
        except ValueError:
            raise NotFoundError(f"{execution_id!r} is not an execution id (a UUID)") from None
        execution = await self._get(Execution, key, () if snapshots else SNAPSHOTS)
        if execution is None:
            raise NotFoundError(f"execution {key} not found; list them with: qmcp executions list")
        return execution

    async def find_execution(self, id_or_prefix: str) -> Execution:
        """The execution whose id is `id_or_prefix` or starts with it (hex digits, dashes optional).

        A prefix must name exactly one execution: an ambiguous one is refused with the matches."""
        text_id = id_or_prefix.strip().lower()
        digits = text_id.replace("-", "")
        if len(digits) == 32:
            return await self.get_execution(text_id)
        if not digits or any(c not in "0123456789abcdef" for c in digits):
            raise NotFoundError(f"{id_or_prefix!r} is not an execution id (a UUID) nor the start of one")
        hex_id = func.replace(func.lower(cast(col(Execution.id), String)), "-", "")
        query = select(Execution).where(hex_id.like(f"{digits}%")).order_by(col(Execution.created_at).desc())
        matches = await self._all(query.limit(6))
        if not matches:
            raise NotFoundError(
                f"no execution id starts with {id_or_prefix!r}; list them with: qmcp executions list"
            )
        if len(matches) > 1:
            shown = ", ".join(str(e.id) for e in matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise NotFoundError(
                f"{id_or_prefix!r} starts {'more than 5' if len(matches) > 5 else len(matches)} execution ids "
                f"({shown}); give more of the id"
            )
        found: Execution = matches[0]
        return observed(found, self.executions.clock.now())

    async def list_executions(
        self,
        *,
        status: ExecutionStatus | Sequence[ExecutionStatus] | None = None,
        topology_name: str | None = None,
        origin: str | None = None,
        limit: int = 50,
        offset: int = 0,
        oldest_first: bool = False,
        eval_id: str | None = None,
    ) -> list[Execution]:
        """Executions as they stand now (`observed`), newest first (or oldest first), filtered by
        status(es), topology, origin and the eval they are cells of."""
        check_page(limit, offset)
        now = self.executions.clock.now()
        order = col(Execution.created_at).asc() if oldest_first else col(Execution.created_at).desc()
        query = select(Execution).order_by(order).offset(offset).limit(limit)
        query = query.where(*await self._filters(now, status, topology_name, origin, eval_id))
        return [observed(execution, now) for execution in await self._all(query)]

    async def count_executions(
        self,
        *,
        status: ExecutionStatus | None = None,
        topology_name: str | None = None,
        eval_id: str | None = None,
    ) -> int:
        """How many `list_executions` would give without a limit: counted by their observed status."""
        query = select(func.count()).select_from(Execution)
        now = self.executions.clock.now()
        query = query.where(*await self._filters(now, status, topology_name, None, eval_id))
        return int(await self._read(lambda session: session.execute(query).scalar_one()))

    async def _filters(
        self,
        now: datetime,
        status: ExecutionStatus | Sequence[ExecutionStatus] | None,
        topology_name: str | None,
        origin: str | None,
        eval_id: str | None = None,
    ) -> list[ColumnElement[bool]]:
        """The conditions of an execution query. Statuses are the observed ones: a running row whose
        owner is gone (no owner, an expired lease, a dead pid on this host) counts as interrupted."""
        conditions: list[ColumnElement[bool]] = []
        if status is not None:
            wanted = {status} if isinstance(status, ExecutionStatus) else set(status)
            stored = col(Execution.status)
            either: list[ColumnElement[bool]] = [
                stored.in_(sorted(wanted - {ExecutionStatus.RUNNING, ExecutionStatus.INTERRUPTED}))
            ]
            if wanted & {ExecutionStatus.RUNNING, ExecutionStatus.INTERRUPTED}:
                gone = and_(
                    stored == ExecutionStatus.RUNNING,
                    or_(
                        col(Execution.owner_token).is_(None),
                        col(Execution.lease_until).is_(None),
                        col(Execution.lease_until) < now,
                        col(Execution.id).in_(await self._dead_here(now)),
                    ),
                )
                if ExecutionStatus.RUNNING in wanted:
                    either.append(and_(stored == ExecutionStatus.RUNNING, not_(gone)))
                if ExecutionStatus.INTERRUPTED in wanted:
                    either.append(or_(stored == ExecutionStatus.INTERRUPTED, gone))
            conditions.append(or_(*either))
        if topology_name is not None:
            conditions.append(col(Execution.topology_name) == topology_name)
        if origin is not None:
            conditions.append(col(Execution.origin) == origin)
        if eval_id is not None:
            conditions.append(col(Execution.eval_id) == eval_id)
        return conditions

    async def _dead_here(self, now: datetime) -> list[uuid.UUID]:
        """Running executions with an unexpired lease whose owner's pid is gone on this host: a few
        rows at most, which only this process can judge (`owner_state`)."""
        query = select(Execution).where(
            col(Execution.status) == ExecutionStatus.RUNNING,
            col(Execution.owner_host) == socket.gethostname(),
            col(Execution.owner_pid).is_not(None),
            col(Execution.lease_until) >= now,
        )
        rows = await self._all(query)
        return [row.id for row in rows if owner_state(row, now) is OwnerState.DEAD]

    async def list_forks(self, execution_id: uuid.UUID) -> list[Execution]:
        """The executions forked from `execution_id` (its children), oldest first, as they stand now."""
        query = (
            select(Execution)
            .where(col(Execution.parent_id) == execution_id)
            .order_by(col(Execution.created_at))
        )
        now = self.executions.clock.now()
        return [observed(execution, now) for execution in await self._all(query)]

    async def list_steps(self, execution_id: uuid.UUID) -> Sequence[ExecutionStep]:
        query = (
            select(ExecutionStep)
            .where(ExecutionStep.execution_id == execution_id)
            .order_by(col(ExecutionStep.id))
        )
        return await self._all(query)

    async def step_statuses(self, execution_id: uuid.UUID, keys: Sequence[str]) -> dict[StepStatus, int]:
        """How many of the execution's steps `keys` have a row, by status: a cheap poll of their progress."""
        query = (
            select(col(ExecutionStep.status), func.count())
            .where(ExecutionStep.execution_id == execution_id, col(ExecutionStep.key).in_(keys))
            .group_by(col(ExecutionStep.status))
        )
        return await self._read(
            lambda session: {status: count for status, count in session.execute(query).all()}
        )

    async def list_usage(self, execution_id: uuid.UUID) -> Sequence[StepUsage]:
        """What every step attempt of the execution paid, displaced ones included, in the order written."""
        return await self._all(
            select(StepUsage).where(StepUsage.execution_id == execution_id).order_by(col(StepUsage.id))
        )

    async def list_step_outlines(self, execution_id: uuid.UUID) -> Sequence[Any]:
        """An execution's steps without their request, response and output: rows with the step's key,
        slot, agent_name, model, status, tokens, cost, latency, attempts, error and times (what event
        streams send; a tenth of the cost of whole rows)."""
        columns = [
            col(ExecutionStep.key),
            col(ExecutionStep.slot),
            col(ExecutionStep.agent_name),
            col(ExecutionStep.model),
            col(ExecutionStep.status),
            col(ExecutionStep.input_tokens),
            col(ExecutionStep.output_tokens),
            col(ExecutionStep.cost_usd),
            col(ExecutionStep.latency_ms),
            col(ExecutionStep.attempts),
            col(ExecutionStep.error),
            col(ExecutionStep.started_at),
            col(ExecutionStep.completed_at),
        ]
        query = (
            select(*columns).where(ExecutionStep.execution_id == execution_id).order_by(col(ExecutionStep.id))
        )
        return await self._read(lambda session: list(session.execute(query).all()))

    async def cost_report(
        self, *, since: datetime | None = None, by: Literal["model", "topology", "agent"] = "model"
    ) -> CostReport:
        """Tokens and cost of the steps since `since`, by model, topology or agent (`_reports.py`)."""
        return await cost_report(self, since=since, by=by)

    async def prune(
        self,
        prune: PruneFilter,
        *,
        dry_run: bool = False,
        vacuum: bool = True,
        batch_size: int = 200,
        stop: Callable[[], bool] | None = None,
    ) -> PruneResult:
        """Delete old finished executions with their steps, usage and human requests, in batches, and
        give the space back (`_retention.py`); a dry run counts them. Live runs and kept forks' parents stay."""
        return await prune_executions(
            self, prune, dry_run=dry_run, vacuum=vacuum, batch_size=batch_size, stop=stop
        )

    # -- human requests -----------------------------------------------------------------------

    async def create_human_request(
        self, request: HumanRequest, *, run_token: str | None = None
    ) -> HumanRequest:
        """Store a new request; `ConflictError` if its id is taken.

        Ids of the form `{execution id}:{step}` are the gates' of runs: a client that made one first
        and answered it would let the run pass its gate unasked. Such an id is taken only as a gate's
        own request (`execution_id` and `key` make it), or with `run_token`, the owner token of that
        execution, from a run's gate on a server sharing its database (`PermissionDeniedError`
        otherwise). An id naming an execution this database does not hold (a run with a database of
        its own, gating on this server) cannot be checked here and is taken.
        """
        check_id(request.id, "id")
        check_id(request.correlation_id, "correlation_id")
        await self._reserve_gate_id(request, run_token)
        check_json(request.context, "context")
        check_json(request.options, "options")
        if request.expires_at is None:
            request.expires_at = HumanRequest.expiry(request.created_at, request.timeout_seconds)
        for other in gate_id_forms(request.id)[1:]:  # a gate's request, stored under its other form
            if await self._get(HumanRequest, other) is not None:
                raise ConflictError(f"a human request with id {request.id!r} already exists")
        try:
            await self.add(request)
        except IntegrityError:
            async with self.sessions() as session:
                if await session.get(HumanRequest, request.id) is None:
                    raise  # not the id: a foreign key
            raise ConflictError(f"a human request with id {request.id!r} already exists") from None
        _count_hitl(request, "created")
        return request

    async def _reserve_gate_id(self, request: HumanRequest, run_token: str | None) -> None:
        gated = gate_execution(request.id)
        if gated is None or (
            request.execution_id == gated and request.id == gate_request_id(gated, request.key or "")
        ):
            return
        execution = await self._get(Execution, gated)
        if execution is None:
            return
        owner = execution.owner_token
        if run_token is None or owner is None or not hmac.compare_digest(run_token, owner):
            raise PermissionDeniedError(
                f"human request ids of the form {{execution id}}:{{step}} are reserved for the gates of runs "
                f"(execution {gated} is one); choose another id"
            )
        request.execution_id, request.key = gated, gate_key(request.id)

    async def get_human_request(self, request_id: str) -> HumanRequest:
        """The request stored under `request_id`; a gate's is found by either form of its id."""
        check_id(request_id, "request id")
        request = await self._find_human_request(str(request_id))
        if request is None:
            raise NotFoundError(f"human request {request_id!r} not found")
        return request

    async def _find_human_request(self, request_id: str) -> HumanRequest | None:
        for form in gate_id_forms(request_id):
            request = await self._get(HumanRequest, form)
            if request is not None:
                return request
        return None

    async def get_human_response(self, request_id: str) -> HumanResponse | None:
        found = await self._all(select(HumanResponse).where(HumanResponse.request_id == str(request_id)))
        return found[0] if found else None

    async def list_human_requests(
        self,
        *,
        execution_id: uuid.UUID | None = None,
        status: str | None = None,
        request_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[HumanRequest]:
        """Requests, newest first; pending ones past their timeout are marked expired first."""
        check_page(limit, offset)
        await self.expire_due_human_requests()
        query = select(HumanRequest).order_by(col(HumanRequest.created_at).desc()).offset(offset).limit(limit)
        if execution_id is not None:
            query = query.where(HumanRequest.execution_id == execution_id)
        if status is not None:
            query = query.where(HumanRequest.status == status)
        if request_type is not None:
            query = query.where(HumanRequest.request_type == request_type)
        return await self._all(query)

    async def expire_due_human_requests(self) -> None:
        """Mark pending requests past their timeout expired (a guarded write: answers that won stay)."""
        await self._execute(
            update(HumanRequest)
            .where(
                col(HumanRequest.status) == HumanRequestStatus.PENDING,
                col(HumanRequest.expires_at).is_not(None),
                col(HumanRequest.expires_at) <= utcnow(),
            )
            .values(status=HumanRequestStatus.EXPIRED)
        )

    async def answer_human_request(
        self,
        request_id: str,
        response: str,
        *,
        responded_by: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[HumanRequest, HumanResponse]:
        """Store a person's answer: exactly once (a write guarded on `pending`), before the request expires.

        `NotFoundError`, `ConflictError` (already answered or cancelled), `ExpiredError`, and
        `InvalidConfigError` for an answer that is not one of the request's options.
        """
        if NUL in response:
            raise InvalidConfigError(nul_message("the answer"))
        check_id(request_id, "request_id")
        check_json(dict(metadata or {}), "response_metadata")
        request = await self.get_human_request(request_id)
        if request.status == HumanRequestStatus.PENDING and request.expired():
            await self.expire_due_human_requests()
            request = await self.get_human_request(request_id)
        if request.status == HumanRequestStatus.EXPIRED:
            raise ExpiredError(
                f"human request {request.id!r} expired at {request.expires_at}; nobody can answer it now"
            )
        if request.status != HumanRequestStatus.PENDING:
            raise ConflictError(_not_pending(request))
        if request.options and response not in request.options:
            # upstream's sentence (its clients read it), then what was given
            raise InvalidConfigError(f"Response must be one of: {list(request.options)} (got {response!r})")
        answer = HumanResponse(
            request_id=request.id,
            response=response,
            responded_by=responded_by,
            response_metadata=dict(metadata or {}),
        )

        def write(session: Session) -> bool:
            claimed = session.execute(
                update(HumanRequest)
                .where(
                    col(HumanRequest.id) == request.id, col(HumanRequest.status) == HumanRequestStatus.PENDING
                )
                .values(status=HumanRequestStatus.RESPONDED)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult, typed Result
                return False
            session.add(answer)
            return True

        if not await self._write(write):
            current = await self.get_human_request(request.id)
            if current.status == HumanRequestStatus.EXPIRED:
                raise ExpiredError(f"human request {request.id!r} expired; nobody can answer it now")
            raise ConflictError(_not_pending(current))
        _count_hitl(request, "responded")
        return await self.get_human_request(request.id), answer

    # -- tool invocations (the QMCP server's audit of /v1/tools calls) ---------------------------

    async def add_tool_invocation(self, invocation: ToolInvocation) -> None:
        check_id(invocation.tool_name, "tool name")
        check_id(invocation.correlation_id, "correlation_id")
        check_json(invocation.input_params, "input")
        await self._write(lambda session: session.add(invocation))

    async def finish_tool_invocation(self, invocation_id: str, **values: Any) -> None:
        await self._execute(
            update(ToolInvocation).where(col(ToolInvocation.id) == invocation_id).values(**values)
        )

    async def get_tool_invocation(self, invocation_id: str) -> ToolInvocation:
        check_id(invocation_id, "invocation id")
        invocation = await self._get(ToolInvocation, str(invocation_id))
        if invocation is None:
            raise NotFoundError(f"invocation {invocation_id!r} not found")
        return invocation

    async def list_tool_invocations(
        self, *, tool_name: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[ToolInvocation]:
        check_page(limit, offset)
        query = (
            select(ToolInvocation).order_by(col(ToolInvocation.created_at).desc()).offset(offset).limit(limit)
        )
        if tool_name is not None:
            query = query.where(ToolInvocation.tool_name == tool_name)
        if status is not None:
            query = query.where(ToolInvocation.status == status)
        return await self._all(query)


def _check_definitions(agents: Sequence[AgentType], topologies: Sequence[Topology]) -> None:
    """Refuse a definition whose JSON cannot be stored (`check_json`), naming it."""
    # a team's slots often share one agent object (an ensemble of 1,000): check each object once
    for agent in {id(agent): agent for agent in agents}.values():
        check_json(agent.config, f"agent {agent.name!r}: config")
    for topology in topologies:
        check_json(topology.config, f"topology {topology.name!r}: config")


_UPSTREAM_TYPES = frozenset(HumanRequestType)


def _count_hitl(request: HumanRequest, action: str) -> None:
    """Count a request made or answered, whoever did (a run's gate, the API, MCP, the console, the
    CLI), in upstream's labels; a type outside upstream's three counts as `other`, so clients choosing
    types cannot grow the metric without bound."""
    from ...observability import METRICS  # here, not at import: the store loads without the metrics

    kind = request.request_type if request.request_type in _UPSTREAM_TYPES else "other"
    METRICS.hitl.labels(kind, action).inc()


def _not_pending(request: HumanRequest) -> str:
    if request.status == HumanRequestStatus.RESPONDED:
        return f"Request has already been responded to (human request {request.id!r})"  # upstream's sentence
    return f"human request {request.id!r} was {request.status}"


# -- team writes, run by `Database._write` in this thread (SQLite) or on the engine's ------------------


def _remove_topology(session: Session, name: str, *, keep_executions: bool) -> None:
    topology = session.scalars(select(Topology).where(Topology.name == name)).first()
    if topology is None:
        raise NotFoundError(f"topology {name!r} not found; list them with: qmcp agents topologies list")
    ran = session.scalar(
        select(func.count()).select_from(Execution).where(Execution.topology_id == topology.id)
    )
    if ran and not keep_executions:
        raise InvalidConfigError(
            f"topology {name!r} is referenced by {ran} execution(s); delete it anyway with "
            "--force (the executions keep their snapshot of the team)"
        )
    session.execute(
        update(Execution).where(col(Execution.topology_id) == topology.id).values(topology_id=None)
    )
    session.execute(delete(TopologyMembership).where(col(TopologyMembership.topology_id) == topology.id))
    session.execute(delete(Topology).where(col(Topology.id) == topology.id))


def _holds_team(
    found: Sequence[Any],
    slots: Sequence[Any],
    team: Sequence[Any],
    topology: Topology,
    agents: Mapping[str, AgentType],
) -> bool:
    """Whether the stored rows (`_TEAM_TOPOLOGY`, `_TEAM_SLOTS`, `_TEAM_AGENTS`) are `topology` with
    `agents` in its slots, in order, each column as the ORM would write it: any difference, even one
    the ORM would read back as equal, says no."""
    if len(slots) != len(agents):
        return False
    role, config = _stored_text()
    if tuple(found[1:4]) != (topology.description, str(topology.topology_type), config(topology.config)):
        return False
    stored = {row[0]: tuple(row[1:]) for row in team}
    checked: dict[int, int] = {}  # id(agent) → the stored agent it matched: slots often share one
    for position, ((slot, agent), (stored_slot, stored_position, agent_id)) in enumerate(
        zip(agents.items(), slots, strict=True)
    ):
        if stored_slot != slot or stored_position != position:
            return False
        if checked.get(id(agent)) != agent_id:
            wanted = (agent.name, agent.description, role(agent.role), config(agent.config))
            if stored.get(agent_id) != wanted:
                return False
            checked[id(agent)] = agent_id
    return True


def _save_team(
    session: Session, topology: Topology, agents: Mapping[str, AgentType]
) -> tuple[Topology, dict[str, AgentType]]:
    if session.get_bind().dialect.name == "postgresql":
        # Team saves read then write several tables: one at a time across all processes.
        session.execute(text("SELECT pg_advisory_xact_lock(7170001)"))
    # Each agent object's name read once: many slots often share one agent (a 10,000-member
    # ensemble's), and a table model's attribute is read through SQLAlchemy.
    names: dict[int, str] = {}
    slots = [
        (slot, agent, names.get(id(agent)) or names.setdefault(id(agent), agent.name))
        for slot, agent in agents.items()
    ]
    unique = {name: agent for _, agent, name in slots}
    by_name = _upsert_agents(session, list(unique.values()))
    stored = _upsert_topology(session, topology)
    assert stored.id is not None
    ids = {name: agent.id for name, agent in by_name.items() if agent.id is not None}  # all: flushed
    wanted = [(slot, ids[name], position) for position, (slot, _, name) in enumerate(slots)]
    # Core, not the ORM's query: the slots' rows as plain tuples (10,001 of them for that ensemble)
    current = (
        session.connection()
        .execute(
            select(TopologyMembership.slot_name, TopologyMembership.agent_id, TopologyMembership.position)
            .where(TopologyMembership.topology_id == stored.id)
            .order_by(col(TopologyMembership.position))
        )
        .all()
    )
    if [tuple(row) for row in current] != wanted:
        session.execute(delete(TopologyMembership).where(col(TopologyMembership.topology_id) == stored.id))
        # Core's executemany, not ORM objects: building 10,001 of them cost 0.65 s of the first run of a
        # 10,000-member ensemble (a membership has no default but its id, and nothing reads them back here).
        session.execute(
            insert(TopologyMembership),
            [
                {"topology_id": stored.id, "agent_id": agent_id, "slot_name": slot, "position": position}
                for slot, agent_id, position in wanted
            ],
        )
    return stored, {slot: by_name[name] for slot, _, name in slots}


def _upsert_agents(session: Session, agents: list[AgentType]) -> dict[str, AgentType]:
    """Insert new agents and update changed ones, by name, with one select and one flush."""
    names = [agent.name for agent in agents]
    stored = {a.name: a for a in session.scalars(select(AgentType).where(col(AgentType.name).in_(names)))}
    changed = []
    for agent in agents:
        existing = stored.get(agent.name)
        if existing is None:
            stored[agent.name] = AgentType(**agent.definition())
            session.add(stored[agent.name])
            changed.append(agent.name)
        elif _redefine(existing, agent.definition()):
            changed.append(agent.name)
    revoke_trust_of(session, changed, DEFINITION_CHANGED)
    session.flush()
    return stored


DEFINITION_CHANGED = "definition changed"


def revoke_trust_of(session: Session, names: Sequence[str], why: str) -> int:
    """Revoke every trust record in force of the agents `names`; returns how many.

    Every write that changes an agent's stored definition calls this in its transaction (a new
    agent too: records may be left from a deleted one of that name, or from an execution's
    snapshot), so whatever door the change came through, the changed agent is untrusted until it
    is trusted again, and content trusted before the change is not trusted when it comes back."""
    if not names:
        return 0
    result = session.execute(
        update(TrustRecord)
        .where(col(TrustRecord.agent_name).in_(list(names)), col(TrustRecord.revoked_at).is_(None))
        .values(revoked_at=utcnow(), revoked_why=why)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _upsert_topology(session: Session, topology: Topology) -> Topology:
    stored = session.scalars(select(Topology).where(Topology.name == topology.name)).first()
    if stored is None:
        stored = Topology(**topology.definition())
        session.add(stored)
    else:
        _redefine(stored, topology.definition())
    session.flush()
    return stored


def _redefine(stored: AgentType | Topology, definition: dict[str, Any]) -> bool:
    """Give a stored row the definition it is saved with now, if that differs (`kubectl apply`);
    says whether it did."""
    if stored.definition() == definition:
        return False
    for field, value in definition.items():
        setattr(stored, field, value)
    stored.updated_at = utcnow()
    return True
