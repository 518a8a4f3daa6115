"""The server's retention schedule (`QMCP_RETENTION`): a background task of the lifespan that prunes
old finished executions every interval, as the operator, and logs what each prune did.

It prunes once at start-up, then every `interval`. Stopping asks the prune in progress to end after
its current batch (nothing half-deleted), then waits for it. A prune that fails (the database busy or
gone) is logged, and the next interval tries again: retention never stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..agentframework.errors import QmcpError
from ..agentframework.store import Database, storage_errors
from ..app import Caller, Door, PruneReport, RetentionPolicy, prune_executions
from ..observability import get_logger

__all__ = ["RetentionTask"]


class RetentionTask:
    """`start(db)` in the lifespan, `await close()` on its way out."""

    def __init__(self, policy: RetentionPolicy) -> None:
        self.policy = policy
        self.runs = 0
        """Prunes done (failed ones included): how a test sees the schedule turn."""
        self.last: PruneReport | None = None
        self.pruned = 0
        """Executions deleted since the server started."""
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger("qmcp.server")

    def start(self, db: Database) -> None:
        self._task = asyncio.create_task(self._loop(db), name="qmcp-retention")

    async def close(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _loop(self, db: Database) -> None:
        interval = self.policy.interval.total_seconds()
        while not self._stopping.is_set():
            await self._prune(db)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)

    async def _prune(self, db: Database) -> None:
        try:
            with storage_errors(db.url):
                report = await prune_executions(
                    db, self.policy.request, Caller.operator(Door.HTTP), stop=self._stopping.is_set
                )
        except QmcpError as error:  # the database failing: one line, and the next interval tries again
            self._log.error("retention.failed", error=str(error))
        else:
            self.last = report
            self.pruned += report.executions
            self._log.info(
                "retention.pruned",
                executions=report.executions,
                steps=report.steps,
                usage_rows=report.usage_rows,
                human_requests=report.human_requests,
                kept_parents=report.kept_parents,
                bytes_reclaimed=report.bytes_reclaimed,
                compaction=report.compaction,
            )
        finally:
            self.runs += 1
