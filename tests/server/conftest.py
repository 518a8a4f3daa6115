"""The server for its tests: in this process (`start_app`: the ASGI app on the test's event loop, driven
by httpx's ASGITransport) or, for what only a process shows, in a subprocess (`start_server`: `qmcp serve`
through `server_driver.py` on a free loopback port)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _eventually import eventually
from _signals import default_signals
from doubles import Doubles
from fastapi import FastAPI
from serving import HERE, App, Server, driver_argv, free_port, in_process_client

from qmcp.server import ServerOptions, create_app


@pytest.fixture
def doubles() -> Iterator[Doubles]:
    """The doubles `server_driver.py` registers (`scripted:slow`, `scripted:stream`, two tools), here."""
    registered = Doubles()
    registered.register()
    yield registered
    registered.unregister()


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan, entered and left in one task of its own (the MCP session manager's task
    group must be; pytest-asyncio sets a fixture up and tears it down in different tasks)."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def live() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(live(), name="qmcp-test-app-lifespan")
    up = asyncio.create_task(started.wait())
    await asyncio.wait([task, up], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        up.cancel()
        task.result()  # the start failed: its error
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture
async def start_app(doubles: Doubles) -> AsyncIterator[Callable[..., Awaitable[App]]]:
    """start_app(db_url, model=None, token=None, **ServerOptions fields) -> the app, its lifespan entered
    (its workers run on the test's loop) and a client; everything is closed after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            db_url: str, *, model: str | None = None, token: str | None = None, **options: Any
        ) -> App:
            settings = ServerOptions.from_settings(
                db_url=db_url,
                model_override=model,
                api_token=token,
                shutdown_grace_seconds=options.pop("shutdown_grace_seconds", 0.2),
                **options,
            )
            app = create_app(settings)
            await stack.enter_async_context(_lifespan(app))
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            client = await stack.enter_async_context(in_process_client(app, headers=headers))
            return App(app, db_url, client)

        yield start


@pytest.fixture
def start_server(tmp_path: Path, worker_env_server: dict[str, str]) -> Iterator[Callable[..., Server]]:
    """start_server(db_url, *serve_args, env={...}, model=None) -> a running server (stopped after the
    test); `model` is the server's `--model` override (agents otherwise run on their own models)."""
    started: list[Server] = []

    def start(
        db_url: str,
        *serve_args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        model: str | None = None,
    ) -> Server:
        port = port or free_port()
        log = tmp_path / f"server-{len(started)}.log"
        calls = tmp_path / "calls.log"
        environ = {
            **worker_env_server,
            "QMCP_DATABASE_URL": db_url,
            "DRIVER_CALL_LOG": str(calls),
            "QMCP_SHUTDOWN_GRACE_SECONDS": "5",
            **(env or {}),
        }
        process = subprocess.Popen(
            driver_argv(*(["--model", model] if model else []), "serve", "--port", str(port), *serve_args),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
            env=environ,
            cwd=tmp_path,
            preexec_fn=default_signals,  # SIGINT stops it even when pytest runs as a background job
        )
        server = Server(
            f"http://127.0.0.1:{port}", db_url, process, log, calls, environ.get("QMCP_API_TOKEN")
        )
        started.append(server)

        def healthy() -> bool:
            assert process.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
            try:
                return httpx.get(f"{server.url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually(healthy, f"the server to start (its log: {log})", every=0.1)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def worker_env_server() -> dict[str, str]:
    """Subprocesses import this tree's qmcp (not another editable install)."""
    path = [str(HERE.parents[1]), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures know at teardown whether the test failed
    (the browser tests save a screenshot then)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
