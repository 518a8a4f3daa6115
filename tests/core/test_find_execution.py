"""`Database.find_execution`: an execution by its id or a unique start of it, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from qmcp.agentframework.errors import NotFoundError
from qmcp.agentframework.models import Topology
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.store import Database


async def test_ids_prefixes_and_ambiguity(db_url, agent):
    runner = LocalRunner(db_url=db_url)
    team = {"only": agent("solo", "writer")}
    topology = Topology(name="one", topology_type="pipeline")
    ids: list[str] = []
    while len(ids) < 3 or len({i[0] for i in ids}) == len(ids):  # until two share a first digit
        ids.append(str((await runner.run(topology, team, {"prompt": "x"})).execution_id))
        assert len(ids) < 40
    async with Database(db_url) as db:
        for execution_id in ids:
            assert str((await db.find_execution(execution_id)).id) == execution_id
            assert str((await db.find_execution(execution_id.upper()[:13])).id) == execution_id
            assert str((await db.find_execution(execution_id.replace("-", "")[:12])).id) == execution_id
        shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
        with pytest.raises(NotFoundError, match="give more of the id"):
            await db.find_execution(shared)
        with pytest.raises(NotFoundError, match="not an execution id"):
            await db.find_execution("xyz")
        with pytest.raises(NotFoundError, match="not an execution id"):
            await db.find_execution("")
        unused = next(c for c in "0123456789abcdef" if not any(i.startswith(c) for i in ids))
        with pytest.raises(NotFoundError, match="no execution id starts with"):
            await db.find_execution(unused)
