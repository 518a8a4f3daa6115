"""An execution's Server-Sent Events as `httpx-sse` reads them: every event has an id, the same on every
connection, and a client that reconnects with `Last-Event-ID` gets what it missed, nothing more; or a
`reset` and the stream from its beginning.

A reconnect mid-stream needs a real socket (httpx's ASGI transport returns a response once it is
whole): the in-process app is served by uvicorn on a loopback port, on the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from _eventually import eventually_async
from doubles import Doubles
from fastapi import FastAPI
from httpx_sse import ServerSentEvent, aconnect_sse
from serving import driver_argv, free_port
from team import finished, make_team, run

from qmcp.server import events
from qmcp.server.events import EventId

Seen = Callable[[list[ServerSentEvent]], bool]


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` over a real loopback socket (the app's lifespan is the fixture's)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    await eventually_async(lambda: server.started, "uvicorn to listen")
    try:
        url = f"http://127.0.0.1:{server.config.port}"
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60, read=None)) as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def read(
    client: httpx.AsyncClient, execution_id: str, *, last: str | None = None, until: Seen | None = None
) -> list[ServerSentEvent]:
    """The events of one connection (keep-alives left out): to the stream's end, or until `until`
    holds, when the client drops the connection."""
    headers = {"Last-Event-ID": last} if last is not None else {}
    got: list[ServerSentEvent] = []
    async with aconnect_sse(
        client, "GET", f"/v1/executions/{execution_id}/events", headers=headers
    ) as source:
        async for event in source.aiter_sse():
            got.append(event)
            if until is not None and until(got):
                break
    return got


def place(event: ServerSentEvent) -> tuple[int, int, int]:
    at = EventId.parse(event.id)
    assert at is not None, f"not an event id: {event.id!r}"
    return (at.epoch, at.seq, at.row)


def increasing(got: list[ServerSentEvent]) -> bool:
    places = [place(e) for e in got]
    return all(a < b for a, b in itertools.pairwise(places))


def deltas(got: list[ServerSentEvent], key: str) -> list[str]:
    return [e.json()["text"] for e in got if e.event == "delta" and e.json()["key"] == key]


def settled(got: list[ServerSentEvent]) -> list[str]:
    return [e.json()["key"] for e in got if e.event == "step" and e.json()["kind"] == "completed"]


def frames(got: list[ServerSentEvent]) -> list[tuple[str, str, str]]:
    return [(e.id, e.event, e.data) for e in got]


async def test_a_reconnect_mid_step_gets_what_it_missed_deltas_included(start_app, db_url, doubles: Doubles):
    doubles.words, doubles.stream.chunk_delay = 12, 0.08
    app = await start_app(db_url)
    await make_team(app.client)
    async with served(app.app) as client:
        execution_id = await run(client, "streaming")
        whole = asyncio.create_task(read(client, execution_id))  # a client that never drops
        hub = app.app.state.qmcp.hub
        await eventually_async(lambda: hub.watching(uuid.UUID(execution_id)), "the first client to connect")
        key = "pipeline/1:second"
        first = await read(client, execution_id, until=lambda got: len(deltas(got, key)) >= 3)
        assert first[0].retry == events.RETRY_MS and all(e.id for e in first) and increasing(first)
        assert key not in settled(first)  # dropped in the middle of the second step's reply
        second = await read(client, execution_id, last=first[-1].id)
        uninterrupted = await whole

    assert "reset" not in [e.event for e in second] and increasing(second)
    assert place(first[-1]) < place(second[0]) and second[-1].event == "end"
    assert second[-1].json()["status"] == "completed"
    # exactly what the uninterrupted client got after the same event: same ids, same data
    assert frames(second) == [
        f for f in frames(uninterrupted) if EventId.parse(f[0]) > EventId.parse(first[-1].id)
    ]
    shared = {e.id: e.data for e in uninterrupted}
    assert all(shared[e.id] == e.data for e in first if e.id in shared) and first[-1].id in shared
    assert settled(first) + settled(second) == ["pipeline/0:first", key]  # each once
    steps = {
        s["key"]: s for s in (await app.client.get(f"/v1/executions/{execution_id}/steps")).json()["steps"]
    }
    before, after = deltas(first, key), deltas(second, key)
    assert before and after and steps[key]["response"].endswith("".join(before + after))

    # after the end: the same events keep their ids; a client that has the end is told 204 (no reconnect)
    again = await read(app.client, execution_id)
    assert {e.id: e.data for e in again if e.event == "step"}.items() <= shared.items()
    assert again[-1].id == uninterrupted[-1].id
    done = await app.client.get(
        f"/v1/executions/{execution_id}/events", headers={"Last-Event-ID": again[-1].id}
    )
    assert done.status_code == 204


async def test_an_unknown_or_too_old_last_event_id_gets_reset_then_the_stream(
    start_app, db_url, doubles: Doubles, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(events, "_KEEP", 2)  # the log keeps few events behind its readers
    monkeypatch.setattr(events, "_BATCH_MAX", 2)
    doubles.words, doubles.stream.chunk_delay = 4, 0.01
    app = await start_app(db_url)
    await make_team(app.client)
    execution_id = await run(app.client, "streaming")
    await finished(app.client, execution_id)
    fresh = await read(app.client, execution_id)
    assert fresh[0].event == "status" and fresh[-1].event == "end" and increasing(fresh)

    for unknown in ("nope", "1.2", "-1.0.0", "9" * 13 + ".0.0", "3.999.0", "7.1.0"):
        replay = await read(app.client, execution_id, last=unknown)
        assert replay[0].event == "reset" and replay[0].id == "", unknown
        assert frames(replay[1:]) == frames(fresh), unknown  # the stream from its beginning
    oldest = next(e for e in fresh if e.event == "step")
    old = await read(app.client, execution_id, last=oldest.id)  # its followers are no longer kept
    assert old[0].event == "reset" and frames(old[1:]) == frames(fresh)
    newest = [e for e in fresh if e.event == "step"][-1]
    rest = await read(app.client, execution_id, last=newest.id)
    assert [e.event for e in rest] == ["status", "end"]  # what followed it: the run's last status


@pytest.mark.slow
async def test_a_reconnect_to_a_run_another_process_executes(
    start_app, db_url, worker_env_server, tmp_path: Path
):
    app = await start_app(db_url)
    await make_team(app.client)
    environ = {**worker_env_server, "QMCP_DATABASE_URL": db_url, "DRIVER_LATENCY": "0.7"}
    argv = driver_argv("agents", "topologies", "run", "slow-three", "--input-json", '{"prompt": "go"}')
    process = subprocess.Popen(
        argv, env=environ, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        async def started() -> str | None:
            listed = (await app.client.get("/v1/executions")).json()["executions"]
            return listed[0]["id"] if listed else None

        execution_id = await eventually_async(started, "the other process's execution")
        async with served(app.app) as client:
            whole = asyncio.create_task(read(client, execution_id))
            first = await read(client, execution_id, until=lambda got: len(settled(got)) >= 1)

            async def two_recorded() -> bool:
                steps = (await app.client.get(f"/v1/executions/{execution_id}/steps")).json()["steps"]
                return len(steps) >= 2

            await eventually_async(two_recorded, "a second step recorded while the client is away")
            second = await read(client, execution_id, last=first[-1].id)
            uninterrupted = await whole
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert all(e.id for e in first + second) and increasing(first) and increasing(second)
    assert "reset" not in [e.event for e in second] and second[-1].event == "end"
    assert settled(first) + settled(second) == ["pipeline/0:s0", "pipeline/1:s1", "pipeline/2:s2"]
    assert frames(second) == [
        f for f in frames(uninterrupted) if EventId.parse(f[0]) > EventId.parse(first[-1].id)
    ]
    assert second[-1].json()["status"] == "completed"
