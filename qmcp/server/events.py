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
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..agentframework.models import Execution, ExecutionStatus, ExecutionStep, Usage, utcnow
from ..agentframework.store import Database
from ..agentframework.topologies import StepEvent
from ..app import ExecutionOut
from ..redaction import redact

__all__ = ["EventHub", "RunningStep", "StreamLimits", "execution_events", "status_event", "step_event"]

_ACTIVE = (ExecutionStatus.RUNNING, ExecutionStatus.PENDING)
_POLL_SECONDS = 0.5
_BATCH_SECONDS = 0.05
"""How long a stream waits after a live event for more to send with it (measured: 20 watchers of a
200-step run streaming its replies cost the run 235 % one frame per event, see bench/console_sse.py)."""
_BATCH_MAX = 1000
_DATA = "\0data"
_FRAME = "\0frame"


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


class _Feed:
    """One execution's live events, kept once for all the streams watching it (each reads from its own
    position): a publish is one append, not one queue put per stream."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.start = 0  # the position of `events[0]` (the events every reader has passed are dropped)
        self.readers: dict[int, int] = {}  # reader → its position
        self.read_upto = 0  # no reader has read the events from here on
        self.open_deltas: dict[str, int] = {}  # step key → position of its delta later ones may join
        self.arrived = asyncio.Event()

    def publish(self, event: dict[str, Any]) -> None:
        key: str | None = event.get("key")
        if event["event"] == "delta" and key is not None:
            at = self.open_deltas.get(key)
            if at is not None and at >= self.read_upto:  # unread yet: one delta, one frame, for everyone
                joined = self.events[at - self.start]
                self.events[at - self.start] = {**event, "text": joined["text"] + event["text"]}
                return
            self.open_deltas[key] = self.start + len(self.events)
        elif key is not None:
            self.open_deltas.pop(key, None)  # a retry restarts the text: later deltas come after it
        self.events.append(event)
        if not self.arrived.is_set():
            self.arrived.set()

    def read(self, reader: int) -> list[dict[str, Any]]:
        """What `reader` has not read yet (at most `_BATCH_MAX`), which it has read now."""
        position = self.readers[reader]
        batch = self.events[position - self.start : position - self.start + _BATCH_MAX]
        self.readers[reader] = position + len(batch)
        self.read_upto = max(self.read_upto, position + len(batch))
        if len(self.events) > _BATCH_MAX and min(self.readers.values()) - self.start > len(self.events) // 2:
            drop = min(self.readers.values()) - self.start
            del self.events[:drop]
            self.start += drop
        return batch

    async def wait(self, reader: int) -> bool:
        """Wait (up to the poll interval) for an event `reader` has not read; whether there is one."""
        while self.readers[reader] >= self.start + len(self.events):
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), _POLL_SECONDS)
            except TimeoutError:
                return False
        return True


class _Watch:
    """A stream's place in its execution's feed."""

    def __init__(self, feed: _Feed, reader: int) -> None:
        self.feed, self.reader = feed, reader

    def read(self) -> list[dict[str, Any]]:
        return self.feed.read(self.reader)

    async def wait(self) -> bool:
        return await self.feed.wait(self.reader)


class EventHub:
    """Live events of the runs this server executes, fanned out to the streams watching them; and the
    steps in flight of those runs, with the text they have streamed so far, for pages opened mid-step."""

    def __init__(self) -> None:
        self._feeds: dict[uuid.UUID, _Feed] = {}
        self._running: dict[uuid.UUID, dict[str, RunningStep]] = {}
        self._readers = itertools.count()

    def publish(self, execution_id: uuid.UUID, event: dict[str, Any]) -> None:
        feed = self._feeds.get(execution_id)
        if feed is not None:  # kept only while someone watches
            feed.publish(event)

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
    def watch(self, execution_id: uuid.UUID) -> Iterator[_Watch]:
        """A place in the execution's live events from now on, until the block ends."""
        feed = self._feeds.setdefault(execution_id, _Feed())
        reader = next(self._readers)
        feed.readers[reader] = feed.start + len(feed.events)
        try:
            yield _Watch(feed, reader)
        finally:
            del feed.readers[reader]
            if not feed.readers:
                self._feeds.pop(execution_id, None)

    def watching(self, execution_id: uuid.UUID) -> int:
        feed = self._feeds.get(execution_id)
        return len(feed.readers) if feed else 0


