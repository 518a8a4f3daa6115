"""The QMCP server application: `create_app()` for uvicorn (or tests), `serve()` for `qmcp serve`.

One process: the HTTP API, the MCP endpoint at `/mcp`, and the workers running the runs it was
asked for, on the database of `QMCP_DATABASE_URL` (or `db_url`). Its runs are executions like any
other: the CLI sees them, and the server sees (and can cancel) the CLI's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.routing import BaseRoute, Route

from ..agentframework.errors import InvalidConfigError
from ..agentframework.registry import import_plugins
from ..agentframework.store import Database
from ..agentframework.topologies import freeze_start_up_heap
from ..app import CallerPolicy, RetentionPolicy
from ..config import settings
from ..observability import get_logger
from ..redaction import mask_url, register_secret
from ._hosts import LOOPBACK_NAMES, HostAllowlist
from ._mcp import mcp_server
from ._middleware import ServerMiddleware
from ._openapi import install_openapi
from ._retention import RetentionTask
from .api import ServerState, plain_hot_reads, router
from .console import ConsoleSessions, LoginLimiter
from .console import router as console_router
from .eval_reports import EvalReports
from .events import EventHub, StreamLimits
from .problems import install_problem_handlers
from .runs import RunManager
from .tools import ToolLimits

__all__ = ["ServerOptions", "check_bind", "create_app", "is_loopback", "serve"]


@dataclass(frozen=True)
class ServerOptions:
    """What `create_app` needs; every field defaults to its `QMCP_*` setting."""

    db_url: str
    api_token: str | None
    max_concurrent_runs: int
    max_body_bytes: int
    shutdown_grace_seconds: float
    resume_interrupted: bool
    model_override: str | None
    """The operator's pin (`qmcp serve --model M`): every run and tool agent runs on it."""
    log_level: str
    host: str = "127.0.0.1"
    allowed_models: tuple[str, ...] = ()
    """Model overrides remote callers may ask for (`--allow-model`, else QMCP_ALLOWED_MODELS)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names answered besides the loopback ones and the bound address (`--allowed-host`, else
    QMCP_ALLOWED_HOSTS): the names a proxy or a public bind is reached by."""
    console_session_seconds: float = 12 * 3600
    login_attempts_per_minute: int = 10
    max_event_streams: int = 100
    max_event_streams_per_client: int = 10
    mcp_max_sessions: int = 200
    mcp_session_idle_seconds: float = 600.0
    allow_remote_prune: bool = False
    """Remote callers may prune executions (`--allow-remote-prune`, else QMCP_ALLOW_REMOTE_PRUNE)."""
    retention: str = ""
    """What the server prunes on a schedule (QMCP_RETENTION, `qmcp.app.RetentionPolicy`); empty: nothing."""
    retention_interval: str = "1h"
    """How often it prunes (QMCP_RETENTION_INTERVAL, a duration)."""

    def policy(self) -> CallerPolicy:
        """What this server's remote callers may decide."""
        return CallerPolicy.from_settings(
            pinned_model=self.model_override,
            allowed_models=frozenset(self.allowed_models) or None,
            allow_remote_prune=self.allow_remote_prune,
        )

    @classmethod
    def from_settings(cls, **overrides: object) -> ServerOptions:
        current = settings()
        values: dict[str, object] = {
            "db_url": current.database_url,
            "api_token": current.api_token.get_secret_value() if current.api_token else None,
            "max_concurrent_runs": current.max_concurrent_runs,
            "max_body_bytes": current.max_body_bytes,
            "shutdown_grace_seconds": current.shutdown_grace_seconds,
            "resume_interrupted": current.resume_interrupted,
            "model_override": current.model_override,
            "log_level": current.log_level,
            "host": current.host,
            "allowed_hosts": _names(current.allowed_hosts),
            "console_session_seconds": current.console_session_hours * 3600,
            "login_attempts_per_minute": current.login_attempts_per_minute,
            "max_event_streams": current.max_event_streams,
            "max_event_streams_per_client": current.max_event_streams_per_client,
            "mcp_max_sessions": current.mcp_max_sessions,
            "mcp_session_idle_seconds": current.mcp_session_idle_seconds,
            "allow_remote_prune": current.allow_remote_prune,
            "retention": current.retention,
            "retention_interval": current.retention_interval,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]  # values of Settings' fields, which have these types


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _version() -> str:
    from importlib.metadata import version

    return version("qmcp")


