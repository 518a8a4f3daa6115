"""tool_use: Python functions and the tools of MCP servers (stdio or streamable HTTP) as an agent's tools.

The tools are built in `before_model` as `ToolSpec`s; `call_model` runs the tool loop, enforces
`AgentConfig.max_tool_calls` and reports every call, which the step stores under
`output["tool_calls"]`. A tool's own failure goes back to the model as text; a function that
cannot be found or a server that cannot be reached is a configuration error that stops the run
before the model is called.

An MCP server is connected once per run, on first use, and closed when the run ends. Its
session lives in a task of its own: the SDK's (anyio) contexts must be closed by the task that
opened them, while the steps of a concurrent run execute in many tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TextIO, cast

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PydanticUserError, Tag, model_validator
from pydantic_core import to_jsonable_python

from ...observability import get_logger
from ..errors import MissingExtraError, MixinError
from ..extras import require
from ..llm import ToolSpec
from ._base import BaseMixin, MixinContext, RunResources, mixin
from ._structured_output import import_object

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp.types import Tool as McpTool
    from pydantic_ai.tools import RunContext

__all__ = ["ToolUseMixin", "python_tool", "register_tool", "registered_tools", "unregister_tool"]

_registered: dict[str, Callable[..., Any]] = {}

# qmcp tools are called outside a pydantic-ai agent run, so there is no RunContext to give them;
# tools that ask for one are refused when they are built, and the others never read it.
_NO_RUN_CONTEXT = cast("RunContext[Any]", None)


def register_tool(name: str, function: Callable[..., Any]) -> None:
    """Offer `function` (sync or async) to agents as tool `name`: `mixins={"tool_use": {"tools": [name]}}`."""
    _registered[name] = function


def unregister_tool(name: str) -> None:
    _registered.pop(name, None)


def registered_tools() -> list[str]:
    """The names given to `register_tool`, in order (the QMCP server offers these tools too)."""
    return list(_registered)


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_VARIABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _StdioServer(BaseModel):
    """An MCP server started as a subprocess.

    Its environment holds only what the definition names: `env_allow` lists variables of this
    process passed on by name, and `env` sets variables, whose values may use `${VAR}` for a
    variable `env_allow` names (so secrets stay in the environment instead of the stored config,
    and a definition cannot read any other). The MCP SDK adds its minimal process environment
    (HOME, LOGNAME, PATH, SHELL, TERM, USER), which holds no secrets.
    """

    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, description="The program that starts the server.")
    args: list[str] = Field(default_factory=list, description="Its arguments.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Variables it gets; values may use ${VAR} for a variable env_allow names.",
    )
    env_allow: list[Annotated[str, Field(pattern=_VARIABLE_NAME)]] = Field(
        default_factory=list, description="Variables of this process passed on by name (no others are)."
    )
    cwd: str | None = Field(default=None, description="Its working directory.")

    @model_validator(mode="after")
    def _references_are_allowed(self) -> _StdioServer:
        for name, value in self.env.items():
            for variable in _VARIABLE.findall(value):
                if variable not in self.env_allow:
                    raise ValueError(
                        f"env {name} uses ${{{variable}}}, which env_allow does not name; add "
                        f"{variable!r} to env_allow to pass it to this server"
                    )
        return self

    @property
    def label(self) -> str:
        return " ".join([self.command, *self.args])

    def environment(self) -> dict[str, str]:
        """The variables this server gets (besides the SDK's minimal ones), read from this process now."""
        missing = [name for name in self.env_allow if name not in os.environ]
        referenced = {variable for value in self.env.values() for variable in _VARIABLE.findall(value)}
        if unset := sorted(referenced & set(missing)):
            raise MixinError(
                f"MCP server {self.label!r} needs environment variable(s) {', '.join(unset)}: set them"
            )
        passed = {name: os.environ[name] for name in self.env_allow if name in os.environ}
        return passed | {
            name: _VARIABLE.sub(lambda match: os.environ[match.group(1)], value)
            for name, value in self.env.items()
        }

    def description(self) -> str:
        names = sorted({*self.env, *self.env_allow})
        environment = f"; environment: {', '.join(names)}" if names else ""
        return f"MCP server command {self.label!r} (started as a process{environment})"


class _HttpServer(BaseModel):
    """An MCP server reached over streamable HTTP."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", description="Its streamable HTTP endpoint.")

    @property
    def label(self) -> str:
        return self.url

    def description(self) -> str:
        return f"MCP server {self.url!r} (receives the model's tool calls)"


def _server_kind(value: Any) -> str:
    """A server with a `command` is started over stdio; any other is reached at its `url`."""
    if isinstance(value, dict):
        return "stdio" if "command" in value else "http"
    return "stdio" if isinstance(value, _StdioServer) else "http"


_Server = Annotated[
    Annotated[_StdioServer, Tag("stdio")] | Annotated[_HttpServer, Tag("http")], Discriminator(_server_kind)
]


class _QmcpServer(BaseModel):
    """A QMCP server whose `/v1/tools` the agent may call (over its REST API)."""

    # Descriptions as `Field(description=...)`, not attribute docstrings: pydantic finds those by
    # scanning every loaded module (`inspect.getmodule`), a cost paid by every process importing qmcp.
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, pattern=r"^https?://", description="[default: QMCP_SERVER_URL]")
    tools: list[str] | None = Field(default=None, description="Only these of its tools [default: all].")
    token_env: str | None = Field(
        default="QMCP_API_TOKEN",
        pattern=_VARIABLE_NAME,
        description="The variable holding its bearer token (sent to this server only).",
    )

    def address(self) -> str:
        url = self.url or os.environ.get("QMCP_SERVER_URL")
        if not url:
            raise MixinError("tool_use's qmcp_servers entry has no url, and QMCP_SERVER_URL is not set")
        return url

    def description(self) -> str:
        where = self.url or "$QMCP_SERVER_URL"
        token = f", with the token in {self.token_env}" if self.token_env else ""
        return f"QMCP server {where!r} (receives the model's tool calls{token})"


class ToolUseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tools: list[str] = Field(
        default_factory=list,
        description='Names given to `register_tool`, or `"package.module:function"` references.',
    )
    mcp_servers: list[_Server] = Field(
        default_factory=list,
        description="MCP servers: `{command, args, env, env_allow, cwd}` over stdio, or `{url}` over streamable HTTP.",
    )
    qmcp_servers: list[_QmcpServer] = Field(
        default_factory=list,
        description="QMCP servers whose `/v1/tools` to offer: `{url, tools, token_env}`.",
    )
    allow: list[str] | None = Field(default=None, description="Only these tool names [default: all].")
    deny: list[str] = Field(
        default_factory=list, description="Never these tool names (deny wins over allow)."
    )
    connect_timeout_seconds: float = Field(
        default=30.0, gt=0, description="How long an MCP server may take to connect."
    )


# -- Python functions ---------------------------------------------------------------------------


def python_tool(reference: str) -> ToolSpec:
    """A tool from a registered name or a `"package.module:function"` reference."""
    if ":" in reference:
        function, name = import_object(reference, "tool function"), None
    elif reference in _registered:
        function, name = _registered[reference], reference
    else:
        known = ", ".join(sorted(_registered)) or "none"
        raise MixinError(
            f"unknown tool {reference!r}: give 'package.module:function' or a name passed to "
            f"register_tool (registered: {known})"
        )
    if not callable(function):
        raise MixinError(f"tool {reference!r} is not callable")
    from pydantic_ai.exceptions import UserError  # the model layer's import, paid by steps with tools only
    from pydantic_ai.tools import Tool

    try:
        tool = Tool(function, name=name)
    except (UserError, PydanticUserError, TypeError, ValueError) as error:  # signature or schema unusable
        raise MixinError(f"tool {reference!r} cannot be offered to a model: {error}") from None
    if tool.takes_ctx:
        raise MixinError(f"tool {reference!r} takes a RunContext, which qmcp tools are not given")
    schema = tool.function_schema

    async def call(args: dict[str, Any]) -> Any:
        result = await schema.call(schema.validator.validate_python(args), _NO_RUN_CONTEXT)
        return to_jsonable_python(result, fallback=str)  # the step stores it as JSON

    return ToolSpec(tool.tool_def, call)


# -- MCP servers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _McpServer:
    """A connected MCP server: its session and its tools, for the rest of the run."""

    label: str
    session: ClientSession
    tools: list[McpTool]


async def _mcp_server(
    spec: _StdioServer | _HttpServer, resources: RunResources, wait_seconds: float
) -> _McpServer:
    """The run's connection to `spec`, opened by the first step that needs it and shared by the rest."""
    key = f"tool_use:mcp:{type(spec).__name__}:{spec.model_dump_json()}"
    pending = resources.state.get(key)
    if pending is None:
        pending = resources.state[key] = asyncio.ensure_future(_connect(spec, resources, wait_seconds))
    # Shielded: a step cancelled while waiting must not cancel the connection other steps share.
    return await asyncio.shield(pending)


async def _connect(
    spec: _StdioServer | _HttpServer, resources: RunResources, wait_seconds: float
) -> _McpServer:
    try:
        require("mcp", extra="mcp", feature="tool_use with MCP servers", load=False)
    except MissingExtraError as error:
        raise MixinError(str(error)) from None
    environment = spec.environment() if isinstance(spec, _StdioServer) else None
    opened: asyncio.Future[_McpServer] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(_hold(spec, environment, opened, stop), name=f"mcp {spec.label}")
    resources.exit_stack.push_async_callback(_close, spec.label, task, stop)
    try:
        async with asyncio.timeout(wait_seconds):
            return await asyncio.shield(opened)
    except TimeoutError:
        task.cancel()
        raise MixinError(f"MCP server {spec.label!r} did not answer within {wait_seconds:g}s") from None
    except asyncio.CancelledError:
        task.cancel()
        raise
    except Exception as error:  # the connection failed and its task has ended
        raise MixinError(f"cannot connect to MCP server {spec.label!r}: {_reason(error)}") from None


async def _hold(
    spec: _StdioServer | _HttpServer,
    environment: dict[str, str] | None,
    opened: asyncio.Future[_McpServer],
    stop: asyncio.Event,
) -> None:
    """Open the session, hand it over through `opened`, and keep it open until `stop`."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    try:
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(spec, _HttpServer):
                streams = await stack.enter_async_context(streamable_http_client(spec.url))
            else:
                parameters = StdioServerParameters(
                    command=spec.command, args=spec.args, env=environment, cwd=spec.cwd
                )
                streams = await stack.enter_async_context(stdio_client(parameters, errlog=_errlog()))
            session = await stack.enter_async_context(ClientSession(*streams))
            await session.initialize()
            opened.set_result(_McpServer(spec.label, session, await _list_tools(session)))
            await stop.wait()
    except Exception as error:
        if opened.done():
            raise  # a failure while closing: `_close` reports it
        opened.set_exception(error)


def _errlog() -> TextIO:
    """Where a stdio server's stderr goes: this process's stderr, looked up now (the SDK's default
    is the one of the moment it was imported), or the original one when the current stream has no
    file descriptor for a child process to write to (a test runner's or a notebook's capture)."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both the latter two
            continue
    return open(os.devnull, "w")


async def _close(label: str, task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        get_logger().warning("mcp.close_failed", server=label, error=_reason(task.exception()))


async def _list_tools(session: ClientSession) -> list[McpTool]:
    from mcp.types import PaginatedRequestParams

    tools: list[McpTool] = []
    cursor: str | None = None
    while True:
        page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _mcp_tool(server: _McpServer, tool: McpTool) -> ToolSpec:
    from pydantic_ai.tools import ToolDefinition

    async def call(args: dict[str, Any]) -> str:
        return _result_text(tool.name, await server.session.call_tool(tool.name, args))

    definition = ToolDefinition(
        name=tool.name, description=tool.description, parameters_json_schema=tool.input_schema
    )
    return ToolSpec(definition, call)


def _result_text(name: str, result: Any) -> str:
    """A tool result as the text the model reads; an error result raises, so it is recorded as one."""
    from mcp.types import CallToolResult, TextContent

    if not isinstance(result, CallToolResult):
        raise RuntimeError(f"MCP tool {name!r} asked for input, which an agent's tool call cannot give")
    text = "\n".join(
        item.text if isinstance(item, TextContent) else f"[{item.type} content]" for item in result.content
    )
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content)
    if result.is_error:
        raise RuntimeError(text or f"MCP tool {name!r} failed")
    return text


def _reason(error: BaseException | None) -> str:
    """The first line of the innermost error, unwrapping the exception groups anyio raises."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# -- the mixin ----------------------------------------------------------------------------------


@mixin
class ToolUseMixin(BaseMixin):
    """Options: `tools` (names given to `register_tool`, or `"package.module:function"`),
    `mcp_servers` (`{"command", "args", "env", "env_allow", "cwd"}` for stdio, `{"url"}` for
    streamable HTTP), `qmcp_servers` (`{"url", "tools", "token_env"}`: a QMCP server's
    `/v1/tools`), `allow` (only these tool names) and `deny` (never these; deny wins),
    `connect_timeout_seconds` (default 30).
    """

    name = "tool_use"
    options_model = ToolUseOptions
    description = "Python functions and MCP server tools (stdio or HTTP) with allow/deny lists"

    @classmethod
    def executable_items(cls, agent: str, options: dict[str, Any]) -> list[str]:
        parsed = cls.parse_options(agent, options)
        return [
            *(
                f"Python tool {reference!r} (imported, the model may call it)"
                if ":" in reference
                else f"registered tool {reference!r} (the model may call it)"
                for reference in parsed.tools
            ),
            *(server.description() for server in parsed.mcp_servers),
            *(server.description() for server in parsed.qmcp_servers),
        ]

    async def before_model(self, ctx: MixinContext) -> None:
        options = self.options(ctx)
        state = ctx.resources.state
        specs: list[ToolSpec] = []
        for reference in options.tools:
            key = f"tool_use:python:{reference}"
            if key not in state:
                state[key] = python_tool(reference)
            specs.append(state[key])
        for server in options.mcp_servers:
            connected = await _mcp_server(server, ctx.resources, options.connect_timeout_seconds)
            specs.extend(_mcp_tool(connected, tool) for tool in connected.tools)
        for qmcp in options.qmcp_servers:
            specs.extend(await _qmcp_tools(qmcp, ctx))
        ctx.tools = [*ctx.tools, *_select(ctx.agent.name, specs, options)]


async def _qmcp_tools(server: _QmcpServer, ctx: MixinContext) -> list[ToolSpec]:
    """The tools of a QMCP server, listed once per run; each call is a `POST /v1/tools/{name}`
    (recorded in the server's invocation history) carrying the run's correlation id."""
    from pydantic_ai.tools import ToolDefinition

    from ...client import AsyncQmcpClient, QmcpClientError

    key = f"tool_use:qmcp:{server.model_dump_json()}"
    state = ctx.resources.state
    if key not in state:
        token = os.environ.get(server.token_env) if server.token_env else None
        client = AsyncQmcpClient(
            server.address(), token=token or "", correlation_id=ctx.resources.correlation_id
        )
        ctx.resources.exit_stack.push_async_callback(client.aclose)
        try:
            offered = await client.list_tools()
        except (QmcpClientError, OSError) as error:
            raise MixinError(f"cannot list the tools of QMCP server {server.address()!r}: {error}") from None
        except Exception as error:  # httpx's transport errors
            raise MixinError(f"cannot reach QMCP server {server.address()!r}: {_reason(error)}") from None
        wanted = server.tools if server.tools is not None else [tool.name for tool in offered]
        missing = sorted(set(wanted) - {tool.name for tool in offered})
        if missing:
            raise MixinError(f"QMCP server {server.address()!r} offers no tool {', '.join(missing)}")

        def spec(name: str, description: str, schema: dict[str, Any] | None) -> ToolSpec:
            async def call(args: dict[str, Any]) -> Any:
                done = await client.invoke_tool(name, args)
                if done.error:
                    raise RuntimeError(done.error)
                return done.result

            definition = ToolDefinition(
                name=name, description=description, parameters_json_schema=schema or {}
            )
            return ToolSpec(definition, call)

        state[key] = [spec(t.name, t.description, t.input_schema) for t in offered if t.name in wanted]
    return list(state[key])


def _select(agent: str, specs: list[ToolSpec], options: ToolUseOptions) -> list[ToolSpec]:
    """The tools `allow` and `deny` leave; a name offered twice or allowed but absent is an error."""
    names = [spec.definition.name for spec in specs]
    if options.allow is not None:
        missing = sorted(set(options.allow) - set(names))
        if missing:
            raise MixinError(
                f"agent {agent!r} allows tools that none of its tools or servers offer: {', '.join(missing)}"
            )
    chosen = [
        spec
        for spec in specs
        if spec.definition.name not in options.deny
        and (options.allow is None or spec.definition.name in options.allow)
    ]
    seen: set[str] = set()
    for spec in chosen:
        if spec.definition.name in seen:
            raise MixinError(
                f"agent {agent!r} is offered two tools named {spec.definition.name!r}; remove one from "
                "its tools or mcp_servers"
            )
        seen.add(spec.definition.name)
    return chosen
