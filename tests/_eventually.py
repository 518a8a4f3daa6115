"""Waiting for something that happens elsewhere (a worker, a subprocess, a heartbeat): one helper,
sync and async, that polls a condition and fails naming what it waited for."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(condition: Callable[[], T], what: str, timeout: float = 60, every: float = 0.05) -> T:
    """The first truthy value of `condition()`, polled every `every` seconds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(every)


async def eventually_async(
    condition: Callable[[], Awaitable[T] | T], what: str, timeout: float = 60, every: float = 0.02
) -> T:
    """`eventually` on the running loop: `condition` may be a coroutine function or a plain one."""
    deadline = time.monotonic() + timeout
    while True:
        value: Any = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        await asyncio.sleep(every)
