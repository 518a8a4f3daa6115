"""What the server tests share besides their fixtures: the in-process app's handle and client, the
subprocess server's handle, and how to start one (imported by conftest.py and the tests alike; a
module of its own, as `conftest` names several modules)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

HERE = Path(__file__).parent
BASE_URL = "http://127.0.0.1:8000"
"""Where in-process clients say they are: a loopback host, as the MCP endpoint's DNS-rebinding guard wants."""


@dataclass
class App:
    """A server application running in this process; `client` speaks to it without a socket."""

    app: FastAPI
    db_url: str
    client: httpx.AsyncClient

    def new_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """Another client of the same app (its own cookies), closed by the caller."""
        return in_process_client(self.app, **kwargs)

    def transport(self) -> httpx.ASGITransport:
        """For clients made elsewhere (`qmcp.client`'s): requests go to this app."""
        return httpx.ASGITransport(app=self.app)


def in_process_client(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL, timeout=60, **kwargs)


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

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60, **kwargs)

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
