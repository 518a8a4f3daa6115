"""Server-Sent Events of an execution: what happened before the client connected, then what happens.

Runs this server executes publish their step events (started, retried, completed, replayed, failed)
and status changes to the `EventHub` as they happen. A stream first replays the execution's status
and its recorded steps from the database, then follows: live events from the hub, and, every half
second, the database (for runs another process executes, and as a safety net). Each step event is
sent once per stream. The stream ends, with an `end` event, when the run stops (completed, failed,
cancelled, paused, interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..agentframework.models import Execution, ExecutionStatus, ExecutionStep
from ..agentframework.store import Database
from ..agentframework.topologies import StepEvent

__all__ = ["EventHub", "execution_events", "status_event", "step_event"]

_ACTIVE = (ExecutionStatus.RUNNING, ExecutionStatus.PENDING)
_POLL_SECONDS = 0.5


class EventHub:
    """Live events of the runs this server executes, fanned out to the streams watching them."""

    def __init__(self) -> None:
        self._watchers: dict[uuid.UUID, set[asyncio.Queue[dict[str, Any]]]] = {}

    def publish(self, execution_id: uuid.UUID, event: dict[str, Any]) -> None:
        for queue in self._watchers.get(execution_id, ()):
            queue.put_nowait(event)

    def publisher(self, execution_id: uuid.UUID) -> Any:
        """A runner's `on_event` handler publishing its step events for `execution_id`."""

        def publish(event: StepEvent) -> None:
            self.publish(execution_id, step_event(event))

        return publish

    @contextlib.contextmanager
    def watch(self, execution_id: uuid.UUID) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._watchers.setdefault(execution_id, set()).add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers.get(execution_id, set())
            watchers.discard(queue)
            if not watchers:
                self._watchers.pop(execution_id, None)

    def watching(self, execution_id: uuid.UUID) -> int:
        return len(self._watchers.get(execution_id, ()))


def step_event(event: StepEvent | ExecutionStep) -> dict[str, Any]:
    """A step event as streamed: from a running runner (`StepEvent`) or a recorded row."""
    kind: str
    if isinstance(event, StepEvent):
        kind, attempts = event.kind, None
        agent = event.agent_name
    else:
        kind, attempts, agent = str(event.status).lower(), event.attempts, event.agent_name
    return {
        "event": "step",
        "kind": kind,
        "key": event.key,
        "slot": event.slot,
        "agent": agent,
        "model": event.model,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "cost_usd": event.cost_usd,
        "latency_ms": event.latency_ms,
        "error": event.error,
        "attempts": attempts,
    }


def status_event(execution: Execution) -> dict[str, Any]:
    return {
        "event": "status",
        "execution_id": str(execution.id),
        "status": str(execution.status),
        "error": execution.error,
        "input_tokens": execution.input_tokens,
        "output_tokens": execution.output_tokens,
        "cost_usd": execution.cost_usd,
    }


def _frame(number: int, event: dict[str, Any]) -> str:
    return f"id: {number}\nevent: {event['event']}\ndata: {json.dumps(event, default=str)}\n\n"


async def execution_events(db: Database, hub: EventHub, execution_id: uuid.UUID) -> AsyncIterator[str]:
    """The stream of one execution, as SSE frames, until its run stops."""
    with hub.watch(execution_id) as live:  # first: nothing published while we replay is missed
        (execution,) = await db.executions.reap([await db.get_execution(execution_id)])
        sent: set[tuple[str, str]] = set()
        number = 0

        def fresh(event: dict[str, Any]) -> bool:
            if event["event"] != "step" or event["kind"] in ("started", "retry"):
                return True
            mark = (event["key"], event["kind"])
            if mark in sent:
                return False
            sent.add(mark)
            return True

        number += 1
        yield _frame(number, status_event(execution))
        for step in await db.list_steps(execution_id):
            if fresh(event := step_event(step)):
                number += 1
                yield _frame(number, event)
        status = execution.status
        while status in _ACTIVE:
            try:
                event = await asyncio.wait_for(live.get(), _POLL_SECONDS)
            except TimeoutError:
                (execution,) = await db.executions.reap([await db.get_execution(execution_id)])
                for step in await db.list_steps(execution_id):
                    if fresh(event := step_event(step)):
                        number += 1
                        yield _frame(number, event)
                if execution.status != status:
                    status = execution.status
                    number += 1
                    yield _frame(number, status_event(execution))
                else:
                    yield ": keep-alive\n\n"
                continue
            if event["event"] == "status":
                status = ExecutionStatus(event["status"])
            if fresh(event):
                number += 1
                yield _frame(number, event)
        final = await db.get_execution(execution_id)
        for step in await db.list_steps(execution_id):  # what the last poll had not seen
            if fresh(event := step_event(step)):
                number += 1
                yield _frame(number, event)
        number += 1
        yield _frame(number, status_event(final) | {"event": "end"})
