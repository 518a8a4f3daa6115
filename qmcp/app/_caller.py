"""Who is asking, and what they may decide: the caller policy, one table for every door.

The operator (whoever runs Python or the CLI, or starts `qmcp serve`) decides everything. A remote
caller (HTTP, the console, MCP; with or without a token) reaches the server, not the machine: it
may set the input, a runner the operator offers, budgets and timeouts up to the server's, a
concurrency up to the server's cap, retries and a correlation id. Paths, environments, process
settings and models are the operator's: a remote model override must be on the operator's
allowlist (`qmcp serve --allow-model M`), never a `local:` or `recorded:` file, and a server
started with `--model M` runs everything on M.
Pruning executions deletes history: a remote caller may only on a server started with
`--allow-remote-prune` (`CallerPolicy.allow_remote_prune`, `qmcp.app.prune_executions`).

`RUN_OPTION_POLICY` names every option a run takes (each `RunConfig` field and each runner's
constructor options); `tests/app/test_caller_policy.py` fails when a field is added without a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from ..agentframework.errors import InvalidConfigError, PermissionDeniedError
from ..agentframework.models import describe_validation_error
from ..agentframework.runners import BaseRunner, RunConfig, RunnerRegistry

__all__ = [
    "RUN_OPTION_POLICY",
    "Caller",
    "CallerPolicy",
    "Door",
    "Permission",
    "RunOptions",
    "checked_run_options",
    "runner_option_names",
]


class Door(StrEnum):
    """The front door a request came through (also the `origin` recorded on executions it starts)."""

    PYTHON = "python"
    CLI = "cli"
    HTTP = "server"
    CONSOLE = "console"
    MCP = "mcp"
    METAFLOW = "metaflow"


@dataclass(frozen=True)
class Caller:
    """Who calls an operation: the local operator, or a remote client of the server."""

    door: Door
    remote: bool = False
    authenticated: bool = False
    """A remote caller that sent the server's token. It is still not the operator."""

    @classmethod
    def operator(cls, door: Door = Door.PYTHON) -> Caller:
        return cls(door)

    @classmethod
    def client(cls, door: Door, *, authenticated: bool = False) -> Caller:
        return cls(door, remote=True, authenticated=authenticated)


class Permission(StrEnum):
    """What a remote caller may do with one run option (the operator may always set it)."""

    ANY = "any"
    CAPPED = "capped"
    """Up to the server's limit (`CallerPolicy`); without a value, the server's limit applies."""
    ALLOWLIST = "allowlist"
    """Only a value the operator allows."""
    OPERATOR = "operator"
    """Never from a remote caller."""


RUN_OPTION_POLICY: Mapping[str, Permission] = MappingProxyType(
    {
        # RunConfig
        "correlation_id": Permission.ANY,
        "timeout_seconds": Permission.CAPPED,
        "checkpoint_enabled": Permission.ANY,
        "retry_on_failure": Permission.ANY,
        "max_retries": Permission.ANY,
        "retry_backoff_seconds": Permission.ANY,
        "max_tokens": Permission.CAPPED,
        "max_cost_usd": Permission.CAPPED,
        "max_concurrent": Permission.CAPPED,
        "model_override": Permission.ALLOWLIST,
        "log_level": Permission.OPERATOR,
        "trace_enabled": Permission.OPERATOR,
        "metrics_enabled": Permission.OPERATOR,
        "rate_limits": Permission.OPERATOR,
        "freeze_heap_above": Permission.OPERATOR,
        # Runners' constructor options
        "output_dir": Permission.OPERATOR,
        "environment": Permission.OPERATOR,
    }
)
"""Every run option and what a remote caller may do with it."""


