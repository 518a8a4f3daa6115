"""Rows read by primary key straight from the SQLite driver (`RowReader`) are what the ORM loads;
rows inserted with it (`RowInserter`) are what the ORM stores; `new_row` makes what the model makes."""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import uuid
import weakref

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from qmcp.agentframework.errors import NotFoundError
from qmcp.agentframework.models import Execution, ExecutionStatus, HumanRequest, new_row
from qmcp.agentframework.store import Database, Owner, _rows


async def test_a_row_read_from_the_driver_is_the_row_the_orm_loads(db_url):
    async with Database(db_url) as db:
        execution = Execution(
            topology_name="t",
            topology_type="pipeline",
            input_data={"prompt": "x", "nested": {"n": [1, 2.5, None]}},
            run_config={"max_retries": 2},
        )
        await db.executions.create(execution, Owner.this_process(), runner="local")
        read = await db.stored_execution(execution.id)
        assert await db.stored_execution(str(execution.id)) is not read  # read again, never cached
        async with db.sessions() as session:  # the ORM (on PostgreSQL `_get` is the ORM too)
            loaded = await session.get(Execution, execution.id)
        assert loaded is not None
        for name in Execution.model_fields:
            assert getattr(read, name) == getattr(loaded, name), name
            assert type(getattr(read, name)) is type(getattr(loaded, name)), name
        assert inspect(read).detached  # as one a closed session loaded
        read.status = "completed"  # its attributes are the ORM's, and may be set (as `observed` does)
        assert read.created_at.tzinfo is not None
        with pytest.raises(NotFoundError):
            await db.stored_execution(uuid.uuid4())
        request = HumanRequest(id="h1", request_type="approval", prompt="ok?", execution_id=execution.id)
        await db.create_human_request(request)
        assert (await db.get_human_request("h1")).prompt == "ok?"


def _values() -> dict[str, object]:
    return {
        "topology_name": "t",
        "topology_type": "pipeline",
        "input_data": {"prompt": "x", "nested": {"n": [1, 2.5, None]}},
        "agents_snapshot": {"a": {"name": "w", "config": {"model": "test"}}},
        "run_config": {"max_retries": 2},
        "origin": "server",
    }


def test_new_row_makes_what_the_model_makes():
    """`new_row` puts the values in place as a load does: the same fields, defaults and fields set as
    `Execution(**values)`, and refuses a field the model does not have instead of dropping it."""
    made, built = new_row(Execution, **_values()), Execution(**_values())
    for name in Execution.model_fields:
        if name not in ("id", "created_at", "started_at"):  # new for each row
            assert getattr(made, name) == getattr(built, name), name
    assert made.id != new_row(Execution, **_values()).id  # a default factory runs for each row
    assert made.history is not new_row(Execution, **_values()).history
    assert made.model_fields_set == built.model_fields_set
    assert made.model_dump(exclude={"id", "created_at", "started_at"}) == built.model_dump(
        exclude={"id", "created_at", "started_at"}
    )
    assert inspect(made).transient  # never saved, as `Execution(...)`
    made.status = ExecutionStatus.RUNNING  # its attributes are the ORM's
    assert made.status == ExecutionStatus.RUNNING
    with pytest.raises(TypeError, match="no field statuss"):
        new_row(Execution, **_values(), statuss="running")
    with pytest.raises(TypeError, match="needs topology_type"):
        new_row(Execution, topology_name="t")


def _stored(path: object, execution_id: uuid.UUID) -> tuple[object, ...]:
    with contextlib.closing(sqlite3.connect(str(path))) as conn:
        row = conn.execute("SELECT * FROM executions WHERE id = ?", (execution_id.hex,)).fetchone()
    assert row is not None
    return tuple(row)


async def test_an_execution_inserted_by_the_driver_is_stored_as_the_orm_stores_it(sqlite_url, tmp_path):
    """A run start's execution is written with the SQLite driver (`RowInserter`): byte for byte the
    row the ORM's unit of work writes from the same values (JSON, UUID, times, enums)."""
    async with Database(sqlite_url) as db:
        fast = new_row(Execution, **_values())
        await db.executions.create(fast, Owner.this_process(), runner="local")
        assert ("insert", Execution) in _rows._MADE[db._inline]  # written by the driver
        slow = new_row(Execution, **_values())
        for name in ("status", "attempts", "created_at", "started_at", "lease_until", "heartbeat_at"):
            setattr(slow, name, getattr(fast, name))
        for name, value in Owner.this_process().values.items():
            setattr(slow, name, value)
        slow.owner_token, slow.history = fast.owner_token, fast.history
        async with db.sessions() as session:  # the unit of work's insert
            session.add(slow)
            await session.commit()
    by_driver, by_orm = _stored(tmp_path / "qmcp.db", fast.id), _stored(tmp_path / "qmcp.db", slow.id)
    assert by_driver[1:] == by_orm[1:]
    assert [type(value) for value in by_driver] == [type(value) for value in by_orm]


async def test_a_refused_insert_by_the_driver_raises_as_sqlalchemy_does_and_writes_nothing(
    sqlite_url, tmp_path
):
    """Callers catch SQLAlchemy's errors (a fork whose parent was pruned: `IntegrityError`), and a
    refused insert leaves no row and no open transaction in the pooled connection."""
    async with Database(sqlite_url) as db:
        first = new_row(Execution, **_values())
        await db.executions.create(first, None, runner="local")
        again = new_row(Execution, **_values(), id=first.id)
        with pytest.raises(IntegrityError):
            await db.executions.create(again, None, runner="local")
        orphan = new_row(Execution, **_values(), parent_id=uuid.uuid4())  # a fork of a pruned parent
        with pytest.raises(NotFoundError):
            await db.executions.create(orphan, None, runner="local")
        with pytest.raises(NotFoundError):
            await db.stored_execution(orphan.id)
        later = new_row(Execution, **_values())
        await db.executions.create(later, None, runner="local")  # the connection was given back clean
        assert (await db.stored_execution(later.id)).status == ExecutionStatus.PENDING
    with contextlib.closing(sqlite3.connect(str(tmp_path / "qmcp.db"))) as conn:
        assert conn.execute("SELECT count(*) FROM executions").fetchone()[0] == 2


def test_readers_and_inserters_are_made_once_per_engine_and_go_with_it():
    """Each run opens a `Database` of its own: the compiled reader is the engine's, not the Database's."""
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    reader = _rows.row_reader(Execution, engine, ("topology_snapshot",))
    assert _rows.row_reader(Execution, engine, ("topology_snapshot",)) is reader
    assert _rows.row_reader(Execution, engine) is not reader
    assert _rows.row_inserter(Execution, engine) is _rows.row_inserter(Execution, engine)
    gone = weakref.ref(engine)
    engine.dispose()
    del engine
    gc.collect()
    assert gone() is None  # nothing made for it holds it
