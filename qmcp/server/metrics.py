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
        self.hitl = Counter(
            "qmcp_hitl_requests_total",
            "Human-in-the-loop requests by type and event",
            ["request_type", "event"],
        )


HTTP = _Http()


def metrics_text() -> bytes:
    """Every qmcp metric in the Prometheus text format."""
    return generate_latest(REGISTRY)


def metrics_json() -> dict[str, Any]:
    """The same metrics as JSON: `{name: {"type", "help", "samples": [{"name", "labels", "value"}]}}`."""
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
    return document
