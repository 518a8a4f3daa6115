"""The server's Prometheus metrics, beside the framework's run, step and token metrics (one registry)."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, generate_latest

__all__ = ["HTTP", "metrics_json", "metrics_text"]


class _Http:
    def __init__(self) -> None:
        self.requests = Counter(
            "qmcp_http_requests_total",
            "HTTP requests by method, route and status",
            ["method", "path", "status"],
        )
        self.duration = Histogram(
            "qmcp_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "path"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.tool_invocations = Counter(
            "qmcp_tool_invocations_total", "Tool invocations by tool and status", ["tool", "status"]
        )
        self.tool_duration = Histogram(
            "qmcp_tool_duration_seconds",
            "Tool invocation latency by tool",
            ["tool"],
            buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120),
        )
        # The children of the labels seen (as many as Prometheus keeps): a `labels()` lookup costs
        # about 5 µs, twice per request; one lookup finds both.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        children = self._children.get((method, path, status))
        if children is None:
            children = self._children[(method, path, status)] = (
                self.requests.labels(method, path, str(status)),
                self.duration.labels(method, path),
            )
        counted, timed = children
        counted.inc()
        timed.observe(seconds)


HTTP = _Http()


def metrics_text() -> bytes:
    """Every qmcp metric in the Prometheus text format."""
    return generate_latest(REGISTRY)


def metrics_json() -> dict[str, Any]:
    """The same metrics as JSON, in upstream's shape and ours beside it.

    Upstream's: `{"counters": {name: {labels: value}}, "gauges": {...}, "histograms": {name: {labels:
    {"count", "sum"}}}}`, where `labels` is `k="v",...` sorted by name (`""` without labels). Ours:
    `{name: {"type", "help", "samples": [{"name", "labels", "value"}]}}` for every qmcp metric.
    """
    upstream: dict[str, dict[str, dict[str, Any]]] = {"counters": {}, "gauges": {}, "histograms": {}}
    document: dict[str, Any] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("qmcp_"):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name  # as /metrics names it
        document[name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": [
                {"name": sample.name, "labels": dict(sample.labels), "value": sample.value}
                for sample in family.samples
            ],
        }
        _upstream_entry(upstream, family.type, name, family.samples)
    return upstream | document


def _upstream_entry(
    upstream: dict[str, dict[str, dict[str, Any]]], kind: str, name: str, samples: Any
) -> None:
    """One metric family in upstream's `/metrics/json` shape (its `_created` samples left out)."""
    if kind == "counter":
        values = upstream["counters"].setdefault(name, {})
        for sample in samples:
            if sample.name == name:
                values[_label_key(sample.labels)] = _whole(sample.value)
    elif kind == "gauge":
        values = upstream["gauges"].setdefault(name, {})
        for sample in samples:
            values[_label_key(sample.labels)] = sample.value
    elif kind in ("histogram", "summary"):
        series = upstream["histograms"].setdefault(name, {})
        for sample in samples:
            part = sample.name.removeprefix(name)
            if part in ("_count", "_sum"):
                value = _whole(sample.value) if part == "_count" else sample.value
                series.setdefault(_label_key(sample.labels), {"count": 0, "sum": 0.0})[part[1:]] = value


def _whole(value: float) -> float | int:
    """A count as upstream's integer (Prometheus keeps every value a float)."""
    return int(value) if value.is_integer() else value


def _label_key(labels: dict[str, str]) -> str:
    """Upstream's key of a labelled value: `k="v"` pairs sorted by name, joined by commas."""
    return ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
