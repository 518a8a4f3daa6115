"""Process settings from `QMCP_*` environment variables (pydantic-settings)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DATABASE_URL", "DEFAULT_MODEL", "Settings", "SettingsError", "settings"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./agent.db"
DEFAULT_MODEL = "local:smollm2"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "qmcp"


class SettingsError(ValueError):
    """A `QMCP_*` variable holds a value its setting refuses: one line per variable, naming it (never
    its value, which may be a secret) and what it must be."""

    def __init__(self, error: ValidationError) -> None:
        lines = [
            f"QMCP_{'_'.join(map(str, item['loc'])).upper()}: {item['msg']}; fix it or unset it"
            for item in error.errors(include_url=False)
        ]
        super().__init__("\n".join(lines))


class Settings(BaseSettings):
    """What `settings()` returns: read again whenever the environment it comes from changed, so tests
    and subprocesses can change it."""

    model_config = SettingsConfigDict(
        env_prefix="QMCP_", extra="ignore", protected_namespaces=(), frozen=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    auto_migrate: bool = True
    """Upgrade a database's schema on its first use by this qmcp; off, such a database is refused until `qmcp db upgrade`."""
    db_pool_size: int = Field(default=10, ge=1, le=1000)
    db_max_overflow: int = Field(default=20, ge=0, le=1000)
    """A process holds at most `db_pool_size + db_max_overflow` PostgreSQL connections: keep the sum
    of its processes' under the server's `max_connections` (SQLite has no pool)."""
    model_override: str | None = None
    default_model: str = DEFAULT_MODEL
    log_level: str = "WARNING"
    log_format: str = "console"
    heartbeat_seconds: float = Field(default=0.5, gt=0, le=300)
    """How often a running execution's owner renews its lease (and sees cancel requests)."""
    lease_seconds: float = Field(default=10.0, gt=0, le=3600)
    """How long a lease lasts without a heartbeat before another process may take the execution over."""
    # The QMCP server (`qmcp serve`) and its clients.
    host: str = "127.0.0.1"
    port: int = Field(default=3333, ge=0, le=65535)
    api_token: SecretStr | None = None
    """Bearer token every endpoint but /health asks for; required to bind a non-loopback address."""
    allowed_hosts: str = ""
    """Comma-separated Host names the server answers besides localhost, 127.0.0.1, [::1] and its bound
    address (`qmcp serve --allowed-host`): the names a proxy or a public bind is reached by."""
    console_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    """How long a console sign-in lasts (sessions live in the server process: a restart ends them)."""
    login_attempts_per_minute: int = Field(default=10, ge=1, le=10_000)
    """Failed console sign-ins allowed per client address per minute (then 429)."""
    server_url: str | None = None
    """A QMCP server for clients, human_in_loop gates and tool_use (`http://127.0.0.1:3333`)."""
    max_concurrent_runs: int = Field(default=4, ge=1, le=1000)
    """Runs the server executes at once; more wait, in order, as `pending` executions."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_event_streams: int = Field(default=100, ge=1, le=100_000)
    """Live event streams (SSE) the server keeps open at once; more are answered 429."""
    max_event_streams_per_client: int = Field(default=10, ge=1, le=100_000)
    """Of those, how many one client address may hold (behind a proxy, the proxy is one client)."""
    mcp_max_sessions: int = Field(default=200, ge=1, le=100_000)
    """MCP sessions open at once; an `initialize` beyond it is answered 503."""
    mcp_session_idle_seconds: float = Field(default=600.0, gt=0, le=86_400)
    """An MCP session with no request in flight (and no open stream) this long is closed."""
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    """On SIGTERM, how long running runs may go on before they are left interrupted (resumable)."""
    resume_interrupted: bool = True
    """On start-up, the server resumes the runs a previous server process left unfinished."""
    tools_model: str | None = None
    """The model of the server's planner, executor and reviewer tools [default: default_model]."""
    tool_max_plan_steps: int = Field(default=50, ge=1, le=10_000)
    """Steps a plan given to the executor tool may have, and a planner's plan keeps; more is refused (413)."""
    tool_max_tokens: int = Field(default=200_000, ge=1)
    """Tokens one tool call's model calls may spend together (estimated before each call); then 422."""
    tool_max_cost_usd: float = Field(default=1.0, ge=0)
    """Dollars one tool call's model calls may spend together (models priced in the registry); then 422."""
    tool_model_calls_per_minute: int = Field(default=60, ge=1, le=1_000_000)
    """Model calls the server's tools make in a minute, for the whole server; more are refused (429)."""
    tool_tokens_per_minute: int = Field(default=1_000_000, ge=1)
    """Tokens (estimated) the server's tools' model calls take in a minute, for the whole server; then 429."""
    # What the server's remote callers may decide (qmcp.app's caller policy).
    allowed_models: str = ""
    """Comma-separated model overrides remote callers may ask for (`qmcp serve --allow-model`)."""
    allowed_runners: str = "local,async,metaflow"
    """Comma-separated runners remote callers may choose."""
    remote_max_timeout_seconds: int = Field(default=3600, gt=0, le=7 * 86_400)
    remote_max_tokens: int | None = Field(default=None, ge=1)
    remote_max_cost_usd: float | None = Field(default=None, ge=0)
    remote_max_concurrent: int = Field(default=16, ge=1, le=100_000)
    allow_remote_prune: bool = False
    """Remote callers may prune executions (`POST /v1/executions/prune`; `qmcp serve --allow-remote-prune`)."""
    # Retention (`qmcp.app.RetentionPolicy`): what `qmcp serve` prunes on a schedule.
    retention: str = ""
    """`AGE[:STATUS,...][:keep-last=N][:topology=NAME][:vacuum]`, e.g. `30d` or `30d:completed,failed`; empty: none."""
    retention_interval: str = "1h"
    """How often the server prunes by `retention` (a duration: 90m, 1h, 1d)."""
    data_dir: Path = Field(default_factory=_default_data_dir)
    """qmcp's own files (the flows of runs started over the server, ...): $XDG_DATA_HOME/qmcp."""
    flows_dir: Path | None = None
    """Where the server writes the Metaflow flows of the runs its clients start [default: DATA_DIR/flows]."""

    @property
    def server_flows_dir(self) -> Path:
        return self.flows_dir or self.data_dir / "flows"


_cached: tuple[tuple[tuple[str, str], ...], Settings] | None = None


def _source() -> tuple[tuple[str, str], ...]:
    """The environment `Settings` reads: `QMCP_*` in any case, and what the default data_dir is made of."""
    return tuple(
        sorted(
            (name, value)
            for name, value in os.environ.items()
            if name[:5].upper() == "QMCP_" or name in ("XDG_DATA_HOME", "HOME")
        )
    )


def settings() -> Settings:
    """The current settings. Building them costs about 1 ms (pydantic-settings reads and validates the
    environment), and a server asked for them several times per run start: they are built again only
    when the environment they come from changed (about 20 µs to check)."""
    global _cached
    source = _source()
    if _cached is None or _cached[0] != source:
        try:
            _cached = (source, Settings())
        except ValidationError as error:
            raise SettingsError(error) from None
    return _cached[1]
