"""Logs, metrics (Prometheus) and traces (OpenTelemetry) for runs and steps.

Logs go through the standard `logging` logger `qmcp`, and library code configures nothing: a host
that configured no logging sees nothing (the logger has only a `NullHandler`, as the logging docs
ask of libraries), and a host's own configuration decides where records go. Every record of a run
carries its `execution_id` and `correlation_id` (record attributes, and in the message text).
A run's `RunConfig.log_level` is the lowest level the run emits, not a level set on any logger.
The processes qmcp owns (the CLI, the server) call `configure_logging`, which renders the records
with structlog; library code never imports structlog. Metrics and spans are recorded only when the
run's config asks for them; without an OpenTelemetry SDK configured, spans are free.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, TextIO

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import REGISTRY, Counter
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .redaction import redact, redact_log_values

__all__ = [
    "LOGGER_NAME",
    "METRICS",
    "GenAI",
    "RunLogger",
    "StepMetrics",
    "configure_logging",
    "continued_trace",
    "genai_model",
    "genai_provider",
    "get_logger",
    "log_context",
    "mark_failed",
    "record_failure",
    "reset_logging",
    "step_tracer",
    "trace_carrier",
    "trace_environment",
    "tracer",
    "tracing_active",
]

LOGGER_NAME = "qmcp"
logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())  # no "last resort" output in hosts

_CLI_HANDLER = "qmcp-cli"
_context: contextvars.ContextVar[dict[str, str | None]] = contextvars.ContextVar("qmcp_log_context")


def _level(level: str | int | None, default: int = logging.INFO) -> int:
    if isinstance(level, int):
        return level
    return logging.getLevelNamesMapping().get((level or "").upper(), default)


class _Message:
    """A record's message, rendered only if a handler formats it: `event key=value ...`."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, fields: dict[str, Any]) -> None:
        self.event, self.fields = event, fields

    def __str__(self) -> str:
        parts = [self.event, *(f"{k}={v}" for k, v in self.fields.items() if v is not None)]
        return " ".join(parts)


class RunLogger:
    """Structured events on the standard logger `qmcp`: `log.info("run.start", topology=...)`.

    Records below `level` (a run's `RunConfig.log_level`) are not emitted; the others only when the
    host's logging configuration lets the `qmcp` logger emit them (`isEnabledFor`), so a disabled
    event costs one comparison. Values are passed through the redaction of URL passwords and API keys.
    """

    __slots__ = ("_logger", "_threshold")

    def __init__(self, name: str = LOGGER_NAME, level: str | int | None = None) -> None:
        self._logger = logging.getLogger(name)
        self._threshold = logging.NOTSET if level is None else _level(level)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if level < self._threshold or not self._logger.isEnabledFor(level):
            return
        exc_info = fields.pop("exc_info", None)
        values = {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        ids = _context.get({})
        message = _Message(event, values | {k: v for k, v in ids.items() if v is not None})
        extra = {
            "execution_id": ids.get("execution_id"),
            "correlation_id": ids.get("correlation_id"),
            "qmcp_event": event,
            "qmcp_fields": values,
        }
        self._logger.log(level, message, exc_info=exc_info, extra=extra, stacklevel=3)


def get_logger(name: str = LOGGER_NAME, level: str | int | None = None) -> RunLogger:
    """A logger of events on the standard logger `name`; `level` is the lowest level it emits."""
    return RunLogger(name, level)


@contextlib.contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Put `values` (a run's execution and correlation ids) on every qmcp log record inside."""
    token = _context.set(_context.get({}) | values)
    try:
        yield
    finally:
        _context.reset(token)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to the `sys.stderr` of the moment: tests and the CLI's runner swap it."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _record_fields(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: a `qmcp` record's event name, fields and ids as the line's keys."""
    record = event.get("_record")
    if record is not None and hasattr(record, "qmcp_event"):
        event["event"] = record.qmcp_event
        event.update(record.qmcp_fields)
        for name in ("execution_id", "correlation_id"):
            if getattr(record, name, None) is not None:
                event[name] = getattr(record, name)
    return event


def configure_logging(level: str = "WARNING", fmt: str = "console") -> None:
    """Render the `qmcp` logger's records on stderr at `level`, as console text or JSON lines.

    For the processes qmcp owns — the CLI and the server — never called by library code. It
    touches only the `qmcp` logger (its level, one handler it replaces on each call, and no
    propagation to the root logger, so a line is not printed twice). structlog is imported here:
    it loads rich's traceback renderer (about 0.1 s), which a process that logs nothing should not pay.
    """
    import structlog

    # Plain tracebacks: rich's (structlog's default) print every frame's variables, thousands of lines.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    handler = _StderrHandler()
    handler.set_name(_CLI_HANDLER)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                _record_fields,
                redact_log_values,  # no password of a URL in any log line
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.format_exc_info] if fmt == "json" else []),
                renderer,
            ],
        )
    )
    reset_logging()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(_level(level, logging.WARNING))
    logger.propagate = False


