"""An OpenTelemetry SDK that appends every finished span, as one JSON line, to QMCP_TEST_SPAN_LOG.

Imported by the flow's steps (through QMCP_METAFLOW_IMPORTS) and by the process launching the flow,
so a test can see the spans of every process of a Metaflow run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class _FileExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(os.environ["QMCP_TEST_SPAN_LOG"], "a") as log:
            for span in spans:
                parent = span.parent.span_id if span.parent else None
                record = {
                    "name": span.name,
                    "trace_id": f"{span.context.trace_id:032x}",
                    "span_id": f"{span.context.span_id:016x}",
                    "parent_id": f"{parent:016x}" if parent else None,
                    "pid": os.getpid(),
                    "attributes": dict(span.attributes or {}),
                }
                log.write(json.dumps(record) + "\n")
        return SpanExportResult.SUCCESS


_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_FileExporter()))
trace.set_tracer_provider(_provider)
