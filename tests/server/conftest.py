"""The real server in a subprocess (`qmcp serve` through `server_driver.py`) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    url: str
    db_url: str
    process: subprocess.Popen[str]
    log: Path
    calls: Path
    token: str | None = None

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def paid(self) -> list[str]:
        """Roles of the `scripted:slow` calls finished so far, in every process."""
        return self.calls.read_text().split() if self.calls.exists() else []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def driver_argv(*args: str) -> list[str]:
    return [sys.executable, str(HERE / "server_driver.py"), *args]


@pytest.fixture
def start_server(tmp_path: Path, worker_env_server: dict[str, str]) -> Iterator[Callable[..., Server]]:
    """start_server(db_url, *serve_args, env={...}, model=None) -> a running server (stopped after the
    test); `model` is the server's `--model` override (agents otherwise run on their own models)."""
    started: list[Server] = []

    def start(
        db_url: str,
        *serve_args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        model: str | None = None,
    ) -> Server:
        port = port or free_port()
        log = tmp_path / f"server-{len(started)}.log"
        calls = tmp_path / "calls.log"
        environ = {
            **worker_env_server,
            "QMCP_DATABASE_URL": db_url,
            "DRIVER_CALL_LOG": str(calls),
            "QMCP_SHUTDOWN_GRACE_SECONDS": "5",
            **(env or {}),
        }
        process = subprocess.Popen(
            driver_argv(*(["--model", model] if model else []), "serve", "--port", str(port), *serve_args),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
            env=environ,
            cwd=tmp_path,
        )
        server = Server(
            f"http://127.0.0.1:{port}", db_url, process, log, calls, environ.get("QMCP_API_TOKEN")
        )
        started.append(server)
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not start: {log.read_text()[-3000:]}"
            time.sleep(0.1)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def worker_env_server() -> dict[str, str]:
    """Subprocesses import this tree's qmcp (not another editable install)."""
    path = [str(HERE.parents[1]), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}


def wait_until(condition: Callable[[], Any], what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures know at teardown whether the test failed
    (the browser tests save a screenshot then)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
