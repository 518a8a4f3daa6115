"""`Attempt`: one process's attempt at an execution it owns, from its claim to the end it writes.

Every way qmcp runs an execution goes through it: the in-process runners (`BaseRunner`), the
Metaflow runner (whose work is the flow's process) and the steps of a generated flow
(`metaflow_helpers`). The attempt's work runs as a task of its own while a heartbeat keeps the
lease; a cancel request, an interrupt or a lost lease cancels that task (in-flight model calls
included) without cancelling the caller; the end is written through the execution service, which
writes it only while this owner holds the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from opentelemetry import trace as otel_trace

from ...observability import (
    METRICS,
    GenAI,
    RunLogger,
    get_logger,
    log_context,
    mark_failed,
    record_failure,
    tracer,
)
from ...redaction import redact
from ..errors import (
    ExecutionPaused,
    HumanRejectedError,
    NonDeterminismError,
    PermanentModelError,
    QmcpError,
    StepFailedError,
    UserInputError,
)
from ..models import Execution, ExecutionStatus, Usage
from ..store import Database, Lease, as_storage_error
from ._config import RunResult

__all__ = ["Attempt", "Ending", "run_result"]

T = TypeVar("T")


@dataclass(frozen=True)
class Ending:
    """How an attempt ends: the status it writes, with the run's output or the reason it stopped."""

    status: ExecutionStatus
    output: dict[str, Any] | None = None
    error: str | None = None
    human_request_id: str | None = None
    """The request a run paused at a human gate waits for."""
    error_type: str | None = None
    """The class of the error that ended the run (the workflow span's `error.type`)."""
    permanent: bool = False
    """It failed for a cause a resume as it is meets again (see `RunResult.permanent`)."""

    def __post_init__(self) -> None:
        # The error is stored, printed and streamed: an error quoting a secret loses it here.
        if self.error is not None:
            object.__setattr__(self, "error", redact(self.error))

    @classmethod
    def of_error(cls, error: BaseException, url: str | None = None) -> Ending:
        """The end of an execution whose work raised `error` (`url`: its database, to tell storage failures)."""
        storage = as_storage_error(error, url) if url is not None and isinstance(error, Exception) else None
        if storage is not None:
            return cls(ExecutionStatus.FAILED, error=str(storage), error_type=type(storage).__qualname__)
        if isinstance(error, ExecutionPaused):
            return cls(ExecutionStatus.PAUSED, error=str(error), human_request_id=error.request_id)
        if isinstance(error, HumanRejectedError):
            return cls(ExecutionStatus.CANCELLED, error=str(error))
        kind = type(error).__qualname__
        if isinstance(error, QmcpError):
            return cls(ExecutionStatus.FAILED, error=str(error), error_type=kind, permanent=_permanent(error))
        return cls(
            ExecutionStatus.FAILED, error=f"internal error: {type(error).__name__}: {error}", error_type=kind
        )


def _permanent(error: QmcpError) -> bool:
    """A cause that a resume as it is meets again: a model's permanent refusal (a key, a model name),
    a team changed since the run began, a setting the user must fix."""
    cause = error.cause if isinstance(error, StepFailedError) else error
    return isinstance(cause, PermanentModelError | NonDeterminismError | UserInputError)