class StreamLimits:
    """The caps on event streams open at once, per server and per client address.

    An idle stream costs little alone, but hundreds of them slow every other request (each wakes
    to send keep-alives): a stream beyond a cap is refused before it starts.
    """

    def __init__(self, total: int = 100, per_client: int = 10) -> None:
        self.total, self.per_client = total, per_client
        self._open: dict[str, int] = {}

    @property
    def open(self) -> int:
        """The streams open now."""
        return sum(self._open.values())

    def refusal(self, client: str) -> str | None:
        """Why `client` may not open one more stream now (naming the limit), or None if it may."""
        if self.open >= self.total:
            return f"too many event streams: this server keeps at most {self.total} open (max_event_streams)"
        if self._open.get(client, 0) >= self.per_client:
            return (
                f"too many event streams from {client}: at most {self.per_client} per client "
                "(max_event_streams_per_client)"
            )
        return None

    def opened(self, client: str) -> None:
        self._open[client] = self._open.get(client, 0) + 1

    def closed(self, client: str) -> None:
        left = self._open.get(client, 0) - 1
        if left > 0:
            self._open[client] = left
        else:
            self._open.pop(client, None)


def step_event(event: StepEvent | ExecutionStep | Any) -> dict[str, Any]:
    """A step event as streamed: from a running runner (`StepEvent`) or a recorded row (a whole
    `ExecutionStep` or `Database.list_step_outlines`'s)."""
    kind: str
    if isinstance(event, StepEvent):
        kind, attempts, usage = event.kind, None, event.usage
        agent = event.agent_name
    else:  # an outline row has the columns only
        kind, attempts, agent = str(event.status).lower(), event.attempts, event.agent_name
        usage = Usage(event.attempts, event.input_tokens, event.output_tokens, event.cost_usd)
    return {
        "event": "step",
        "kind": kind,
        "key": event.key,
        "slot": event.slot,
        "agent": agent,
        "model": event.model,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": usage.cost_usd,
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
    """The execution as every door shows it (`ExecutionOut`), tagged as a status event."""
    return {"event": "status", **ExecutionOut.of(execution).model_dump(mode="json")}


def _encode(event: dict[str, Any]) -> str:
    """An event's data line, secrets masked: a step's error or a model's text may quote a key."""
    return redact(json.dumps({k: v for k, v in event.items() if k not in (_DATA, _FRAME)}, default=str))


def _frame(number: int, event: dict[str, Any]) -> str:
    data = event.get(_DATA)
    if data is None:  # encoded once for every stream that sends it (a hub's events are shared)
        data = event[_DATA] = _encode(event)
    return f"id: {number}\nevent: {event['event']}\ndata: {data}\n\n"


def _live_frame(event: dict[str, Any]) -> str:
    """A live event's frame, made once for every stream that sends it (live frames carry no `id`)."""
    frame: str | None = event.get(_FRAME)
    if frame is None:
        data = _encode(event)
        frame = event[_FRAME] = f"event: {event['event']}\ndata: {data}\n\n"
    return frame


async def execution_events(db: Database, hub: EventHub, execution_id: uuid.UUID) -> AsyncIterator[str]:
    """The stream of one execution, as SSE frames, until its run stops."""
    with hub.watch(execution_id) as live:  # first: nothing published while we replay is missed
        execution = await db.get_execution(execution_id)
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
        for step in await db.list_step_outlines(execution_id):
            if fresh(event := step_event(step)):
                number += 1
                yield _frame(number, event)
        replayed: set[str] = set()  # started steps said here, whose live `started` may follow
        for flight in hub.running(execution_id):  # steps in flight here have no row yet: say they started
            replayed.add(flight.key)
            number += 1
            yield _frame(number, _started(flight))
        status = execution.status
        last: dict[str, Any] | None = None  # the hub's last status event
        while status in _ACTIVE:
            batch = live.read()
            if not batch and await live.wait():
                await asyncio.sleep(_BATCH_SECONDS)  # let what follows at once join it: one write for many
                batch = live.read()
            if not batch:
                execution = await db.get_execution(execution_id)
                for step in await db.list_step_outlines(execution_id):
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
            for event in batch:
                if event["event"] == "status":
                    status, last = ExecutionStatus(event["status"]), event
                if event["event"] == "step" and event["kind"] == "started" and event["key"] in replayed:
                    replayed.discard(event["key"])  # published between the watch and the replay: said
                    continue
                if fresh(event):
                    frames.append(_live_frame(event))
            if frames:
                yield "".join(frames)
        if last is not None and last["status"] == ExecutionStatus.COMPLETED:
            # This server ran it to the end: every step event went through the hub before this status.
            end = {k: v for k, v in last.items() if k not in (_DATA, _FRAME)}
        else:
            final = await db.get_execution(execution_id)
            for step in await db.list_step_outlines(execution_id):  # what the last poll had not seen
                if fresh(event := step_event(step)):
                    number += 1
                    yield _frame(number, event)
            end = status_event(final)
        number += 1
        yield _frame(number, end | {"event": "end"})
