"""What both frameworks' implementations share: the case protocol, the model's work, databases."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "TASK",
    "Case",
    "Metrics",
    "Skipped",
    "fresh_postgres",
    "ideal_ensemble_seconds",
    "model_call",
    "model_reply",
    "peak_rss_mb",
    "postgres_url",
    "sqlite_url",
    "stage_prompt",
    "timed",
]

TASK = "Summarise the trade-offs of durable execution for LLM agent teams."
Metrics = dict[str, float]


class Skipped(Exception):
    """A case that cannot run here (a missing backend or executable); the reason is reported."""


class Case(Protocol):
    """One workload on one framework: `setup` once, `run` once per measured run, then `close`."""

    async def setup(self) -> None: ...

    async def run(self) -> Metrics: ...

    async def close(self) -> None: ...


def model_reply(prompt: str) -> str:
    """The scripted model's answer, the same for qmcp's `ScriptedModel` and LangGraph's node function."""
    return f"reply to {len(prompt)} chars: {prompt[-32:]!r}"


async def model_call(prompt: str, latency: float) -> str:
    """The plain async model function LangGraph's nodes call: same latency, same reply."""
    if latency:
        await asyncio.sleep(latency)
    return model_reply(prompt)


def stage_prompt(task: str, index: int, total: int, previous: str | None) -> str:
    """A pipeline stage's prompt: the task and the previous stage's output (as qmcp's pipeline builds it)."""
    parts = [f"Task: {task}"]
    if previous is not None:
        parts.append(f"Output of the previous stage (s{index - 1}):\n{previous}")
    parts.append(f"You are stage {index + 1} of {total} (s{index}). Do your part of the work.")
    return "\n\n".join(parts)


def ideal_ensemble_seconds(members: int, max_concurrent: int, latency: float) -> float:
    """Members in waves of `max_concurrent`, then the aggregator's one call."""
    return math.ceil(members / max_concurrent) * latency + latency


async def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """Await `call()`; return its result and the wall time in seconds."""
    started = time.perf_counter()
    result = await call()
    return result, time.perf_counter() - started


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size of this process, or of its largest finished child (Linux reports KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def sqlite_url(workdir: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{workdir / name}"


def postgres_url() -> str | None:
    """The PostgreSQL server to benchmark on: QMCP_BENCH_POSTGRES_URL, else QMCP_TEST_POSTGRES_URL."""
    return os.environ.get("QMCP_BENCH_POSTGRES_URL") or os.environ.get("QMCP_TEST_POSTGRES_URL")


@contextlib.asynccontextmanager
async def fresh_postgres(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on `server_url` for the duration of the block."""
    import asyncpg

    admin = server_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"qmcp_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
