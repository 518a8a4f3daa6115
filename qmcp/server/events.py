"""Server-Sent Events of an execution: what happened before the client connected, then what happens;
and, after a dropped connection, exactly what the client missed.

Runs this server executes publish their step events (started, retried, completed, replayed, failed),
the text their steps stream (`delta` events: `{key, text}`) and status changes to the `EventHub`, which
numbers them in a log kept from the run's start (`seq`). A stream first sends the execution's status,
its recorded steps and the log's settled and in-flight steps; then it follows the log, and, every half
second, the database (for runs another process executes, and as a safety net). The stream ends, with an
`end` event, when the run stops (completed, failed, cancelled, paused, interrupted).

Every event has an `id` (`EventId`: epoch.seq.row) made of durable facts, so the same event has the same
id on every connection: the attempt and phase of the run (the epoch), the event's number in this server's
log of the attempt, and the step row's place among the execution's rows. A client that reconnects with
`Last-Event-ID` gets what followed that event, deltas included (the log keeps the last `_KEEP` events
behind its slowest reader), or a `reset` event and the stream from its start when that cannot be told
exactly (an id of another attempt or server, events no longer kept). The first event carries `retry:`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..agentframework.models import Execution, ExecutionStatus, ExecutionStep, Usage, utcnow
from ..agentframework.store import Database
from ..agentframework.topologies import StepEvent
from ..app import ExecutionOut
from ..redaction import redact

__all__ = [
    "RETRY_MS",
    "EventHub",
    "EventId",
    "RunningStep",
    "StreamLimits",
    "execution_events",
    "has_everything",
    "status_event",
    "step_event",
]

_ACTIVE = (ExecutionStatus.RUNNING, ExecutionStatus.PENDING)
_POLL_SECONDS = 0.5
_BATCH_SECONDS = 0.05
"""How long a stream waits after a live event for more to send with it (measured: 20 watchers of a
200-step run streaming its replies cost the run 235 % one frame per event, see bench/console_sse.py)."""
_BATCH_MAX = 1000
_KEEP = 4096
"""Events a run's log keeps behind its slowest reader, for clients that reconnect (a reconnect that
needs older ones is told `reset`): at 12 deltas a step, the last few hundred steps' worth."""
_KEEP_FINISHED = 32
"""Logs of runs that stopped here kept for clients reconnecting around their end, newest first."""
RETRY_MS = 2000
"""What a stream tells an `EventSource` to wait before reconnecting (`retry:`)."""
_SETTLED = ("completed", "failed", "replayed")
_KEEP_ALIVE = ": keep-alive\n"
"""A comment line, ending no event (a blank line after it would be an empty event to some clients)."""
_DATA = "\0data"
_FRAME = "\0frame"
_SEQ = "\0seq"


@dataclass(frozen=True, order=True)
class EventId:
    """An event's place in its execution's stream, compared number by number: what a client has once it
    has received that event (its `Last-Event-ID`).

    `epoch` is the run's attempt and phase: 3·attempt while it runs (and for the steps it recorded),
    3·attempt + 1 for its end, 3·attempt + 2 while the next attempt waits (`pending`). `seq` numbers
    the events of this server's log of the attempt (0: from the database); `row` is a step row's place
    among the execution's rows (0: no row).
    """

    epoch: int
    seq: int = 0
    row: int = 0

    def __str__(self) -> str:
        return f"{self.epoch}.{self.seq}.{self.row}"

    @classmethod
    def parse(cls, text: str | None) -> EventId | None:
        """The id a client sent back, or None when it is not one of ours (then it gets `reset`)."""
        parts = (text or "").strip().split(".")
        if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 12 for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))


def _epoch(execution: Execution) -> int:
    """The epoch of the execution's state as read (`EventId`)."""
    if execution.status == ExecutionStatus.PENDING:
        return 3 * execution.attempts + 2
    return 3 * execution.attempts


def _end(epoch: int) -> EventId:
    return EventId(epoch + 1)


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


