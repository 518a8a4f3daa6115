"""AsyncRunner: independent steps run concurrently, at most `max_concurrent` model calls at once."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from ..topologies import ConcurrentScheduler, Scheduler
from ._base import BaseRunner, runner
from ._config import RunConfig

__all__ = ["AsyncRunner"]


@runner
class AsyncRunner(BaseRunner):
    """Ensemble members, checkers and parallel compounds run at once.

    `max_concurrent` bounds this runner's model calls in flight across every execution it runs at
    the same time (one semaphore per event loop), not each execution on its own.
    """

    runner_type = "async"
    option_names = ("max_concurrent",)

    def __init__(
        self,
        config: RunConfig | None = None,
        db_url: str | None = None,
        max_concurrent: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config=config, db_url=db_url, **kwargs)
        self.max_concurrent = max_concurrent or self.config.max_concurrent or 10
        if self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def options(self) -> dict[str, Any]:
        return {"max_concurrent": self.max_concurrent}

    def scheduler(self) -> Scheduler:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:  # a semaphore belongs to the loop it first waits in
            slots = self._slots[loop] = asyncio.Semaphore(self.max_concurrent)
        return ConcurrentScheduler(
            self.max_concurrent, slots, freeze_heap_above=self.config.freeze_heap_above
        )
