"""The QMCP server (`qmcp serve`): upstream's tool and human-in-the-loop API, the orchestration of
agents, topologies and executions, and an MCP endpoint, in one FastAPI application.

Needs the server extra's packages (FastAPI, uvicorn); `qmcp serve` says how to install them.
"""

from ._app import ServerOptions, check_bind, create_app, is_loopback, serve
from ._listening import ready_line
from ._mcp import mcp_server
from .events import EventHub, RunningStep
from .runs import RunManager

__all__ = [
    "EventHub",
    "RunManager",
    "RunningStep",
    "ServerOptions",
    "check_bind",
    "create_app",
    "is_loopback",
    "mcp_server",
    "ready_line",
    "serve",
]
