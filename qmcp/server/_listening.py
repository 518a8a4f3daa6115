"""uvicorn's server, made to say where it listens once its socket is open (`qmcp serve`'s ready line)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

CONSOLE_PATH = "/"
DOCS_PATH = "/docs"  # FastAPI's default `docs_url`
MCP_PATH = "/mcp"


def ready_line(base_url: str, token_required: bool) -> str:
    """The one line a person (or a script waiting for the server) reads to know it is up, and where."""
    token = "token required" if token_required else "no token required"
    return (
        f"qmcp server ready: console {base_url}{CONSOLE_PATH}  API docs {base_url}{DOCS_PATH}  "
        f"MCP {base_url}{MCP_PATH}  ({token})"
    )


def base_url(host: str, port: int) -> str:
    """`http://host:port`, with an IPv6 address in brackets."""
    bare = host.strip("[]")
    return f"http://[{bare}]:{port}" if ":" in bare else f"http://{bare}:{port}"


class AnnouncingServer(uvicorn.Server):
    """Calls `on_ready(base_url)` after startup, when the socket accepts connections (with the port the
    system chose when asked for port 0)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[str], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:  # the lifespan failed, or the bind did: uvicorn says why and exits
            return
        port = self.config.port
        for server in self.servers:
            for listening in server.sockets:
                port = listening.getsockname()[1]
        self._on_ready(base_url(self.config.host, port))