class _Log:
    """One execution's live events on this server, kept once for all the streams reading it (each from
    its own position): a publish is one append, not one queue put per stream.

    The log of a run executing here (`run`) numbers its events from 1 (`seq`: an event's place) and keeps
    what a stream needs to start mid-run: the settled and started steps and the last status. Otherwise
    (a run elsewhere) it only wakes the streams watching, which then read the database.
    """

    def __init__(self, run: bool) -> None:
        self.run = run
        self.epoch: int | None = None  # set by the run's `running` status (its attempt is the next one)
        self.events: list[dict[str, Any]] = []
        self.start = 0  # the place of `events[0]` (the oldest events every reader has passed are dropped)
        self.readers: dict[int, int] = {}  # reader → its position
        self.read_upto = 0  # no reader has read the events from here on
        self.open_deltas: dict[str, int] = {}  # step key → position of its delta later ones may join
        self.arrived = asyncio.Event()
        self.settled: dict[str, dict[str, Any]] = {}  # step key → its settled event
        self.started: dict[str, dict[str, Any]] = {}  # step key → its `started` event, while in flight
        self.status: dict[str, Any] | None = None  # the last status event

    @property
    def last(self) -> int:
        """The seq of the newest event (0: none yet)."""
        return self.start + len(self.events)

    @property
    def stopped(self) -> bool:
        return self.status is not None and self.status["status"] not in _ACTIVE

    def publish(self, event: dict[str, Any]) -> None:
        if not self.run:
            self.arrived.set()
            return
        key: str | None = event.get("key")
        if event["event"] == "delta" and key is not None:
            at = self.open_deltas.get(key)
            if at is not None and at >= max(self.read_upto, self.start):  # unread yet: one delta, one frame
                joined = self.events[at - self.start]
                self.events[at - self.start] = {
                    **event,
                    "text": joined["text"] + event["text"],
                    _SEQ: joined[_SEQ],
                }
                return
            self.open_deltas[key] = self.last
        elif key is not None:
            self.open_deltas.pop(key, None)  # a retry restarts the text: later deltas come after it
        event[_SEQ] = self.last + 1
        self.events.append(event)
        if event["event"] == "step" and key is not None:
            if event["kind"] == "started":
                self.started[key] = event
            elif event["kind"] in _SETTLED:
                self.started.pop(key, None)
                self.settled[key] = event
        elif event["event"] == "status":
            self.status = event
            if self.epoch is None and event["status"] == ExecutionStatus.RUNNING:
                self.epoch = 3 * (int(event["attempts"]) + 1)
        if len(self.events) > _KEEP + _BATCH_MAX:  # drop, in chunks, what every reader has passed
            drop = min(len(self.events) - _KEEP, min(self.readers.values(), default=self.last) - self.start)
            if drop > 0:
                del self.events[:drop]
                self.start += drop
        if not self.arrived.is_set():
            self.arrived.set()

    def read(self, reader: int) -> list[dict[str, Any]]:
        """What `reader` has not read yet (at most `_BATCH_MAX`), which it has read now."""
        position = self.readers[reader]
        batch = self.events[position - self.start : position - self.start + _BATCH_MAX]
        self.readers[reader] = position + len(batch)
        self.read_upto = max(self.read_upto, position + len(batch))
        return batch

    async def wait(self, reader: int) -> bool:
        """Wait (up to the poll interval) for news `reader` has not read; whether some came."""
        if self.readers[reader] < self.last:
            return True
        self.arrived.clear()
        try:
            await asyncio.wait_for(self.arrived.wait(), _POLL_SECONDS)
        except TimeoutError:
            return False
        return True


class _Watch:
    """A stream's place in its execution's log; it follows the log of a run that starts here meanwhile."""

    def __init__(self, hub: EventHub, execution_id: uuid.UUID, log: _Log, reader: int) -> None:
        self.hub, self.execution_id, self.log, self.reader = hub, execution_id, log, reader

    def switched(self) -> bool:
        """Whether a run started here since: then the stream reads its log, from its first event."""
        log = self.hub._logs.get(self.execution_id)
        if log is None or log is self.log or self.reader not in log.readers:
            return False
        self.log = log
        return True

    def seek(self, position: int) -> None:
        self.log.readers[self.reader] = position

    def read(self) -> list[dict[str, Any]]:
        return self.log.read(self.reader)

    async def wait(self) -> bool:
        return await self.log.wait(self.reader)


