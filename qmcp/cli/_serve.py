"""`qmcp serve` (the QMCP server on uvicorn) and `qmcp mcp` (its MCP tools over stdio)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._state import cli_state, run_async

__all__ = ["mcp_stdio", "serve"]


def _missing_server() -> typer.Exit:
    from ._output import EXIT_USAGE, stderr

    stderr().print(
        "error: the server needs FastAPI, uvicorn and the MCP SDK: pip install 'qmcp[server]'", markup=False
    )
    return typer.Exit(EXIT_USAGE)


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on \\[default: $QMCP_HOST, else 127.0.0.1]"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", min=0, max=65535, help="Port (0: any free one) \\[default: $QMCP_PORT, else 3333]"
        ),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log each request (client, method, path, status) on stdout, as uvicorn does.",
        ),
    ] = False,
    db: Annotated[
        str | None,
        typer.Option("--db", metavar="URL", help="Database URL or SQLite file \\[default: the global --db]"),
    ] = None,
    resume_interrupted: Annotated[
        bool,
        typer.Option(
            "--resume-interrupted/--no-resume-interrupted",
            help="Resume the runs a previous server process left unfinished.",
        ),
    ] = True,
    allow_model: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-model",
            metavar="MODEL",
            help="A model override clients may ask for (repeatable) \\[default: $QMCP_ALLOWED_MODELS, else none]. "
            "The global --model pins every run and tool agent instead.",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="NAME",
            help="A Host name (or name:port) to answer besides localhost, 127.0.0.1, [::1] and the bound "
            "address, e.g. a proxy's (repeatable) \\[default: $QMCP_ALLOWED_HOSTS]; any other Host gets 421.",
        ),
    ] = None,
    allow_remote_prune: Annotated[
        bool,
        typer.Option(
            "--allow-remote-prune",
            help="Let clients prune executions (POST /v1/executions/prune) \\[default: $QMCP_ALLOW_REMOTE_PRUNE, "
            "else only the operator, with qmcp executions prune].",
        ),
    ] = False,
) -> None:
    """Serve the QMCP API, the run console and MCP at /mcp (SIGTERM drains the running runs).

    Once it listens it prints one line to stderr: the console, API docs and MCP URLs, and whether a
    token is required. Without QMCP_API_TOKEN it listens on loopback only; with it, every endpoint
    but /health asks for Authorization: Bearer <token>.
    """
    from qmcp.config import settings

    from ._run import run_config

    state = cli_state(ctx)
    if db:
        state.db = db
    try:
        from qmcp.server import ServerOptions, ready_line
        from qmcp.server import serve as run_server
    except ImportError:
        raise _missing_server() from None
    run_config(state)  # logging to this terminal, at the level --verbose/--quiet ask for
    current = settings()
    options = ServerOptions.from_settings(
        db_url=state.db_url,
        host=host,
        model_override=state.model,
        resume_interrupted=resume_interrupted,
        log_level="INFO" if state.verbose else None,
        allowed_models=tuple(allow_model) if allow_model else None,
        allowed_hosts=tuple(allowed_host) if allowed_host else None,
        allow_remote_prune=True if allow_remote_prune else None,
    )
    from ._output import stderr

    def announce(base_url: str) -> None:
        stderr().print(ready_line(base_url, options.api_token is not None), markup=False)

    run_server(
        options, port=port if port is not None else current.port, access_log=access_log, on_ready=announce
    )


def mcp_stdio(ctx: typer.Context) -> None:
    """Serve the MCP tools (list_topologies, run_topology, get_execution, list_human_requests,
    respond_to_human_request, and the server's echo, planner, executor and reviewer) over stdio,
    for desktop MCP clients."""
    state = cli_state(ctx)
    try:
        from qmcp.app import CallerPolicy
        from qmcp.server import EventHub, RunManager, mcp_server
    except ImportError:
        raise _missing_server() from None
    from importlib.metadata import version

    from qmcp.agentframework.store import Database
    from qmcp.config import settings

    async def main() -> None:
        runs = RunManager(
            state.db_url,
            EventHub(),
            max_concurrent=settings().max_concurrent_runs,
            policy=CallerPolicy.from_settings(pinned_model=state.model),
            origin="mcp",
        )
        async with Database(state.db_url) as db:
            runs.db = db
            await runs.start(resume_interrupted=False)
            try:
                await mcp_server(runs, version("qmcp")).run_stdio_async()
            finally:
                await runs.close(settings().shutdown_grace_seconds)

    run_async(main())