def _settle_heap() -> None:
    """Import now what the first run would (pydantic-ai's model machinery: ~0.7 s with the event loop
    stopped, in the middle of serving), then freeze the start-up heap out of garbage collection."""
    from ..agentframework import llm

    # lazy: their modules load here (`classify_error`'s is the pydantic-ai call path, `make_test_model`'s
    # the offline models as pydantic-ai models; `call_model` itself answers offline calls without it)
    for name in ("call_model", "classify_error", "resolve_model", "make_test_model"):
        getattr(llm, name)
    freeze_start_up_heap()


def create_app(options: ServerOptions | None = None, *, owns_process: bool = False) -> FastAPI:
    """The server's ASGI application. Its lifespan opens the database and starts (then stops) the runs.

    `owns_process` (`qmcp serve`, not an app mounted in a host): once started, the server settles its
    heap (`_settle_heap`): `gc.freeze` is process-wide, for a process qmcp owns only."""
    options = options or ServerOptions.from_settings()
    retention = RetentionPolicy.parse(options.retention, options.retention_interval)  # one line if wrong
    import_plugins()  # QMCP_IMPORTS: the topologies, mixins and runners the server's runs may use
    version = _version()
    hub = EventHub()
    runs = RunManager(
        options.db_url,
        hub,
        max_concurrent=options.max_concurrent_runs,
        policy=options.policy(),
        log_level=options.log_level,
    )
    tool_limits = ToolLimits.from_settings()  # one cap on the server tools' spend, over HTTP and MCP
    mcp = mcp_server(runs, version, tool_limits)
    hosts = HostAllowlist.for_bind(options.host, options.allowed_hosts)
    # Sessions are bounded in number and closed when idle: each holds memory until it ends.
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        host=options.host,
        transport_security=hosts.mcp_security(),
        max_sessions=options.mcp_max_sessions,
        session_idle_timeout=options.mcp_session_idle_seconds,
    )
    log = get_logger("qmcp.server")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Open for the server's life: requests share its pool (an unusable database fails the start).
        async with Database(options.db_url) as db:
            app.state.qmcp.db = runs.db = db
            resumed = await runs.start(resume_interrupted=options.resume_interrupted)
            log.info("server.started", database=mask_url(options.db_url), resumed=resumed, version=version)
            pruning = app.state.retention = RetentionTask(retention) if retention else None
            if owns_process:
                _settle_heap()
            async with mcp.session_manager.run():
                try:
                    if pruning is not None:
                        pruning.start(db)
                    yield
                finally:
                    if pruning is not None:
                        await pruning.close()
                    await runs.close(options.shutdown_grace_seconds)
                    app.state.qmcp.db = runs.db = None
                    log.info("server.stopped")

    app = FastAPI(
        title="QMCP server",
        description="qmcp's tools, human-in-the-loop requests and agent topology runs, over HTTP and MCP.",
        version=version,
        lifespan=lifespan,
    )
    register_secret(options.api_token)  # a token given as an option is masked as one from the environment
    app.state.qmcp = ServerState(
        options.db_url,
        hub,
        runs,
        version,
        api_token=options.api_token,
        streams=StreamLimits(options.max_event_streams, options.max_event_streams_per_client),
    )
    sessions = app.state.console_sessions = ConsoleSessions(options.console_session_seconds)
    app.state.login_limiter = LoginLimiter(options.login_attempts_per_minute)
    app.state.tool_limits = tool_limits
    app.state.eval_reports = EvalReports()  # stopped evals' reports, for the API and the console
    install_problem_handlers(app)
    app.router.routes.extend(router.routes)  # not nested: see qmcp.server.api
    app.include_router(console_router)  # the browser console: /, /executions/..., /topologies, /login
    app.router.routes.extend(mcp_app.routes)  # /mcp, served by the SDK's session manager
    install_openapi(app, list(app.router.routes))  # the document keeps the routes' declared order
    app.router.routes[:] = plain_hot_reads(hot_first(app.router.routes, HOT_PREFIXES))
    app.add_middleware(
        ServerMiddleware,
        hosts=hosts,
        token=options.api_token,
        sessions=sessions,
        max_body=options.max_body_bytes,
    )
    return app