class EventHub:
    """Live events of the runs this server executes, numbered and fanned out to the streams watching
    them; and the steps in flight of those runs, with the text they have streamed so far, for pages
    opened mid-step."""

    def __init__(self) -> None:
        self._logs: dict[uuid.UUID, _Log] = {}
        self._finished: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._running: dict[uuid.UUID, dict[str, RunningStep]] = {}
        self._readers = itertools.count()

    def publish(self, execution_id: uuid.UUID, event: dict[str, Any]) -> None:
        log = self._logs.get(execution_id)
        if log is not None:  # a run here, or someone watching
            log.publish(event)

    def publisher(self, execution_id: uuid.UUID) -> Any:
        """A runner's `on_event` handler publishing its step events (and text deltas) for `execution_id`;
        the run's log starts here."""
        running = self._running.setdefault(execution_id, {})
        log, old = _Log(run=True), self._logs.get(execution_id)
        if old is not None and not old.run:  # streams already watching follow the run from its start
            log.readers = dict.fromkeys(old.readers, 0)
            old.arrived.set()
        self._logs[execution_id] = log
        self._finished.pop(execution_id, None)

        def publish(event: StepEvent) -> None:
            if event.kind == "delta":
                step = running.get(event.key)
                if step is not None:
                    step.text.append(event.text)
                log.publish({"event": "delta", "key": event.key, "text": event.text})
                return
            if event.kind == "started":
                running[event.key] = RunningStep(
                    event.key, event.slot, event.agent_name, event.model, utcnow()
                )
            elif event.kind == "retry" and event.key in running:
                running[event.key].retries.append(utcnow())
                running[event.key].text.clear()  # the next attempt streams its text again
            elif event.kind in _SETTLED:
                running.pop(event.key, None)
            log.publish(step_event(event))

        return publish

    def running(self, execution_id: uuid.UUID) -> list[RunningStep]:
        """The steps of `execution_id` in flight in this process, oldest first."""
        return list(self._running.get(execution_id, {}).values())

    def finished(self, execution_id: uuid.UUID) -> None:
        """The run stopped here: nothing of it is in flight any more. Its log is kept a while (its last
        status is still to come, and clients reconnect around the end)."""
        self._running.pop(execution_id, None)
        self._finished[execution_id] = None
        self._finished.move_to_end(execution_id)
        while len(self._finished) > _KEEP_FINISHED:
            oldest, _ = self._finished.popitem(last=False)
            log = self._logs.get(oldest)
            if log is not None and log.run:  # its streams keep their own reference to it
                del self._logs[oldest]

    def _log(self, execution_id: uuid.UUID) -> _Log | None:
        """The log of the run of `execution_id` executing (or lately stopped) here, if any."""
        log = self._logs.get(execution_id)
        return log if log is not None and log.run else None

    def _here(self, execution_id: uuid.UUID) -> bool:
        return execution_id in self._running

    @contextlib.contextmanager
    def watch(self, execution_id: uuid.UUID) -> Iterator[_Watch]:
        """A place in the execution's live events from now on, until the block ends."""
        log = self._logs.get(execution_id)
        if log is None:
            log = self._logs[execution_id] = _Log(run=False)
        reader = next(self._readers)
        log.readers[reader] = log.last
        watch = _Watch(self, execution_id, log, reader)
        try:
            yield watch
        finally:
            del watch.log.readers[reader]
            if not watch.log.readers and not watch.log.run and self._logs.get(execution_id) is watch.log:
                del self._logs[execution_id]

    def watching(self, execution_id: uuid.UUID) -> int:
        log = self._logs.get(execution_id)
        return len(log.readers) if log else 0


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


def status_event(execution: Execution) -> dict[str, Any]:
    """The execution as every door shows it (`ExecutionOut`), tagged as a status event."""
    return {"event": "status", **ExecutionOut.of(execution).model_dump(mode="json")}


def _encode(event: dict[str, Any]) -> str:
    """An event's data line, secrets masked: a step's error or a model's text may quote a key."""
    return redact(json.dumps({k: v for k, v in event.items() if k[0] != "\0"}, default=str))


def _frame(at: EventId | None, event: dict[str, Any]) -> str:
    """A frame of the stream; `at` None: an empty id (`reset`: the client forgets its last id)."""
    data = event.get(_DATA)
    if data is None:  # encoded once for every stream that sends it (a log's events are shared)
        data = event[_DATA] = _encode(event)
    return f"id: {at if at is not None else ''}\nevent: {event['event']}\ndata: {data}\n\n"


