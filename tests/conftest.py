"""Shared fixtures: a fresh database per test (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from qmcp.agentframework.llm import ScriptedModel, register_model, unregister_model
from qmcp.agentframework.models import AgentConfig, AgentRole, AgentType

POSTGRES_URL = os.environ.get("QMCP_TEST_POSTGRES_URL")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No test sees the developer's database, override or keys."""
    for name in ("QMCP_DATABASE_URL", "QMCP_MODEL_OVERRIDE", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QMCP_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/default.db")


async def _postgres_database() -> tuple[str, Callable[[], Any]]:
    import asyncpg

    base = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")  # type: ignore[union-attr]
    name = f"qmcp_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(base)
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