HOT_PREFIXES = ("/v1/executions", "/v1/topologies")
"""The routes clients call most (polling an execution, starting runs), matched first."""


def hot_first(routes: list[BaseRoute], prefixes: tuple[str, ...]) -> list[BaseRoute]:
    """`routes` with those under `prefixes` moved to the front, each group in its own order.

    The router tries every route in turn until one matches (about 1 µs each): a poll of
    `/v1/executions/{id}` tried 29 routes before its own. The answer to any request stays the same:
    a group jumps only over routes of literal paths that cannot match any path under its prefix
    (checked here: a group that could not jump stays where it is), and keeps its order against the
    routes after it."""
    moved: list[BaseRoute] = []
    rest = list(routes)
    for prefix in prefixes:
        group = [route for route in rest if _literal(route).startswith(prefix)]
        first = rest.index(group[0]) if group else 0
        if any(prefix.startswith(_literal(r)) or _literal(r).startswith(prefix) for r in rest[:first]):
            continue  # a route before the group could match a path under its prefix
        moved += group
        rest = [route for route in rest if route not in group]
    return moved + rest


def _literal(route: BaseRoute) -> str:
    """The fixed start of the paths `route` matches ("" for a mount or a router: any path)."""
    path = getattr(route, "path", None)
    if not isinstance(path, str) or not isinstance(route, Route):
        return ""
    return path.split("{", 1)[0]


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (unknown names count as not loopback)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


MIN_TOKEN_LENGTH = 32


def check_bind(host: str, token: str | None, allowed_hosts: tuple[str, ...] = ()) -> None:
    """Refuse to serve beyond this machine without a token of `MIN_TOKEN_LENGTH` characters, or on every
    address without a Host name to answer to (one line each, before anything starts)."""
    if is_loopback(host):
        return
    if not token:
        raise InvalidConfigError(
            f"refusing to serve on {host}, which other machines can reach, without a token: "
            "set QMCP_API_TOKEN (clients then send Authorization: Bearer <token>), or bind 127.0.0.1"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise InvalidConfigError(
            f"refusing to serve on {host} with a token of {len(token)} characters: it needs at least "
            f'{MIN_TOKEN_LENGTH}; make one with python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    if host.strip("[]") in ("0.0.0.0", "::") and not allowed_hosts:
        raise InvalidConfigError(
            f"serving on every address ({host}) answers only the Host names {', '.join(LOOPBACK_NAMES)}: "
            "add --allowed-host NAME (or QMCP_ALLOWED_HOSTS) for each name clients reach this server by"
        )


def serve(
    options: ServerOptions,
    *,
    port: int,
    access_log: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the server on uvicorn until SIGINT/SIGTERM (which drain the runs, see `RunManager.close`).
    `on_ready(base_url)` is called once it listens; `access_log` logs each request (uvicorn's format)."""
    import logging

    import uvicorn

    from ._listening import AnnouncingServer

    check_bind(options.host, options.api_token, options.allowed_hosts)
    with contextlib.closing(
        socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET)
    ) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((options.host.strip("[]"), port))
        except OSError as error:
            raise InvalidConfigError(f"cannot listen on {options.host}:{port}: {error.strerror}") from None
    config = uvicorn.Config(
        create_app(options, owns_process=True),
        host=options.host.strip("[]"),
        port=port,
        log_level="warning",
        access_log=access_log,
        timeout_graceful_shutdown=int(options.shutdown_grace_seconds) + 5,
        timeout_keep_alive=30,  # clients that pool connections (httpx) reuse them after a pause
    )
    if access_log:  # uvicorn logs requests at INFO, below the "warning" that keeps its own chatter quiet
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    server = AnnouncingServer(config, on_ready or (lambda _url: None))
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: a second Ctrl-C ends it quietly
        server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE: the lifespan failed, and uvicorn logged why
