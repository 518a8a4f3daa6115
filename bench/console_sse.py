"""console_sse: does watching a run slow it? A run on `qmcp serve` with 0 and with 20 Server-Sent
Events watchers (each as a browser's console page: the execution's event stream, with the `delta`
events of every step's streamed reply), alternated, several times.

The members call `scripted:bench`, which answers like a provider would: after `--latency` seconds
(default 0.05, the suite's figure) it streams 12 words, one every `--chunk-delay` seconds (default
0.01). `--latency 0 --chunk-delay 0` runs them on the bare `test`-like reply instead, which measures the
server's work per event against a run that does nothing else (no model would be that fast).

`python -m bench.console_sse [--members 200] [--repeats 5] [--watchers 20]` prints one JSON line: the
median run time (execution `duration_ms`) of each, the slowdown, and the server process's CPU time per
run (connecting, replaying and ending the streams included). The watchers run in another process at the
lowest priority (`nice 19`), standing for browsers on other machines."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _watch(client: httpx.AsyncClient, execution_id: str, frames: list[int]) -> None:
    count = 0
    async with client.stream("GET", f"/v1/executions/{execution_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                count += 1
    frames.append(count)


def _cpu_seconds(pid: int) -> float:
    """The server process's CPU time so far (user + system; Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _one_run(
    client: httpx.AsyncClient, watchers: asyncio.subprocess.Process | None, count: int
) -> tuple[float, int]:
    answer = await client.post(
        "/v1/topologies/wide/run", json={"input": {"prompt": "Count"}, "runner": "async"}
    )
    execution_id = answer.json()["execution_id"]
    if watchers is not None:  # the watchers' process is up already: they connect at once
        assert watchers.stdin is not None
        watchers.stdin.write(f"{execution_id} {count}\n".encode())
        await watchers.stdin.drain()
    while True:
        execution = (await client.get(f"/v1/executions/{execution_id}")).json()
        if execution["status"] not in ("pending", "running"):
            break
        await asyncio.sleep(0.05)
    frames = 0
    if watchers is not None:
        assert watchers.stdout is not None
        frames = int((await watchers.stdout.readline()).decode().strip() or 0)
    assert execution["status"] == "completed", execution
    return float(execution["duration_ms"]), frames


async def _watchers(url: str) -> None:
    """The "browsers": for each `EXECUTION COUNT` line on stdin, COUNT streams of it; prints frames each."""
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            execution_id, count = line.split()
            frames: list[int] = []
            await asyncio.gather(*(_watch(client, execution_id, frames) for _ in range(int(count))))
            print(sum(frames) // max(1, len(frames)), flush=True)


_SERVER = """
import sys
from qmcp.agentframework.llm import ScriptedModel, register_model
from qmcp.cli import main

latency, chunk_delay = float(sys.argv[1]), float(sys.argv[2])
words = " ".join(f"word{n}" for n in range(12))
model = ScriptedModel(replies=[words], latency=latency, chunk_delay=chunk_delay, name="scripted:bench")
register_model("scripted:bench", model.model)
sys.argv[0:3] = ["qmcp"]
main()
"""


def _start_server(latency: float, chunk_delay: float) -> tuple[subprocess.Popen[bytes], int]:
    workdir = Path(tempfile.mkdtemp(prefix="qmcp-console-sse-"))
    port = _port()
    env = {**os.environ, "QMCP_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/bench.db"}
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(latency), str(chunk_delay), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server, port


async def _main(
    server: subprocess.Popen[bytes],
    port: int,
    members: int,
    repeats: int,
    watchers: int,
    latency: float,
    chunk_delay: float,
) -> dict[str, object]:
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for _ in range(200):
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            await client.post(
                "/v1/agents",
                json={"name": "member", "role": "analyst", "config": {"model": "scripted:bench"}},
            )
            slots = {f"m{n:04d}": "member" for n in range(members)}
            await client.post(
                "/v1/topologies",
                json={
                    "name": "wide",
                    "type": "ensemble",
                    "config": {"aggregation_method": "vote"},
                    "agents": slots,
                },
            )
            # The "browsers": another process, at the lowest priority, so that they take the machine's
            # spare time and what slows the run is the server's work for them.
            browsers = await asyncio.create_subprocess_exec(
                "nice", "-n", "19", sys.executable, "-m", "bench.console_sse", "--watch", str(client.base_url),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await _one_run(client, None, 0)  # warm-up
            await _one_run(client, browsers, watchers)
            alone, watched, frames = [], [], 0
            cpu_alone, cpu_watched = [], []
            for _ in range(repeats):
                before = _cpu_seconds(server.pid)
                alone.append((await _one_run(client, None, 0))[0])
                middle = _cpu_seconds(server.pid)
                duration, frames = await _one_run(client, browsers, watchers)
                watched.append(duration)
                cpu_alone.append(middle - before)
                cpu_watched.append(_cpu_seconds(server.pid) - middle)
            assert browsers.stdin is not None
            browsers.stdin.close()
            await browsers.wait()
    finally:
        server.terminate()
    base, busy = statistics.median(alone), statistics.median(watched)
    return {
        "case": "console_sse",
        "steps": members,
        "latency_s": latency,
        "chunk_delay_s": chunk_delay,
        "watchers": watchers,
        "frames_per_watcher": frames,
        "run_ms_alone": round(base, 1),
        "run_ms_watched": round(busy, 1),
        "slowdown_percent": round((busy / base - 1) * 100, 1),
        "server_cpu_s_alone": round(statistics.median(cpu_alone), 3),
        "server_cpu_s_watched": round(statistics.median(cpu_watched), 3),
        "load_average": os.getloadavg()[0],
        "runs": {"alone": alone, "watched": watched},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--chunk-delay", type=float, default=0.01)
    parser.add_argument("--watch", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        asyncio.run(_watchers(args.watch))
        return
    server, port = _start_server(args.latency, args.chunk_delay)
    try:
        result = asyncio.run(
            _main(server, port, args.members, args.repeats, args.watchers, args.latency, args.chunk_delay)
        )
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
