"""The MCP SDK's server with qmcp's rules on top: what `tools/list` offers and how `tools/call` fails.

* Beside qmcp's own tools (`_mcp.py`), the server's tools at `/v1/tools` (upstream's echo, planner,
  executor and reviewer, and the Python tools registered for tool_use) are MCP tools too, called
  through `invoke_tool`: recorded as invocations, under the same plan-size limit, budgets and
  per-minute caps as over HTTP (one `ToolLimits` per server, shared by both doors).
* An unknown tool is a JSON-RPC error (-32602, as the specification's example), not a tool result.
* A tool's anticipated failure is an `isError` result whose text is the cause alone, the sentence
  HTTP gives as `detail`: the SDK's `Error executing tool X:` prefix and pydantic's multi-line
  reports are left out.

Imported when a server is built (the SDK takes most of a second to import).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, InputRequiredResult, TextContent
from mcp_types import Tool as MCPTool
from pydantic import ValidationError
from starlette.requests import Request

from ..agentframework.errors import QmcpError
from ..agentframework.models import describe_validation_error, json_problem
from ..redaction import redact
from .runs import RunManager
from .tools import ServerTool, ToolLimits, invoke_tool, server_tools

__all__ = ["QmcpMCPServer"]


class QmcpMCPServer(MCPServer):
    """An `MCPServer` that also offers the server's tools and answers failures in qmcp's sentences."""

    def __init__(self, runs: RunManager, limits: ToolLimits, **settings: Any) -> None:
        with _host_logging_kept():
            super().__init__(**settings)
        self._runs = runs
        self._limits = limits

    async def _server_tools(self) -> tuple[list[MCPTool], dict[str, ServerTool]]:
        """This server's own tools, and the tools of `/v1/tools` they do not shadow (read on every
        call: a Python tool registered later is offered from then on, as over HTTP)."""
        own = await super().list_tools()
        names = {tool.name for tool in own}
        return own, {name: tool for name, tool in server_tools().items() if name not in names}

    async def list_tools(self) -> list[MCPTool]:
        own, offered = await self._server_tools()
        return [
            *own,
            *(
                MCPTool(name=tool.name, description=tool.description, input_schema=tool.input_schema)
                for tool in offered.values()
            ),
        ]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        own, offered = await self._server_tools()
        if name not in {tool.name for tool in own}:
            tool = offered.get(name)
            if tool is None:
                raise MCPError(INVALID_PARAMS, f"Unknown tool: {name}; tools/list names them")
            return await self._invoke(tool, arguments, context)
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise  # a crash: the SDK logs it and tells the client nothing of it
        except ToolError as error:
            raise ToolError(_cause(error)) from error.__cause__

    async def _invoke(
        self, tool: ServerTool, arguments: dict[str, Any], context: Context[Any, Any] | None
    ) -> CallToolResult:
        """One call of a server tool, as `POST /v1/tools/{name}` makes it: its failure (`error`
        there) is an error result here, and a refusal by the limits is the sentence of HTTP's 4xx."""
        problem = json_problem(arguments)
        if problem is not None:  # HTTP's parser refuses NaN and deep nesting before any tool runs
            raise ToolError(f"invalid input for {tool.name}: a value that {problem}")
        try:
            async with self._runs.database() as db:
                invocation = await invoke_tool(
                    db,
                    tool,
                    arguments,
                    _correlation_id(context),
                    limits=self._limits,
                    model_override=self._runs.policy.pinned_model,
                )
        except QmcpError as error:
            raise ToolError(redact(str(error))) from None
        except Exception as error:  # a crash, as the SDK reports its own tools' (logged, not told)
            raise UnexpectedToolError(f"Error executing tool {tool.name}") from error
        meta = {"invocation_id": str(invocation.id)}
        if invocation.error is not None:
            return CallToolResult(
                content=[TextContent(text=redact(invocation.error))], is_error=True, _meta=meta
            )
        result = invocation.result
        text = result if isinstance(result, str) else json.dumps(result, indent=2)
        return CallToolResult(content=[TextContent(text=text)], _meta=meta)


@contextlib.contextmanager
def _host_logging_kept() -> Iterator[None]:
    """The SDK's constructor calls `logging.basicConfig` (a Rich handler on the root logger of the
    host's process, `create_app()`'s caller): a library leaves the host's logging as it found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def _cause(error: ToolError) -> str:
    """What went wrong, without the SDK's `Error executing tool X:` prefix: the sentence of the
    tool's own `ToolError`, or one line naming each bad argument."""
    cause = error.__cause__
    if isinstance(cause, ValidationError):
        return describe_validation_error(cause)
    return str(cause) if cause is not None else str(error)


def _correlation_id(context: Context[Any, Any] | None) -> str:
    """The HTTP request's correlation id (header, else the one the server made), or a new one (stdio)."""
    request = None
    if context is not None:
        with contextlib.suppress(ValueError):  # a call made outside any request
            request = context.request_context.request
    if isinstance(request, Request):
        given = request.scope.get("state", {}).get("correlation_id")
        if isinstance(given, str) and given:
            return given
    return uuid.uuid4().hex