class Attempt:
    """This process's attempt at `execution`, which it holds `lease` on.

    `usage` is the attempt's running totals when this process makes its steps (its span reports them;
    the execution's totals are counted from every attempt's usage rows when it ends); None when other
    processes record theirs (a Metaflow flow's tasks). `releases`:
    whether ending the attempt gives the lease up (False for a flow's step acting for the runner
    that claimed the execution).
    """

    def __init__(
        self,
        db: Database,
        execution: Execution,
        lease: Lease,
        *,
        usage: Usage | None = None,
        releases: bool = True,
        log: RunLogger | None = None,
        metrics: bool = False,
    ) -> None:
        self.db = db
        self.execution = execution
        self.lease = lease
        self.usage = usage
        self.releases = releases
        self.log = log or get_logger()
        self.metrics = metrics
        self.work: asyncio.Task[Any] | None = None
        self.interrupted = False
        """Stopped to be resumed later (`interrupt`), not cancelled."""

    @property
    def resume_hint(self) -> str:
        return f"resume with: qmcp executions resume {self.execution.id}"

    def cancel(self) -> None:
        """A cancel request reached this process: stop the work now rather than at the next heartbeat."""
        self.lease.cancel_requested = True
        if self.work is not None:
            self.work.cancel()

    def interrupt(self) -> None:
        """Stop the work so that the run can be resumed later (a server shutting down)."""
        self.interrupted = True
        if self.work is not None:
            self.work.cancel()

    async def wait(self, work: Coroutine[Any, Any, T], time_limit: float | None = None) -> T:
        """Run `work` as this attempt's task while the heartbeat keeps the lease; its result.

        A cancel request or a lost lease cancels the task (the caller sees `CancelledError`), as
        does `time_limit` seconds (`TimeoutError`).
        """
        task: asyncio.Task[T] = asyncio.create_task(work)
        self.work = task
        try:
            async with self.lease.kept(on_stop=task.cancel), asyncio.timeout(time_limit):
                return await task
        finally:
            if not task.done():
                task.cancel()

    async def outcome(self, work: Coroutine[Any, Any, Ending], time_limit: float | None) -> Ending:
        """How `work` ended the run: its own ending, a timeout, a cancel, an interrupt or its error.

        When the task running this is cancelled (Ctrl-C, the caller), the end is written as
        `cancelled` and the cancel goes on.
        """
        try:
            return await self.wait(work, time_limit)
        except TimeoutError:
            return Ending(
                ExecutionStatus.FAILED,
                error=f"timed out after {time_limit:g}s; completed steps are kept, {self.resume_hint}",
                error_type=TimeoutError.__qualname__,
            )
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                await asyncio.shield(
                    self.end(Ending(ExecutionStatus.CANCELLED, error=f"cancelled; {self.resume_hint}"))
                )
                raise
            if self.interrupted:
                return Ending(
                    ExecutionStatus.INTERRUPTED, error=f"interrupted: its process stopped; {self.resume_hint}"
                )
            return Ending(ExecutionStatus.CANCELLED, error=f"cancelled by request; {self.resume_hint}")
        except Exception as failure:
            ending = Ending.of_error(failure, self.db.url)
            if not isinstance(failure, QmcpError) and (ending.error or "").startswith("internal error"):
                self.log.info("run.internal_error", exc_info=failure)  # the traceback, with --verbose
            return ending

    async def record(self, ending: Ending) -> tuple[datetime, int, Usage] | None:
        """Write `ending` through the execution service (which counts the execution's usage rows); None
        when nothing was written (the lease was lost, or another process of this owner ended the run)."""
        return await self.db.executions.finish(
            self.lease,
            ending.status,
            output=ending.output,
            error=ending.error,
            release=self.releases,
            human_request_id=ending.human_request_id,
        )

    async def end(self, ending: Ending) -> RunResult:
        """End the attempt as long as this process still owns the execution, and report the run.

        When another process of this owner ended it already (a step of a Metaflow flow: completed,
        paused for a human, failed), its end is kept, with our error if both failed, and the lease
        given up. A database that cannot record the end leaves the lease to expire: the execution
        then reads as interrupted.
        """
        execution, lease = self.execution, self.lease
        vanished = self.db.vanished()
        if vanished is not None:  # writing the end would go to a file nobody can open again
            self.log.info("run.unrecorded_end", error=vanished)
            return run_result(execution).model_copy(
                update={"status": ExecutionStatus.FAILED, "error": vanished}
            )
        if lease.lost is None:
            try:
                ended = await self.record(ending)
                if ended is None and lease.lost is None:
                    current = await self.db.get_execution(execution.id)
                    failed = current.status == ExecutionStatus.FAILED == ending.status
                    await self.db.executions.release(lease, error=ending.error if failed else None)
            except Exception as failure:
                storage = as_storage_error(failure, self.db.url)
                if storage is None:
                    raise
                self.log.info("run.unrecorded_end", error=str(storage))
                unrecorded = f"{ending.error or storage}; the end of this run could not be recorded either"
                return run_result(execution).model_copy(
                    update={"status": ExecutionStatus.FAILED, "error": unrecorded}
                )
            if ended is not None and self.metrics:
                METRICS.runs.labels(execution.topology_type, str(ending.status)).inc()
            if ended is not None and self.usage is not None:  # all the attempt wrote is known here
                execution.completed_at, ran, totals = ended
                execution.status, execution.output_data = ending.status, ending.output
                execution.error, execution.human_request_id = ending.error, ending.human_request_id
                execution.duration_ms = (execution.duration_ms or 0) + ran
                execution.requests, execution.input_tokens = totals.requests, totals.input_tokens
                execution.output_tokens, execution.cost_usd = totals.output_tokens, totals.cost_usd
                return run_result(execution)
            if lease.lost is None:
                return run_result(await self.db.get_execution(execution.id))
        # Another process owns the execution now: report what it shows, and why we stopped.
        return run_result(await self.db.get_execution(execution.id)).model_copy(update={"error": lease.lost})

    async def run(
        self,
        work: Coroutine[Any, Any, Ending],
        *,
        runner_type: str,
        time_limit: float | None,
        trace: bool,
        replayable: int,
    ) -> RunResult:
        """The whole attempt: `work` under the heartbeat, then its end, logged and (with `trace`) in
        the workflow's span."""
        with self.context(runner_type, trace=trace):
            self.log.info(
                "run.start", topology=self.execution.topology_name, runner=runner_type, replayable=replayable
            )
            ending = await self.outcome(work, time_limit)
            result = await self.end(ending)
            if ending.permanent and result.status == ExecutionStatus.FAILED:
                result = result.model_copy(update={"permanent": True})
            if trace:
                _end_span(otel_trace.get_current_span(), result, ending, self.usage)
            self.log.info(
                "run.end", status=str(result.status), error=result.error, duration_ms=result.duration_ms
            )
        return result

    @contextlib.contextmanager
    def context(self, runner_type: str, *, trace: bool) -> Iterator[None]:
        """The attempt's log context and (with `trace`) its `invoke_workflow <topology>` span, which
        the spans of its steps (and a Metaflow flow's, through `TRACEPARENT`) are children of."""
        execution = self.execution
        with (
            log_context(execution_id=str(execution.id), correlation_id=execution.correlation_id),
            tracer.start_as_current_span(
                f"{GenAI.INVOKE_WORKFLOW} {execution.topology_name}",
                attributes={
                    GenAI.OPERATION_NAME: GenAI.INVOKE_WORKFLOW,
                    GenAI.WORKFLOW_NAME: execution.topology_name,
                    "qmcp.execution_id": str(execution.id),
                    "qmcp.correlation_id": execution.correlation_id or "",
                    "qmcp.topology.type": execution.topology_type,
                    "qmcp.runner": runner_type,
                },
                record_exception=False,  # by hand, redacted (`record_failure`)
                set_status_on_exception=False,
            )
            if trace
            else contextlib.nullcontext() as span,
        ):
            try:
                yield
            except Exception as error:  # the end could not be written (a cancel is no failure)
                if span is not None:
                    record_failure(span, error)
                raise


def _end_span(span: otel_trace.Span, result: RunResult, ending: Ending, usage: Usage | None) -> None:
    """The workflow span's end: what the attempt paid, the run's status, and ERROR when it failed
    (with the class of the error that failed it; `_OTHER` when the run failed elsewhere, say in a
    Metaflow task)."""
    if usage is not None:
        span.set_attributes(usage.opentelemetry_attributes())
    span.set_attribute("qmcp.execution.status", str(result.status))
    if result.status == ExecutionStatus.FAILED:
        failed_here = ending.status == ExecutionStatus.FAILED
        mark_failed(span, ending.error_type if failed_here else None, result.error)


def run_result(execution: Execution) -> RunResult:
    """What a run reports, read from its execution."""
    return RunResult(
        execution_id=execution.id,
        status=execution.status,
        output=execution.output_data,
        error=execution.error,
        started_at=execution.started_at,
        completed_at=execution.completed_at,
        duration_ms=execution.duration_ms,
        runner_type=execution.runner_type,
        topology_name=execution.topology_name,
        correlation_id=execution.correlation_id,
        usage=execution.usage,
        human_request_id=execution.human_request_id,
    )
