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
    _row,
    _sqlite_statements,
    _step_values,
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
    values = _step_values(upsert)(_row(record))
    assert len(values) == len(_COLUMNS)
    assert all(value is None or type(value) in (str, int, float, bytes) for value in values), values
    conn = sqlite3.connect(":memory:")
    assert conn.execute("SELECT ?", (values[upsert[1].index(_COLUMNS.index("started_at"))],)).fetchone()[
        0
    ] == (_as_sqlalchemy_and_sqlite3_write(record.started_at))


def _by_each_columns_converter(row: tuple) -> list:
    """A row's parameters as the upsert's columns' own converters make them, one call per value."""
    _, order, converters = _sqlite_statements()[0]
    values = [row[index] for index in order]
    for position, convert in converters:
        values[position] = convert(values[position])
    return values


@pytest.mark.parametrize(
    "record",
    [
        StepRecord(
            uuid.uuid4(), "k", "s", "a", "m",
            request={"system": "s", "messages": [{"role": "user", "content": "x"}], "settings": {}},
            response="r", completed_at=datetime.now(UTC), latency_ms=3.25,
        ),
        StepRecord(
            uuid.uuid4(), "k", "s", "a", "m", status=StepStatus.FAILED, output={"data": {"a": [1]}},
            error="e", cost_usd=1, latency_ms=2, inherited=True,
            started_at=datetime(2026, 12, 6, 9, 30, tzinfo=timezone(timedelta(hours=2))),
        ),
        StepRecord(uuid.uuid4(), "k", "s", "a", "m", status="COMPLETED", request={}, output={}),  # type: ignore[arg-type]
    ],
)  # fmt: skip
def test_a_step_rows_parameters_are_what_each_columns_converter_makes(record):
    """`_step_values` converts the usual values in line, and leaves the rest to the converters."""
    row = _row(record)
    values = _step_values(_sqlite_statements()[0])(row)
    expected = _by_each_columns_converter(row)
    assert list(values) == expected
    assert [type(value) for value in values] == [type(value) for value in expected]
