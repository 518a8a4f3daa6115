"""`Database`: one engine, the step store, and the record queries the runners, CLI and server share."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self, TypeVar

from sqlalchemy import ColumnElement, Executable, delete, func, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ...config import settings
from ..errors import InvalidConfigError, NotFoundError
from ..models import (
    NUL,
    AgentRole,
    AgentType,
    Execution,
    ExecutionStatus,
    ExecutionStep,
    HumanRequest,
    Topology,
    TopologyMembership,
    nul_message,
)
from ..models._agent import utcnow
from ._engine import acquire_engine, ensure_schema, inline_engine, is_locked, release_engine
from ._executions import ExecutionService
from ._reports import CostReport, cost_report
from ._steps import SqlStepStore

__all__ = ["Database"]

T = TypeVar("T")


class Database:
    """Open with `async with Database(url) as db:`; the URL defaults to `QMCP_DATABASE_URL`."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or settings().database_url
        self.engine = acquire_engine(self.url)
        self.sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self.steps = SqlStepStore(self.engine)
        self.executions = ExecutionService(self)
        """Every change of an execution's status, owner and lease goes through this service."""
        self._inline = inline_engine(self.url, self.engine)
        self._writing: set[asyncio.Future[Any]] = set()

    async def __aenter__(self) -> Self:
        await ensure_schema(self.engine)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
        await self.steps.close()
        await release_engine(self.url, self.engine)

    async def _write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a write transaction: in this thread on a free SQLite file, else on the engine.

        On the engine the transaction runs in a task of its own that a cancel of the caller does not
        interrupt: a write cancelled between its statement and its commit would hold SQLite's write
        lock (or a PostgreSQL row lock) in a pooled connection, and every other writer would wait.
        """
        if self._inline is not None:
            try:
                with Session(self._inline, expire_on_commit=False) as session, session.begin():
                    return work(session)
            except OperationalError as error:
                if not is_locked(error):
                    raise
        task = asyncio.ensure_future(self._write_on_engine(work))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return await asyncio.shield(task)

    async def _write_on_engine(self, work: Callable[[Session], T]) -> T:
        async with self.sessions() as session, session.begin():
            return await session.run_sync(work)

    async def _execute(self, statement: Executable) -> int:
        """Run one write statement in a transaction of its own; returns the rows it touched."""
        result = await self._write(lambda session: session.connection().execute(statement))
        return int(result.rowcount)  # type: ignore[attr-defined]

    # -- agents -------------------------------------------------------------------------------

    async def get_agent(self, name: str) -> AgentType:
        async with self.sessions() as session:
            agent = (await session.exec(select(AgentType).where(AgentType.name == name))).first()
        if agent is None:
            raise NotFoundError(f"agent {name!r} not found; list them with: qmcp agents list")
        return agent

    async def list_agents(self, role: AgentRole | None = None) -> list[AgentType]:
        query = select(AgentType).order_by(AgentType.name)
        if role is not None:
            query = query.where(AgentType.role == role)
        async with self.sessions() as session:
            return list((await session.exec(query)).all())

    async def delete_agent(self, name: str) -> None:
        agent = await self.get_agent(name)
        async with self.sessions() as session, session.begin():
            used = await session.scalar(
                select(func.count())
                .select_from(TopologyMembership)
                .where(TopologyMembership.agent_id == agent.id)
            )
            if used:
                raise InvalidConfigError(
                    f"agent {name!r} is used by {used} topology slot(s); remove those first"
                )
            await session.exec(delete(AgentType).where(col(AgentType.id) == agent.id))

    # -- topologies ---------------------------------------------------------------------------

    async def get_topology(self, name: str) -> tuple[Topology, dict[str, AgentType]]:
        """A stored topology and its agents by slot, in position order."""
        async with self.sessions() as session:
            topology = (await session.exec(select(Topology).where(Topology.name == name))).first()
            if topology is None:
                raise NotFoundError(
                    f"topology {name!r} not found; list them with: qmcp agents topologies list"
                )
            rows = (
                await session.exec(
                    select(TopologyMembership, AgentType)
                    .join(AgentType, col(AgentType.id) == TopologyMembership.agent_id)
                    .where(TopologyMembership.topology_id == topology.id)
                    .order_by(TopologyMembership.position)
                )
            ).all()
        return topology, {membership.slot_name: agent for membership, agent in rows}

    async def list_topologies(self) -> list[tuple[Topology, int]]:
        """Every topology with its number of slots."""
        async with self.sessions() as session:
            counts = dict(
                (
                    await session.exec(
                        select(TopologyMembership.topology_id, func.count()).group_by(
                            TopologyMembership.topology_id
                        )
                    )
                ).all()
            )
            topologies = (await session.exec(select(Topology).order_by(Topology.name))).all()
        return [(t, counts.get(t.id, 0)) for t in topologies]

    async def save_team(
        self, topology: Topology, agents: Mapping[str, AgentType]
    ) -> tuple[Topology, dict[str, AgentType]]:
        """Store (or update by name) a topology and its agents in one transaction.

        Definitions given here win over stored ones with the same name, like `kubectl apply`;
        the slots of the topology are replaced by `agents`' slots, in dict order.
        """
        for attempt in range(5):
            try:
                return await self._write(lambda session: _save_team(session, topology, agents))
            except IntegrityError:
                # Another writer stored the same names between our select and our insert: its
                # rows are there now, so the next attempt updates them instead.
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def save_agent(self, agent: AgentType) -> AgentType:
        return await self._write(lambda session: _upsert_agents(session, [agent])[agent.name])

    # -- executions ---------------------------------------------------------------------------

    # Writes of execution rows belong to the execution service (`self.executions`), which calls these.

    async def add(self, row: Execution | HumanRequest) -> None:
        await self._write(lambda session: session.add(row))

    async def execute_update(
        self, execution_id: uuid.UUID, values: Mapping[str, Any], *guard: ColumnElement[bool]
    ) -> bool:
        """Update an execution row if `guard` holds (a compare-and-set); whether it did."""
        statement = update(Execution).where(col(Execution.id) == execution_id, *guard).values(**values)
        return bool(await self._execute(statement))

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
        row = await self._write(lambda session: session.connection().execute(statement).first())
        return None if row is None else (ExecutionStatus(row[0]), row[1] is not None)

    async def get_execution(self, execution_id: uuid.UUID | str) -> Execution:
        try:
            key = execution_id if isinstance(execution_id, uuid.UUID) else uuid.UUID(str(execution_id))
        except ValueError:
            raise NotFoundError(f"{execution_id!r} is not an execution id (a UUID)") from None
        async with self.sessions() as session:
            execution = await session.get(Execution, key)
        if execution is None:
            raise NotFoundError(f"execution {key} not found; list them with: qmcp executions list")
        return execution

    async def list_executions(
        self,
        *,
        status: ExecutionStatus | None = None,
        topology_name: str | None = None,
        limit: int = 50,
    ) -> list[Execution]:
        query = select(Execution).order_by(col(Execution.created_at).desc()).limit(limit)
        if status is not None:
            query = query.where(Execution.status == status)
        if topology_name is not None:
            query = query.where(Execution.topology_name == topology_name)
        async with self.sessions() as session:
            return list((await session.exec(query)).all())

    async def list_steps(self, execution_id: uuid.UUID) -> Sequence[ExecutionStep]:
        query = (
            select(ExecutionStep).where(ExecutionStep.execution_id == execution_id).order_by(ExecutionStep.id)
        )
        async with self.sessions() as session:
            return list((await session.exec(query)).all())

    async def cost_report(
        self, *, since: datetime | None = None, by: Literal["model", "topology", "agent"] = "model"
    ) -> CostReport:
        """Tokens and cost of the steps since `since`, by model, topology or agent (`_reports.py`)."""
        return await cost_report(self, since=since, by=by)

    # -- human requests -----------------------------------------------------------------------

    async def add_human_request(self, request: HumanRequest) -> None:
        await self.add(request)

    async def find_human_request(self, execution_id: uuid.UUID, key: str) -> HumanRequest | None:
        query = select(HumanRequest).where(HumanRequest.execution_id == execution_id, HumanRequest.key == key)
        async with self.sessions() as session:
            return (await session.exec(query)).first()

    async def get_human_request(self, request_id: uuid.UUID | str) -> HumanRequest:
        try:
            key = request_id if isinstance(request_id, uuid.UUID) else uuid.UUID(str(request_id))
        except ValueError:
            raise NotFoundError(f"{request_id!r} is not a human request id (a UUID)") from None
        async with self.sessions() as session:
            request = await session.get(HumanRequest, key)
        if request is None:
            raise NotFoundError(f"human request {key} not found")
        return request

    async def list_human_requests(
        self, *, execution_id: uuid.UUID | None = None, status: str | None = None
    ) -> list[HumanRequest]:
        query = select(HumanRequest).order_by(col(HumanRequest.created_at))
        if execution_id is not None:
            query = query.where(HumanRequest.execution_id == execution_id)
        if status is not None:
            query = query.where(HumanRequest.status == status)
        async with self.sessions() as session:
            return list((await session.exec(query)).all())

    async def answer_human_request(self, request_id: uuid.UUID | str, response: str) -> HumanRequest:
        """Store a human's answer: exactly once (a write guarded on `pending`), and only before its timeout."""
        if NUL in response:
            raise InvalidConfigError(nul_message("the answer"))
        request = await self.get_human_request(request_id)
        if request.options and response not in request.options:
            raise InvalidConfigError(f"answer one of: {', '.join(request.options)} (got {response!r})")
        if request.status == "pending" and request.timeout_seconds is not None:
            created = (
                request.created_at if request.created_at.tzinfo else request.created_at.replace(tzinfo=UTC)
            )
            if utcnow() > created + timedelta(seconds=request.timeout_seconds):
                await self.expire_human_request(request.id)
                request = await self.get_human_request(request.id)
        answered = await self._execute(
            update(HumanRequest)
            .where(col(HumanRequest.id) == request.id, col(HumanRequest.status) == "pending")
            .values(status="answered", response=response, answered_at=utcnow())
        )
        if not answered:
            current = await self.get_human_request(request.id)
            raise InvalidConfigError(f"human request {current.id} was already {current.status}")
        return await self.get_human_request(request.id)

    async def expire_human_request(self, request_id: uuid.UUID) -> None:
        await self._execute(
            update(HumanRequest)
            .where(col(HumanRequest.id) == request_id, col(HumanRequest.status) == "pending")
            .values(status="timed_out", answered_at=utcnow())
        )


