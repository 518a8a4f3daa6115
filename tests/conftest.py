"""Shared fixtures: a fresh database per test (SQLite always, PostgreSQL when configured); the tiers.

The fast tier (`pytest -m "not slow"`) runs in this process only. A test that starts a process is
`slow`: the fixtures that start processes mark their tests (`SPAWNING_FIXTURES`), a test that starts
one itself says so with `@pytest.mark.slow`, and a fast test that starts one anyway fails.
"""

from __future__ import annotations

import os
import platform
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from qmcp.agentframework.llm import ScriptedModel, register_model, unregister_model
from qmcp.agentframework.models import AgentConfig, AgentRole, AgentType

POSTGRES_URL = os.environ.get("QMCP_TEST_POSTGRES_URL")

SPAWNING_FIXTURES = frozenset(
    {
        "browser",  # server/test_console_browser.py: chromium and its driver
        "start_server",  # server/conftest.py: `qmcp serve` through server_driver.py
        "worker_env_server",  # server/conftest.py: the environment of such processes
        "qmcp_exe",  # cli/conftest.py: the installed `qmcp` console script
        "run_qmcp",  # cli/conftest.py: it, run on the test's database
        "run_qmcp_env",  # llm/test_connection_errors.py: it, with a provider's environment
        "worker_env",  # reliability/conftest.py: the environment of worker processes
        "worker",  # reliability/test_kill_resume.py: a worker killed mid-run
        "qmcp",  # reliability/test_processes_ownership.py: `qmcp` processes sharing a database
    }
)

platform.processor()  # cached for the session: its one-off `uname -p` is no test's process


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that uses a fixture starting processes (before `-m` selects)."""
    for item in items:
        if SPAWNING_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A test outside the slow tier that starts a process fails, naming the process."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    started: list[str] = []
    execute = subprocess.Popen._execute_child

    def record(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> Any:
        started.append(args if isinstance(args, str | bytes) else " ".join(map(str, args)))
        return execute(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", record)
    yield
    assert not started, (
        f"this test is in the fast tier but started a process ({str(started[0])[:200]!r}): "
        "mark it @pytest.mark.slow, or use a fixture of SPAWNING_FIXTURES"
    )


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No test sees the developer's database, override or keys."""
    for name in ("QMCP_DATABASE_URL", "QMCP_MODEL_OVERRIDE", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QMCP_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/default.db")


async def _postgres_database() -> tuple[str, Callable[[], Any]]:
    """A new database of its own on the test server; the test is skipped, with one line saying why,
    when the server refuses connections (not running, or out of connection slots)."""
    import asyncpg

    base = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")  # type: ignore[union-attr]
    name = f"qmcp_t_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(base, timeout=10)
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as error:
        pytest.skip(
            f"PostgreSQL at QMCP_TEST_POSTGRES_URL refuses connections: {type(error).__name__}: {error}"
        )
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(base)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}", drop  # type: ignore[union-attr]


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """A fresh, empty database: SQLite in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/qmcp.db"
        return
    if not POSTGRES_URL:
        pytest.skip("QMCP_TEST_POSTGRES_URL is not set")
    url, drop = await _postgres_database()
    try:
        yield url
    finally:
        await drop()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/qmcp.db"


@pytest.fixture
def scripted() -> Iterator[Callable[..., tuple[str, ScriptedModel]]]:
    """Register scripted models under unique model strings; returns (model string, model)."""
    names: list[str] = []

    def make(**kwargs: Any) -> tuple[str, ScriptedModel]:
        name = f"scripted:{uuid.uuid4().hex[:8]}"
        model = ScriptedModel(name=name, **kwargs)
        register_model(name, model.model)
        names.append(name)
        return name, model

    yield make
    for name in names:
        unregister_model(name)


def make_agent(
    name: str,
    role: AgentRole | str = AgentRole.SPECIALIST,
    model: str = "test",
    description: str | None = None,
    **config: Any,
) -> AgentType:
    return AgentType(
        name=name,
        description=description if description is not None else f"{name} for tests",
        role=role,
        config=AgentConfig(model=model, **config).model_dump(),
    )


@pytest.fixture
def agent() -> Callable[..., AgentType]:
    """Builds an agent definition: agent(name, role=..., model=..., **AgentConfig fields)."""
    return make_agent
