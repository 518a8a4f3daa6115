"""AsyncRunner: independent steps run concurrently, at most `max_concurrent` model calls at once."""

from __future__ import annotations

from typing import Any

from ..topologies import ConcurrentScheduler, Scheduler
from ._base import BaseRunner, runner
from ._config import RunConfig

__all__ = ["AsyncRunner"]


@runner
class AsyncRunner(BaseRunner):
    """Ensemble members, checkers and parallel compounds run at once, bounded by a semaphore."""

    runner_type = "async"

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

    def scheduler(self) -> Scheduler:
        return ConcurrentScheduler(self.max_concurrent)