# -- team writes, run by `Database._write` in this thread (SQLite) or on the engine's ------------------


def _save_team(
    session: Session, topology: Topology, agents: Mapping[str, AgentType]
) -> tuple[Topology, dict[str, AgentType]]:
    if session.get_bind().dialect.name == "postgresql":
        # Team saves read then write several tables: one at a time across all processes.
        session.execute(text("SELECT pg_advisory_xact_lock(7170001)"))
    unique = {agent.name: agent for agent in agents.values()}
    by_name = _upsert_agents(session, list(unique.values()))
    stored = _upsert_topology(session, topology)
    assert stored.id is not None
    ids = {name: agent.id for name, agent in by_name.items()}
    wanted = [(slot, ids[agent.name], position) for position, (slot, agent) in enumerate(agents.items())]
    current = session.execute(
        select(TopologyMembership.slot_name, TopologyMembership.agent_id, TopologyMembership.position)
        .where(TopologyMembership.topology_id == stored.id)
        .order_by(col(TopologyMembership.position))
    ).all()
    if [tuple(row) for row in current] != wanted:
        session.execute(delete(TopologyMembership).where(col(TopologyMembership.topology_id) == stored.id))
        session.flush()
        session.add_all(
            TopologyMembership(topology_id=stored.id, agent_id=agent_id, slot_name=slot, position=position)
            for slot, agent_id, position in wanted
        )
    return stored, {slot: by_name[agent.name] for slot, agent in agents.items()}


def _upsert_agents(session: Session, agents: list[AgentType]) -> dict[str, AgentType]:
    """Insert new agents and update changed ones, by name, with one select and one flush."""
    names = [agent.name for agent in agents]
    stored = {a.name: a for a in session.scalars(select(AgentType).where(col(AgentType.name).in_(names)))}
    for agent in agents:
        existing = stored.get(agent.name)
        if existing is None:
            stored[agent.name] = AgentType(**agent.definition())
            session.add(stored[agent.name])
        else:
            _redefine(existing, agent.definition())
    session.flush()
    return stored


def _upsert_topology(session: Session, topology: Topology) -> Topology:
    stored = session.scalars(select(Topology).where(Topology.name == topology.name)).first()
    if stored is None:
        stored = Topology(**topology.definition())
        session.add(stored)
    else:
        _redefine(stored, topology.definition())
    session.flush()
    return stored


def _redefine(stored: AgentType | Topology, definition: dict[str, Any]) -> None:
    """Give a stored row the definition it is saved with now, if that differs (`kubectl apply`)."""
    if stored.definition() != definition:
        for field, value in definition.items():
            setattr(stored, field, value)
        stored.updated_at = utcnow()
