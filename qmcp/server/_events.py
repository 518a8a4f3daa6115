"""Server-Sent Events of an execution: what happened before the client connected, then what happens.

Runs this server executes publish their step events (started, retried, completed, replayed, failed),
the text their steps stream (`delta` events: `{key, text}`) and status changes to the `EventHub` as they
happen. A stream first replays the execution's status and its recorded steps from the database, and a
`started` event for each step in flight here (it has no row yet); then it follows: live events from
the hub, and, every half second, the database (for runs another process executes, and as a safety
net). Each step event is sent once per stream. The stream ends, with an `end` event, when the run stops
(completed, failed, cancelled, paused, interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..agentframework.models import Execution, ExecutionStatus, ExecutionStep
from ..agentframework.models._agent import utcnow
from ..agentframework.store import Database
from ..agentframework.topologies import StepEvent

__all__ = ["EventHub", "RunningStep", "execution_events", "status_event", "step_event"]

_ACTIVE = (ExecutionStatus.RUNNING, ExecutionStatus.PENDING)
_POLL_SECONDS = 0.5
_BATCH_SECONDS = 0.05
"""How long a stream waits after a live event for more to send with it (measured: 20 watchers of a
200-step run streaming its replies cost the run 235 % one frame per event, see bench/console_sse.py)."""
_BATCH_MAX = 1000
_DATA = "\0data"


@dataclass
class RunningStep:
    """A step in flight (it has no row until it finishes): when it started, its retries, its text so far."""

    key: str
    slot: str
    agent: str
    model: str
    started_at: datetime
    retries: list[datetime] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


class EventHub:
    """Live events of the runs this server executes, fanned out to the streams watching them; and the
    steps in flight of those runs, with the text they have streamed so far, for pages opened mid-step."""

    def __init__(self) -> None:
        self._watchers: dict[uuid.UUID, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._running: dict[uuid.UUID, dict[str, RunningStep]] = {}

    def publish(self, execution_id: uuid.UUID, event: dict[str, Any]) -> None:
        for queue in self._watchers.get(execution_id, ()):
            queue.put_nowait(event)

    def publisher(self, execution_id: uuid.UUID) -> Any:
        """A runner's `on_event` handler publishing its step events (and text deltas) for `execution_id`."""
        running = self._running.setdefault(execution_id, {})

        def publish(event: StepEvent) -> None:
            if event.kind == "delta":
                step = running.get(event.key)
                if step is not None:
                    step.text.append(event.text)
                self.publish(execution_id, {"event": "delta", "key": event.key, "text": event.text})
                return
            if event.kind == "started":
                running[event.key] = RunningStep(
                    event.key, event.slot, event.agent_name, event.model, utcnow()
                )
            elif event.kind == "retry" and event.key in running:
                running[event.key].retries.append(utcnow())
                running[event.key].text.clear()  # the next attempt streams its text again
            elif event.kind in ("completed", "failed", "replayed"):
                running.pop(event.key, None)
            self.publish(execution_id, step_event(event))

        return publish

    def running(self, execution_id: uuid.UUID) -> list[RunningStep]:
        """The steps of `execution_id` in flight in this process, oldest first."""
        return list(self._running.get(execution_id, {}).values())

    def finished(self, execution_id: uuid.UUID) -> None:
        """The run stopped here: nothing of it is in flight any more."""
        self._running.pop(execution_id, None)

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
        "at": utcnow().isoformat() if isinstance(event, StepEvent) else None,
    }


def _started(step: RunningStep) -> dict[str, Any]:
    return {
        "event": "step",
        "kind": "started",
        "key": step.key,
        "slot": step.slot,
        "agent": step.agent,
        "model": step.model,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "latency_ms": 0.0,
        "error": None,
        "attempts": None,
        "at": step.started_at.isoformat(),
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
    data = event.get(_DATA)
    if data is None:  # encoded once for every stream that sends it (a hub's events are shared)
        data = event[_DATA] = json.dumps({k: v for k, v in event.items() if k != _DATA}, default=str)
    return f"id: {number}\nevent: {event['event']}\ndata: {data}\n\n"


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while not queue.empty() and len(items) < _BATCH_MAX:
        items.append(queue.get_nowait())
    return items


def _joined_deltas(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`events` with the deltas of each step joined into its first one (fewer frames, the same text);
    a step's other events (a retry restarts its text) keep their place after its earlier deltas."""
    out: list[dict[str, Any]] = []
    open_delta: dict[str, int] = {}  # step key → index in `out` of the delta later ones join
    for event in events:
        key = str(event.get("key"))
        if event["event"] != "delta":
            open_delta.pop(key, None)
            out.append(event)
        elif (at := open_delta.get(key)) is not None:
            out[at] = {"event": "delta", "key": key, "text": out[at]["text"] + event["text"]}
        else:
            open_delta[key] = len(out)
            out.append(event)
    return out


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
        for flight in hub.running(execution_id):  # steps in flight here have no row yet: say they started
            number += 1
            yield _frame(number, _started(flight))
        status = execution.status
        last: dict[str, Any] | None = None  # the hub's last status event
        while status in _ACTIVE:
            batch = _drain(live)
            if not batch:
                try:
                    batch = [await asyncio.wait_for(live.get(), _POLL_SECONDS)]
                except TimeoutError:
                    batch = []
                if batch:  # let what follows at once join it: one write for many events
                    await asyncio.sleep(_BATCH_SECONDS)
                    batch += _drain(live)
            if not batch:
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
            frames = []
            for event in _joined_deltas(batch):
                if event["event"] == "status":
                    status, last = ExecutionStatus(event["status"]), event
                if fresh(event):
                    number += 1
                    frames.append(_frame(number, event))
            if frames:
                yield "".join(frames)
        if last is not None and last["status"] == ExecutionStatus.COMPLETED:
            # This server ran it to the end: every step event went through the hub before this status.
            end = {k: v for k, v in last.items() if k != _DATA}
        else:
            final = await db.get_execution(execution_id)
            for step in await db.list_steps(execution_id):  # what the last poll had not seen
                if fresh(event := step_event(step)):
                    number += 1
                    yield _frame(number, event)
            end = status_event(final)
        number += 1
        yield _frame(number, end | {"event": "end"})