def _logged_frame(epoch: int, event: dict[str, Any]) -> str:
    """A log event's frame, made once for every stream that sends it (its id is the same for all)."""
    frame: str | None = event.get(_FRAME)
    if frame is None:
        frame = event[_FRAME] = _frame(EventId(epoch, event[_SEQ]), event)
    return frame


def has_everything(execution: Execution, last_event_id: str | None) -> bool:
    """Whether a client that received `last_event_id` has the whole stream: it has the `end` of the run,
    which has not moved since (it is answered 204, which stops an `EventSource` reconnecting)."""
    at = EventId.parse(last_event_id)
    stopped = execution.status not in _ACTIVE
    return at is not None and stopped and at == _end(_epoch(execution))


class _Reset(Exception):
    """The stream cannot go on exactly from where the client is: it starts again with `reset`."""


class _Stream:
    """One connection's stream: its place (`at`, the id of the last event sent) and what it sent."""

    def __init__(self, db: Database, hub: EventHub, live: _Watch, execution_id: uuid.UUID) -> None:
        self.db, self.hub, self.live, self.execution_id = db, hub, live, execution_id
        self.at = EventId(0)
        self.sent: dict[str, str] = {}  # step key → the status of its row sent (from the database)
        self.use_log = True  # False once this server's log of the run proved stale

    async def frames(self, last_event_id: str | None) -> AsyncIterator[str]:
        after = EventId.parse(last_event_id) if last_event_id else None
        reset = bool(last_event_id) and after is None
        while True:
            if reset:
                self.at, self.sent, after = EventId(0), {}, None
                yield _frame(None, {"event": "reset", "reason": "the stream starts again from its beginning"})
            try:
                async for frame in self._stream(after):
                    yield frame
                return
            except _Reset:
                reset = True

    async def _stream(self, after: EventId | None) -> AsyncIterator[str]:
        execution = await self.db.get_execution(self.execution_id)
        rows = await self.db.list_step_outlines(self.execution_id)
        log = self.hub._log(self.execution_id) if self.use_log else None
        here = self.hub._here(self.execution_id)
        if log is not None and not here:  # stopped here: still the execution's last run?
            current = log.epoch == 3 * execution.attempts and execution.status != ExecutionStatus.PENDING
            log = log if current else None
        if log is not None and self.live.log is not log:  # the run started here since the watch began
            self.live.log.readers.pop(self.live.reader, None)
            self.live.log = log
            log.readers[self.live.reader] = log.last
        if log is not None and log.epoch is None:  # its `running` is not out yet: the claim's attempt is next
            log.epoch = 3 * (execution.attempts + (1 if execution.status == ExecutionStatus.PENDING else 0))
        if log is not None and log.epoch is not None and (after is None or after.epoch == log.epoch):
            async for frame in self._from_log(log, log.epoch, execution, rows, after):
                yield frame
            return
        if after is not None and (after.seq != 0 or after.epoch != _epoch(execution)):
            raise _Reset
        async for frame in self._from_db(execution, rows, after):
            yield frame

    # -- a run executing here: its log ------------------------------------------------------------

    async def _from_log(
        self, log: _Log, epoch: int, execution: Execution, rows: Sequence[Any], after: EventId | None
    ) -> AsyncIterator[str]:
        touched = log.settled.keys() | log.started.keys()
        earlier = [(place, row) for place, row in enumerate(rows, 1) if row.key not in touched]
        if after is None:  # the status, the steps of attempts before, then this run's steps so far
            self.at = EventId(epoch)
            frames = [_frame(self.at, log.status or status_event(execution))]
            for place, row in earlier:
                frames.append(_frame(EventId(epoch, 0, place), step_event(row)))
            for event in sorted([*log.settled.values(), *log.started.values()], key=lambda e: int(e[_SEQ])):
                frames.append(_logged_frame(epoch, event))
            self.live.seek(log.last)
            yield "".join(frames)
            if log.stopped:
                assert log.status is not None
                yield self._end(epoch, log.status)
                return
        elif after.seq == 0:  # it has the status and some steps of attempts before
            if log.start > 0:
                raise _Reset
            frames = [_frame(EventId(epoch, 0, p), step_event(r)) for p, r in earlier if p > after.row]
            self.live.seek(0)
            if frames:
                yield "".join(frames)
        else:
            if after.row != 0 or not log.start <= after.seq <= log.last:
                raise _Reset
            self.live.seek(after.seq)
        async for frame in self._follow_log(log, epoch):
            yield frame

    async def _follow_log(self, log: _Log, epoch: int) -> AsyncIterator[str]:
        gone = 0  # idle polls since the run stopped here without its last status (another took it)
        while True:
            batch = self.live.read()
            if not batch and await self.live.wait():
                await asyncio.sleep(_BATCH_SECONDS)  # let what follows at once join it: one write for many
                batch = self.live.read()
            if not batch:
                gone = 0 if self.hub._here(self.execution_id) or log.stopped else gone + 1
                if gone >= 2:  # another process took the run over: the database tells the rest
                    self.use_log = False
                    raise _Reset
                yield _KEEP_ALIVE
                continue
            yield "".join(_logged_frame(epoch, event) for event in batch)
            stop = next((e for e in batch if e["event"] == "status" and e["status"] not in _ACTIVE), None)
            if stop is not None:
                yield self._end(epoch, stop)
                return

    def _end(self, epoch: int, status: dict[str, Any]) -> str:
        self.at = max(_end(epoch), EventId(self.at.epoch + 1))  # a pending run cancelled: after its ids
        return _frame(self.at, {k: v for k, v in status.items() if k[0] != "\0"} | {"event": "end"})

    # -- a run elsewhere (or before this server): the database --------------------------------------

    async def _from_db(
        self, execution: Execution, rows: Sequence[Any], after: EventId | None
    ) -> AsyncIterator[str]:
        epoch = _epoch(execution)
        if after is None:
            self.at = EventId(epoch)
            yield _frame(self.at, status_event(execution))
        else:  # it has the status and the rows up to `after.row`
            self.at = after
            for row in rows[: after.row]:
                self.sent[row.key] = str(row.status)
        while True:
            frames = self._new_rows(epoch, rows)
            if frames:
                yield "".join(frames)
            if execution.status not in _ACTIVE:
                yield self._end(epoch, status_event(execution))
                return
            if self.live.switched():  # the run started here meanwhile: its log from its first event
                log = self.live.log
                log.epoch = log.epoch or 3 * (execution.attempts + 1)
                async for frame in self._follow_log(log, log.epoch):
                    yield frame
                return
            if await self.live.wait():  # a status published here (a cancel): look now
                self.live.read()
            else:
                yield _KEEP_ALIVE
            execution = await self.db.get_execution(self.execution_id)
            rows = await self.db.list_step_outlines(self.execution_id)
            if _epoch(execution) != epoch:
                epoch = _epoch(execution)
                if execution.status in _ACTIVE:
                    self.at = EventId(epoch)
                    yield _frame(self.at, status_event(execution))

    def _new_rows(self, epoch: int, rows: Sequence[Any]) -> list[str]:
        """Frames of the rows not sent yet, or sent with another status; `_Reset` when such a row comes
        before one sent already (a failed step run again: its place is taken)."""
        frames = []
        for place, row in enumerate(rows, 1):
            if self.sent.get(row.key) == str(row.status):
                continue
            at = EventId(epoch, 0, place)
            if at <= self.at:
                raise _Reset
            self.sent[row.key], self.at = str(row.status), at
            frames.append(_frame(at, step_event(row)))
        return frames


async def execution_events(
    db: Database, hub: EventHub, execution_id: uuid.UUID, last_event_id: str | None = None
) -> AsyncIterator[str]:
    """The stream of one execution, as SSE frames, until its run stops; after `last_event_id` (a
    reconnecting client's `Last-Event-ID`) when given."""
    retry = f"retry: {RETRY_MS}\n"  # in the first event's block: a block of its own is an empty event
    with hub.watch(execution_id) as live:  # first: nothing published while we read the database is missed
        async for frame in _Stream(db, hub, live, execution_id).frames(last_event_id):
            if retry and frame.startswith("id:"):
                frame, retry = retry + frame, ""
            yield frame
