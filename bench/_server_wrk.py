"""server_floor: `qmcp serve` beside its stack's floor, under the same load generator (wrk).

Each side runs in its own process on a free 127.0.0.1 port, on a SQLite file holding one completed
execution of a two-agent pipeline, with a bearer token:
* qmcp: `qmcp --model test serve`, seeded over its API (agents, a topology, one run);
* floor: `bench._server_floor` (bare FastAPI + uvicorn + sqlite3), on a file qmcp's Python API seeded
  with the same run.
Each measured run: `wrk -t1 -c50 -d10s --latency` on `GET /v1/executions/{id}` → requests/s, p50,
p99. qmcp's run then measures run starts with the same load generator, `wrk -t1 -c20 -d3s
--latency` (a Lua script sends the method, the JSON body and its type): first on `GET /health`, a
route that does nothing (`health_p50_ms`, `health_p99_ms`: the floor of this measurement, what wrk,
the loopback and uvicorn cost at this concurrency on this machine), then on
`POST /v1/topologies/{name}/run` → 202 (`post_run_p50_ms`, `post_run_p99_ms`, `post_run_per_s`).
The runs started execute on the server's workers while later starts are answered, so the window
holds other runs' claims, step writes and ends, as a busy server's would: the target is that a 202
does not wait on them. Then the measurement waits until no execution is pending or running, so the
next one starts on an idle server.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ._common import Metrics, Skipped, sqlite_url
from ._server import _port, settled

__all__ = ["make_case", "parse_wrk"]

_REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-" + "0" * 40
WRK_CONNECTIONS = 50
WRK_SECONDS = 10
RUN_CLIENTS = 20
RUN_SECONDS = 3
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_AGENTS = {"bench-plan": "writer", "bench-write": "writer"}
_TOPOLOGY = {"name": "bench-pipe", "type": "pipeline", "agents": {"a": "bench-plan", "b": "bench-write"}}


_REQUEST = """\
wrk.method = "%(method)s"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
"""


def parse_wrk(output: str) -> Metrics:
    """Requests/s and the p50, p99 latencies (ms) of `wrk --latency`'s report; errors fail the run."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    latencies = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s))\s*$", output, re.MULTILINE))
    if rps is None or set(latencies) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output: {output[-500:]}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if "Non-2xx" in output or (errors is not None and any(int(n) for n in errors.groups())):
        raise RuntimeError(f"wrk saw failed requests: {output[-500:]}")

    def ms(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(number) * _UNITS[unit]

    return {
        "get_rps": float(rps.group(1)),
        "get_p50_ms": ms(latencies["50"]),
        "get_p99_ms": ms(latencies["99"]),
    }


class Served:
    """One side: a server process on a seeded SQLite file, measured with wrk."""

    def __init__(self, framework: str, workdir: Path) -> None:
        self.framework, self.workdir = framework, workdir
        self.url = f"http://127.0.0.1:{_port()}"
        self.db_file = workdir / "server.db"
        self.process: asyncio.subprocess.Process | None = None
        self.log = (workdir / "server.log").open("wb")
        self.execution_id = ""
        self.headers = {"Authorization": f"Bearer {TOKEN}"}

    async def setup(self) -> None:
        if shutil.which("wrk") is None:
            raise Skipped("wrk is not installed (apt-get install wrk)")
        env = {
            **os.environ,
            "QMCP_DATABASE_URL": sqlite_url(self.workdir, "server.db"),
            "QMCP_API_TOKEN": TOKEN,
        }
        port = self.url.rsplit(":", 1)[1]
        if self.framework == "floor":
            self.execution_id = await _seed_file(self.db_file)
            argv = ["-m", "bench._server_floor", "--db", str(self.db_file), "--port", port, "--token", TOKEN]
        else:
            code = "import sys; from qmcp.cli import main; sys.argv[0] = 'qmcp'; main()"
            argv = ["-c", code, "--model", "test", "serve", "--port", port]
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *argv, env=env, cwd=_REPO, stdout=subprocess.DEVNULL, stderr=self.log
        )
        await self._up()
        if self.framework == "qmcp":
            self.execution_id = await self._seed_over_http()

    async def _up(self) -> None:
        import httpx

        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=self.url) as client:
            while True:
                try:
                    if (await client.get("/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.1)

    async def _seed_over_http(self) -> str:
        import httpx

        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=60) as client:
            for name, role in _AGENTS.items():
                (
                    await client.post(
                        "/v1/agents", json={"name": name, "role": role, "config": {"model": "test"}}
                    )
                ).raise_for_status()
            (await client.post("/v1/topologies", json=_TOPOLOGY)).raise_for_status()
            run = (await client.post("/v1/topologies/bench-pipe/run", json={"input": {"prompt": "x"}})).json()
            await settled(client, [run["execution_id"]])
            return str(run["execution_id"])

    async def run(self) -> Metrics:
        metrics = await self._wrk(WRK_CONNECTIONS, WRK_SECONDS, f"/v1/executions/{self.execution_id}")
        if self.framework == "qmcp":
            metrics |= await self._run_starts()
        return metrics

    async def _run_starts(self) -> Metrics:
        health = await self._wrk_for("GET", "/health")
        starts = await self._wrk_for("POST", "/v1/topologies/bench-pipe/run", '{"input": {"prompt": "x"}}')
        await self._idle()
        return {
            "post_run_p50_ms": starts["get_p50_ms"],
            "post_run_p99_ms": starts["get_p99_ms"],
            "post_run_per_s": starts["get_rps"],
            "health_p50_ms": health["get_p50_ms"],
            "health_p99_ms": health["get_p99_ms"],
        }

    async def _wrk_for(self, method: str, path: str, body: str = "") -> Metrics:
        """`wrk -t1 -c{RUN_CLIENTS} -d{RUN_SECONDS}s --latency` sending `method path` with `body`."""
        script = self.workdir / f"{method.lower()}.lua"
        script.write_text(_REQUEST % {"method": method, "body": body})
        return await self._wrk(RUN_CLIENTS, RUN_SECONDS, path, "-s", str(script))

    async def _wrk(self, connections: int, seconds: int, path: str, *options: str) -> Metrics:
        """One thread of `wrk --latency` on `path` with the bench's token, parsed."""
        process = await asyncio.create_subprocess_exec(
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout=30s",  # a slow answer is a latency, not a socket error
            *options,
            "-H",
            f"Authorization: Bearer {TOKEN}",
            f"{self.url}{path}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        return parse_wrk(output.decode())

    async def _idle(self) -> None:
        """Wait until no execution is pending or running (the starts' runs have ended)."""
        import httpx

        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=60) as client:
            deadline = time.monotonic() + 300
            for status in ("pending", "running"):
                while (await client.get("/v1/executions", params={"status": status, "limit": 1})).json()[
                    "total"
                ]:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the started runs did not end within 300 s ({status} left)")
                    await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
        self.log.close()


async def _seed_file(path: Path) -> str:
    """The floor's file: qmcp's schema and one completed run of the same pipeline (Python API)."""
    from qmcp.agentframework.models import AgentType, Topology
    from qmcp.agentframework.runners import LocalRunner

    agents = {
        slot: AgentType(name=name, role=_AGENTS[name], config={"model": "test"})
        for slot, name in _TOPOLOGY["agents"].items()  # type: ignore[union-attr]
    }
    topology = Topology(name="bench-pipe", topology_type="pipeline", config={})
    result = await LocalRunner(db_url=f"sqlite+aiosqlite:///{path}").run(topology, agents, {"prompt": "x"})
    if str(result.status) != "completed":
        raise RuntimeError(f"seeding the floor's database failed: {result.error}")
    return str(result.execution_id)


def make_case(framework: str, workdir: Path) -> Served:
    return Served(framework, workdir)
