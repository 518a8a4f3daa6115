"""server_api: the QMCP server under load from 50 concurrent clients, on loopback.

`qmcp --model test serve` runs in its own process on a free 127.0.0.1 port; this process is the
load generator (httpx, one connection per client). Each measured run:
* GET /v1/executions/{id}: 50 clients, 40 requests each, back to back → requests/s, p50, p99;
* POST /v1/topologies/{name}/run: 50 clients, 4 runs each → p50 and p99 of the 202 answer (the
  runs then execute on the server's workers; the run waits for them to finish before the next).
Both machines' two cores are shared by the server and the load, as a laptop's would be.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._common import Metrics, sqlite_url

__all__ = ["make_case"]

CLIENTS = 50
GETS_PER_CLIENT = 40
RUNS_PER_CLIENT = 4


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class ServerLoad:
    def __init__(self, workdir: Path) -> None:
        self.url = f"http://127.0.0.1:{_port()}"
        self.db_url = sqlite_url(workdir, "server.db")
        self.workdir = workdir
        self.process: asyncio.subprocess.Process | None = None
        self.execution_id = ""

    async def setup(self) -> None:
        import httpx

        env = {**os.environ, "QMCP_DATABASE_URL": self.db_url, "QMCP_MAX_CONCURRENT_RUNS": "4"}
        code = "import sys; from qmcp.cli import main; sys.argv[0] = 'qmcp'; main()"
        port = self.url.rsplit(":", 1)[1]
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            "--model",
            "test",
            "serve",
            "--port",
            port,
            env=env,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.1)
            for name in ("bench-plan", "bench-write"):
                await client.post(
                    "/v1/agents", json={"name": name, "role": "writer", "config": {"model": "test"}}
                )
            await client.post(
                "/v1/topologies",
                json={
                    "name": "bench-pipe",
                    "type": "pipeline",
                    "agents": {"a": "bench-plan", "b": "bench-write"},
                },
            )
            run = (await client.post("/v1/topologies/bench-pipe/run", json={"input": {"prompt": "x"}})).json()
            self.execution_id = run["execution_id"]
            await settled(client, [self.execution_id])

    async def run(self) -> Metrics:
        import httpx

        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=self.url, timeout=120, limits=limits) as client:
            gets: list[float] = []

            async def getter() -> None:
                for _ in range(GETS_PER_CLIENT):
                    started = time.perf_counter()
                    response = await client.get(f"/v1/executions/{self.execution_id}")
                    gets.append(time.perf_counter() - started)
                    response.raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(getter() for _ in range(CLIENTS)))
            get_seconds = time.perf_counter() - started

            posts = await start_runs(client, CLIENTS, RUNS_PER_CLIENT)
        return {
            "get_rps": len(gets) / get_seconds,
            "get_p50_ms": _percentile(gets, 0.5) * 1000,
            "get_p99_ms": _percentile(gets, 0.99) * 1000,
            "post_run_p50_ms": _percentile(posts, 0.5) * 1000,
            "post_run_p99_ms": _percentile(posts, 0.99) * 1000,
        }

    async def close(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()


def make_case(workdir: Path) -> ServerLoad:
    return ServerLoad(workdir)


async def settled(client: Any, ids: list[str]) -> None:
    """Wait for the runs to end, so that the next measured run starts on an idle server."""
    pending = list(ids)
    while pending:
        status = (await client.get(f"/v1/executions/{pending[-1]}")).json()["status"]
        if status in ("pending", "running"):
            await asyncio.sleep(0.05)
        else:
            pending.pop()


async def start_runs(client: Any, clients: int, per_client: int) -> list[float]:
    """`clients` concurrent clients each start `per_client` runs of `bench-pipe`: the seconds each
    start took to answer 202, once every run has ended."""
    latencies: list[float] = []
    ids: list[str] = []

    async def starter(index: int) -> None:
        for run in range(per_client):
            begun = time.perf_counter()
            response = await client.post(
                "/v1/topologies/bench-pipe/run", json={"input": {"prompt": f"client {index} run {run}"}}
            )
            latencies.append(time.perf_counter() - begun)
            response.raise_for_status()
            ids.append(response.json()["execution_id"])

    await asyncio.gather(*(starter(i) for i in range(clients)))
    await settled(client, ids)
    return latencies