def reset_logging() -> None:
    """Undo `configure_logging`: the `qmcp` logger as a library leaves it (level unset, propagating)."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if h.get_name() == _CLI_HANDLER]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


# -- traces -------------------------------------------------------------------------------------------

tracer = trace.get_tracer("qmcp")


def tracing_active() -> bool:
    """Whether an OpenTelemetry SDK is installed to record spans; without one, skip making them."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def step_tracer(enabled: bool) -> trace.Tracer | None:
    """The tracer for a run's per-step spans: none when the run turns tracing off or nothing records."""
    return tracer if enabled and tracing_active() else None


def trace_carrier() -> dict[str, str]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`), through the
    configured propagator; empty when no span is recording."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def trace_environment() -> dict[str, str]:
    """The current trace context as environment variables (`TRACEPARENT`, `TRACESTATE`), for a
    process started for this run (a Metaflow flow and its tasks); see `continued_trace`."""
    return {name.upper(): value for name, value in trace_carrier().items()}


@contextlib.contextmanager
def continued_trace(carrier: Mapping[str, str] | None = None) -> Iterator[None]:
    """Make the spans started inside children of the trace in `carrier`.

    `carrier` holds W3C headers (e.g. an HTTP request's: the server calls this around a run it
    starts for a request); None reads `TRACEPARENT`/`TRACESTATE` from the environment (what
    `trace_environment` gave a Metaflow task). Without a trace to continue, nothing changes.
    """
    if carrier is None:
        carrier = {
            name.lower(): os.environ[name] for name in ("TRACEPARENT", "TRACESTATE") if name in os.environ
        }
    else:
        carrier = {name.lower(): value for name, value in carrier.items()}
    if "traceparent" not in carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


# -- the GenAI semantic conventions ----------------------------------------------------------------------


class GenAI:
    """Names and values of OpenTelemetry's GenAI semantic conventions that qmcp's spans use.

    Copied from `opentelemetry-semantic-conventions` (>= 0.63b0, `semconv._incubating.attributes.
    gen_ai_attributes`), as OpenTelemetry advises for incubating conventions: a library that imports
    them breaks when they move (they did: to the semantic-conventions-genai repository), and that
    package's version is pinned exactly by the SDK its host chooses. tests/core/test_genai_spans.py
    checks every span against the package's own constants.
    """

    OPERATION_NAME = "gen_ai.operation.name"
    PROVIDER_NAME = "gen_ai.provider.name"
    AGENT_NAME = "gen_ai.agent.name"
    WORKFLOW_NAME = "gen_ai.workflow.name"
    REQUEST_MODEL = "gen_ai.request.model"
    REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
    REQUEST_TEMPERATURE = "gen_ai.request.temperature"
    REQUEST_TOP_P = "gen_ai.request.top_p"
    RESPONSE_MODEL = "gen_ai.response.model"
    RESPONSE_ID = "gen_ai.response.id"
    RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
    USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
    USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
    ERROR_TYPE = "error.type"  # stable, in `semconv.attributes.error_attributes`
    SERVER_ADDRESS = "server.address"
    SERVER_PORT = "server.port"

    CHAT = "chat"
    INVOKE_AGENT = "invoke_agent"
    INVOKE_WORKFLOW = "invoke_workflow"
    OTHER_ERROR = "_OTHER"  # `ErrorTypeValues.OTHER`: a failure whose cause is not known


# A model string's provider prefix (qmcp's and pydantic-ai's, which are the same names) -> the
# conventions' well-known `gen_ai.provider.name`. `gateway/<provider>` is pydantic-ai's gateway to it.
_WELL_KNOWN_PROVIDERS = {
    "anthropic": "anthropic",
    "openai": "openai",
    "openai-chat": "openai",
    "openai-responses": "openai",
    "azure": "azure.ai.openai",
    "azure-responses": "azure.ai.openai",
    "google": "gcp.gemini",  # the Gemini API (GOOGLE_API_KEY); Vertex AI is `google-cloud:`
    "google-interactions": "gcp.gemini",
    "google-cloud": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "bedrock-mantle": "aws.bedrock",
    "mistral": "mistral_ai",
    "groq": "groq",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "grok": "x_ai",
    "perplexity": "perplexity",
}
# Models the conventions cannot know, under custom values (the attribute is an open enum).
_QMCP_PROVIDERS = {
    "test": "qmcp.test",  # the offline test model
    "local": "qmcp.local",  # the embedded llama.cpp model
    "openai-compatible": "qmcp.openai_compatible",  # any endpoint speaking OpenAI's API
}


def genai_provider(model: str) -> str:
    """`gen_ai.provider.name` for a qmcp model string: the conventions' well-known value of its
    provider (`mistral:...` -> `mistral_ai`), qmcp's own for its models (`test` -> `qmcp.test`,
    a model registered under a plain name -> `qmcp.registered`), else the prefix in snake case
    (`ollama`, `vllm`, `lmstudio`, ...). `model` is normalised (`llm.normalize_model_string`): a bare
    `claude-...` has become `anthropic:claude-...`."""
    prefix, colon, _ = model.partition(":")
    if not colon:
        return _QMCP_PROVIDERS["test"] if model == "test" else "qmcp.registered"
    prefix = prefix.lower().removeprefix("gateway/")
    return _WELL_KNOWN_PROVIDERS.get(prefix) or _QMCP_PROVIDERS.get(prefix) or prefix.replace("-", "_")


def genai_model(model: str) -> str:
    """`gen_ai.request.model`: the name the provider is asked for, without qmcp's prefix
    (`anthropic:claude-sonnet-4-5` -> `claude-sonnet-4-5`)."""
    return model.partition(":")[2] or model


def record_failure(span: trace.Span, error: BaseException, error_type: str | None = None) -> None:
    """Mark `span` failed by `error`: status ERROR, `error.type` (its class unless `error_type` says
    better) and an `exception` event whose message is redacted. Spans record exceptions this way,
    never with `record_exception`: a provider's raw error (and its chain) may quote the key it was sent."""
    kind = error_type or type(error).__qualname__
    message = redact(f"{type(error).__name__}: {error}")
    span.add_event("exception", {"exception.type": type(error).__name__, "exception.message": message})
    mark_failed(span, kind, message)


def mark_failed(span: trace.Span, error_type: str | None, message: str | None) -> None:
    """Status ERROR with `error.type` (`_OTHER` when the cause is not known) and the (redacted) message."""
    span.set_attribute(GenAI.ERROR_TYPE, error_type or GenAI.OTHER_ERROR)
    span.set_status(trace.Status(trace.StatusCode.ERROR, redact(message) if message else None))


_STEP_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_STEP_LATENCY_LE = (*(repr(bound) for bound in _STEP_LATENCY_BUCKETS), "+Inf")
"""The buckets' `le` labels, as prometheus-client writes them."""
_STEP_OUTCOMES = ("completed", "replayed", "failed")


class StepMetrics(Collector):
    """`qmcp_steps_total{outcome}`, `qmcp_tokens_total{direction}` and `qmcp_step_latency_seconds`,
    counted under one lock and turned into metric families when the registry is scraped.

    A step updates four series at once: as prometheus-client's `Counter`s and `Histogram` (a lock and
    a check per update) that cost about 5 µs a step in a running pipeline, 5 % of a durable step, and
    about 50 ms of a 10,000-member fan-out; here it is one lock and a few additions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._created = time.time()
        self._outcomes = dict.fromkeys(_STEP_OUTCOMES, 0)
        self._tokens = {"input": 0, "output": 0}
        self._buckets = [0] * (len(_STEP_LATENCY_BUCKETS) + 1)  # the last: above every bound
        self._latency_sum = 0.0

    def record(
        self, outcome: str, input_tokens: int = 0, output_tokens: int = 0, latency_s: float | None = None
    ) -> None:
        """Count one step that ended with `outcome`, with the tokens it used and its model call's latency."""
        with self._lock:
            self._outcomes[outcome] += 1
            self._tokens["input"] += input_tokens
            self._tokens["output"] += output_tokens
            if latency_s is not None:  # bisect_left: the first bucket whose bound is >= it (`le`)
                self._buckets[bisect.bisect_left(_STEP_LATENCY_BUCKETS, latency_s)] += 1
                self._latency_sum += latency_s

    def steps(self, outcome: str) -> int:
        """Steps counted with `outcome` since the process started."""
        return self._outcomes[outcome]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            outcomes, tokens = dict(self._outcomes), dict(self._tokens)
            buckets, latency_sum = list(itertools.accumulate(self._buckets)), self._latency_sum
        # the `_created` series, unless prometheus-client's `disable_created_metrics()` (or its
        # PROMETHEUS_DISABLE_CREATED_SERIES) turned them off, as its own metrics do
        created = self._created if getattr(prometheus_metrics, "_use_created", True) else None
        steps = CounterMetricFamily(
            "qmcp_steps", "Agent steps by outcome (completed, replayed, failed)", labels=["outcome"]
        )
        for outcome, count in outcomes.items():
            steps.add_metric([outcome], float(count), created=created)
        used = CounterMetricFamily("qmcp_tokens", "Tokens used by agent steps", labels=["direction"])
        for direction, count in tokens.items():
            used.add_metric([direction], float(count), created=created)
        latency = HistogramMetricFamily("qmcp_step_latency_seconds", "Latency of agent model calls")
        counts = [(le, float(count)) for le, count in zip(_STEP_LATENCY_LE, buckets, strict=True)]
        latency.add_metric([], counts, latency_sum)
        if created is not None:
            latency.add_sample("qmcp_step_latency_seconds_created", {}, created)
        yield from (steps, used, latency)

    def describe(self) -> Iterator[Metric]:
        """The families without values: the registry checks their names against the others' when registered."""
        yield CounterMetricFamily("qmcp_steps", "", labels=["outcome"])
        yield CounterMetricFamily("qmcp_tokens", "", labels=["direction"])
        yield HistogramMetricFamily("qmcp_step_latency_seconds", "")


class _Metrics:
    def __init__(self) -> None:
        self.runs = Counter(
            "qmcp_runs_total", "Topology runs by topology type and final status", ["topology_type", "status"]
        )
        self.hitl = Counter(
            "qmcp_hitl_requests_total",
            "Human-in-the-loop requests by type (approval, input, review, other) and action (created, responded)",
            ["type", "action"],
        )
        self.steps = StepMetrics()
        REGISTRY.register(self.steps)


METRICS = _Metrics()
