"""The step writer's rows, as `sqlite3` gets them, are what SQLAlchemy's conversions make of a record."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import sqlite

from qmcp.agentframework.models import ExecutionStep, StepStatus, table_of
from qmcp.agentframework.store._steps import (
    _COLUMNS,
    StepRecord,
    _params,
    _row,
    _sqlite_statements,
    _utc_text,
)


def _as_sqlalchemy_and_sqlite3_write(value: datetime) -> str:
    """The bind processor, then `sqlite3`'s default adapter (what the writer relied on before)."""
    convert = table_of(ExecutionStep).c.started_at.type.bind_processor(sqlite.dialect())
    assert convert is not None
    converted = convert(value)
    return converted.isoformat(" ") if isinstance(converted, datetime) else converted


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 6, 7, 0, 1, 123456, tzinfo=UTC),
        datetime(2026, 12, 6, 7, 0, 1, tzinfo=UTC),  # no microseconds: none written
        datetime(2026, 12, 6, 9, 30, tzinfo=timezone(timedelta(hours=2, minutes=30))),
    ],
)
def test_a_stored_time_is_written_as_before(value):
    assert _utc_text(value) == _as_sqlalchemy_and_sqlite3_write(value)


def test_a_naive_time_is_refused_and_none_is_null():
    with pytest.raises(ValueError, match="timezone"):
        _utc_text(datetime(2026, 12, 6))
    assert _utc_text(None) is None


def test_a_step_rows_parameters_need_no_adapter_of_sqlite3():
    """Every parameter is a type `sqlite3` takes as it is: its deprecated default adapters are not used."""
    record = StepRecord(
        execution_id=uuid.uuid4(),
        key="ensemble/member:m1",
        slot="m1",
        agent_name="member",
        model="test",
        status=StepStatus.COMPLETED,
        request={"system": "s", "messages": [{"role": "user", "content": "x"}], "settings": {}},
        response="r",
        completed_at=datetime.now(UTC),
    )
    upsert = _sqlite_statements()[0]
    values = _params(upsert, _row(record))
    assert len(values) == len(_COLUMNS)
    assert all(value is None or type(value) in (str, int, float, bytes) for value in values), values
    conn = sqlite3.connect(":memory:")
    assert conn.execute("SELECT ?", (values[upsert[1].index(_COLUMNS.index("started_at"))],)).fetchone()[
        0
    ] == (_as_sqlalchemy_and_sqlite3_write(record.started_at))
