"""The server's GETs only read: on a database opened read-only, an execution whose owner is gone
lists and shows `interrupted` (in-process, through httpx's ASGI transport)."""

from __future__ import annotations

from pathlib import Path

import httpx

from qmcp.agentframework.models import Execution
from qmcp.agentframework.store import Database, Owner, close_engines
from qmcp.server import ServerOptions, create_app


async def _left_running(path: Path) -> str:
    """An execution whose owner's pid is gone, left `running` in its row."""
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # a pid no process can have
    async with Database(f"sqlite+aiosqlite:///{path}") as db:
        execution = Execution(topology_name="t", topology_type="pipeline", input_data={"prompt": "x"})
        await db.executions.create(execution, Owner.this_process(pid=gone), runner="local")
    close_engines()
    return str(execution.id)


async def test_gets_show_interrupted_on_a_database_that_cannot_be_written(tmp_path):
    path = tmp_path / "q.db"
    execution_id = await _left_running(path)
    url = f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"  # SQLite refuses every write through it
    app = create_app(ServerOptions.from_settings(db_url=url, resume_interrupted=False))
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
            ) as client,
        ):
            listed = (await client.get("/v1/executions", params={"status": "interrupted"})).json()
            assert [e["id"] for e in listed["executions"]] == [execution_id] and listed["total"] == 1
            running = (await client.get("/v1/executions", params={"status": "running"})).json()
            assert running["executions"] == [] and running["total"] == 0
            shown = await client.get(f"/v1/executions/{execution_id}")
            assert shown.status_code == 200 and shown.json()["status"] == "interrupted", shown.text
            page = await client.get("/", params={"status": "interrupted"})  # the console
            assert page.status_code == 200 and execution_id in page.text
    finally:
        close_engines()
    async with Database(f"sqlite+aiosqlite:///{path}") as db:
        assert (await db.stored_execution(execution_id)).status == "running"  # nothing was written
    close_engines()


async def test_reads_run_on_the_event_loop_without_a_thread_hop(tmp_path, monkeypatch):
    """The routes' dependencies (state, database, caller) are coroutines: FastAPI would run a plain
    `def` one in its thread pool, a round trip to a worker thread on every request."""
    import fastapi.dependencies.utils

    path = tmp_path / "q.db"
    execution_id = await _left_running(path)

    async def no_thread_pool(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a dependency ran in the thread pool")

    monkeypatch.setattr(fastapi.dependencies.utils, "run_in_threadpool", no_thread_pool)
    app = create_app(
        ServerOptions.from_settings(db_url=f"sqlite+aiosqlite:///{path}", resume_interrupted=False)
    )
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
            ) as client,
        ):
            shown = await client.get(f"/v1/executions/{execution_id}")
            assert shown.status_code == 200 and shown.json()["status"] == "interrupted", shown.text
            assert (await client.get("/health")).status_code == 200  # the server's state
            created = await client.post("/v1/agents", json={"name": "a1", "role": "writer"})  # the caller
            assert created.status_code in (200, 201), created.text
        # the caller's door is the server's to say: no query parameter picks it (`?door=console`)
        operations = [op for path in app.openapi()["paths"].values() for op in path.values()]
        assert not [p for op in operations for p in op.get("parameters", []) if p["name"] == "door"]
    finally:
        close_engines()
