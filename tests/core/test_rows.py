"""Rows read by primary key straight from the SQLite driver (`RowReader`) are what the ORM loads."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import inspect

from qmcp.agentframework.errors import NotFoundError
from qmcp.agentframework.models import Execution, HumanRequest
from qmcp.agentframework.store import Database, Owner


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
