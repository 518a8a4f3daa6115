"""Logs (structlog), metrics (Prometheus) and traces (OpenTelemetry) for runs and steps.

Logging is configured once per process; the correlation id and execution id are bound as
context variables so every line of a run carries them. Metrics and spans are recorded only
when the run's config asks for them; without an OpenTelemetry SDK configured, spans are free.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from prometheus_client import Counter, Histogram

from ._redact import redact_log_values

__all__ = [
    "METRICS",
    "configure_logging",
    "get_logger",
    "log_context",
    "step_tracer",
    "tracer",
    "tracing_active",
]

_configured = False


def configure_logging(level: str = "WARNING", fmt: str = "console") -> None:
    """Route structlog to stderr at `level`, as JSON lines or console text.

    structlog is imported here and not with this module: it loads rich's traceback renderer
    (about 0.1 s), which a process that logs nothing — a Metaflow step — should not pay.
    """
    import structlog

    global _configured
    # Plain tracebacks: rich's (structlog's default) print every frame's variables, thousands of lines.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            redact_log_values,  # no password of a URL in any log line
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), 30)
        ),
        logger_factory=lambda *_: structlog.PrintLogger(
            sys.stderr
        ),  # looked up per logger: stderr may be swapped
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str = "qmcp", level: str | None = None) -> Any:
    """A structlog logger; `level` (e.g. a run's `RunConfig.log_level`) overrides QMCP_LOG_LEVEL."""
    if not _configured:
        from .config import settings

        current = settings()
        configure_logging(current.log_level, current.log_format)
    import structlog

    if level is None:
        return structlog.get_logger(name)
    number = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    # Bound now: a lazy proxy would rebuild the logger on every call, and runs log per step.
    return structlog.wrap_logger(
        None, wrapper_class=structlog.make_filtering_bound_logger(number), logger_name=name
    ).bind()


@contextlib.contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Bind `values` to every log line of the code inside, e.g. a run's execution id."""
    import structlog

    with structlog.contextvars.bound_contextvars(**values):
        yield


tracer = trace.get_tracer("qmcp")


def tracing_active() -> bool:
    """Whether an OpenTelemetry SDK is installed to record spans; without one, skip making them."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def step_tracer(enabled: bool) -> trace.Tracer | None:
    """The tracer for a run's per-step spans: none when the run turns tracing off or nothing records."""
    return tracer if enabled and tracing_active() else None


class _Metrics:
    def __init__(self) -> None:
        self.runs = Counter(
            "qmcp_runs_total", "Topology runs by topology type and final status", ["topology_type", "status"]
        )
        self.steps = Counter(
            "qmcp_steps_total", "Agent steps by outcome (completed, replayed, failed)", ["outcome"]
        )
        self.tokens = Counter("qmcp_tokens_total", "Tokens used by agent steps", ["direction"])
        self.step_latency = Histogram(
            "qmcp_step_latency_seconds",
            "Latency of agent model calls",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        # The labelled children steps update, looked up once (runs record several per step).
        self.step_outcomes = {
            outcome: self.steps.labels(outcome) for outcome in ("completed", "replayed", "failed")
        }
        self.input_tokens = self.tokens.labels("input")
        self.output_tokens = self.tokens.labels("output")


METRICS = _Metrics()