@dataclass(frozen=True)
class CallerPolicy:
    """The operator's limits for remote callers (`qmcp serve`'s options and settings)."""

    runners: frozenset[str] = frozenset({"local", "async", "metaflow"})
    allowed_models: frozenset[str] = frozenset()
    """Model overrides a remote caller may ask for (`qmcp serve --allow-model M`)."""
    pinned_model: str | None = None
    """Every run and tool agent runs on this model (`qmcp serve --model M`)."""
    max_timeout_seconds: int = 3600
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_concurrent: int = 16
    flows_dir: str | None = None
    """Where the flows of Metaflow runs started by remote callers are written (the operator's directory)."""
    allow_remote_prune: bool = False
    """Remote callers may prune executions (`qmcp serve --allow-remote-prune`): it deletes history."""

    @classmethod
    def from_settings(cls, **overrides: Any) -> CallerPolicy:
        """The policy of `QMCP_*` settings; `overrides` (not None) win (`qmcp serve`'s options)."""
        from ..config import settings

        current = settings()
        values: dict[str, Any] = {
            "runners": frozenset(_split(current.allowed_runners)),
            "allowed_models": frozenset(_split(current.allowed_models)),
            "pinned_model": current.model_override,
            "max_timeout_seconds": current.remote_max_timeout_seconds,
            "max_tokens": current.remote_max_tokens,
            "max_cost_usd": current.remote_max_cost_usd,
            "max_concurrent": current.remote_max_concurrent,
            "flows_dir": str(current.server_flows_dir),
            "allow_remote_prune": current.allow_remote_prune,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def caps(self) -> Mapping[str, float | None]:
        """The server's limit of each capped option (None: no limit)."""
        return {
            "timeout_seconds": self.max_timeout_seconds,
            "max_tokens": self.max_tokens,
            "max_cost_usd": self.max_cost_usd,
            "max_concurrent": self.max_concurrent,
        }


@dataclass(frozen=True)
class RunOptions:
    """A run's options once checked against its caller: what the runner is built with."""

    runner: str
    config: RunConfig
    runner_options: dict[str, Any]


def runner_option_names(runner_class: type[BaseRunner]) -> tuple[str, ...]:
    """The constructor options a runner type adds to `BaseRunner`'s (async: max_concurrent, ...)."""
    return tuple(runner_class.option_names)


def checked_run_options(
    caller: Caller, policy: CallerPolicy, runner: str, config: Mapping[str, Any]
) -> RunOptions:
    """`config` (RunConfig fields and the runner's options) as `caller` may set it, or the first
    refusal: `InvalidConfigError` for an unknown or invalid option, `PermissionDeniedError` for one
    the caller may not decide. Nothing is written."""
    runner_class = RunnerRegistry.get(runner)
    own_options = runner_option_names(runner_class)
    if caller.remote and runner not in policy.runners:
        raise PermissionDeniedError(
            f"runner {runner!r} is not offered by this server; choose one of: {', '.join(sorted(policy.runners))}"
        )
    for name in config:
        if name not in RunConfig.model_fields and name not in own_options:
            known = sorted({*RunConfig.model_fields, *own_options})
            if caller.remote:
                known = [
                    k for k in known if RUN_OPTION_POLICY.get(k, Permission.OPERATOR) != Permission.OPERATOR
                ]
            raise InvalidConfigError(
                f"config.{name}: unknown option; the {runner} runner takes: {', '.join(known)}"
            )
    values = dict(config)
    if caller.remote:
        values = _remote_values(policy, runner, values)
    options = {name: values[name] for name in own_options if name in values}
    values = {name: value for name, value in values.items() if name in RunConfig.model_fields}
    try:
        run_config = RunConfig.model_validate(values)
    except ValidationError as error:
        raise InvalidConfigError(f"config.{describe_validation_error(error)}") from None
    return RunOptions(runner, run_config, options)


def _remote_values(policy: CallerPolicy, runner: str, values: dict[str, Any]) -> dict[str, Any]:
    for name, value in values.items():
        permission = RUN_OPTION_POLICY.get(name, Permission.OPERATOR)
        if permission is Permission.OPERATOR:
            raise PermissionDeniedError(
                f"config.{name} is set by the server's operator, not by a client; leave it out"
            )
        if permission is Permission.ALLOWLIST and value is not None:
            _check_model(policy, str(value))
        cap = policy.caps.get(name)
        if permission is Permission.CAPPED and value is not None and cap is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InvalidConfigError(f"config.{name}: expected a number, got {value!r}")
            if value > cap:
                raise PermissionDeniedError(f"config.{name} is at most {cap:g} on this server; ask for less")
    for name in ("timeout_seconds", "max_tokens", "max_cost_usd"):
        if values.get(name) is None and policy.caps[name] is not None:
            values[name] = policy.caps[name]
    if policy.pinned_model is not None:
        values["model_override"] = policy.pinned_model
    if runner == "metaflow":
        from ..config import settings

        values["output_dir"] = str(policy.flows_dir or settings().server_flows_dir)
    return values


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _check_model(policy: CallerPolicy, model: str, field: str = "config.model_override") -> None:
    """Refuse a remote caller's model override (`field` names it in the refusal) the operator did not allow."""
    if model.startswith("local:") and ("/" in model or "\\" in model or model.endswith(".gguf")):
        raise PermissionDeniedError(
            f"{field}: local model files are chosen by the server's operator, not by a client"
        )
    if model.strip().startswith("recorded:"):
        raise PermissionDeniedError(
            "config.model_override: recorded fixtures are files, chosen by the server's operator "
            "(qmcp serve --model recorded:FILE), not by a client"
        )
    if policy.pinned_model is not None:
        if model != policy.pinned_model:
            raise PermissionDeniedError(
                f"{field}: this server runs every agent on {policy.pinned_model} "
                "(qmcp serve --model); leave it out"
            )
        return
    if model not in policy.allowed_models:
        allowed = ", ".join(sorted(policy.allowed_models)) or "none"
        raise PermissionDeniedError(
            f"{field} {model!r} is not allowed on this server (allowed: {allowed}); "
            "the operator allows models with: qmcp serve --allow-model MODEL"
        )
