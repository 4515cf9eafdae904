"""
Handlers for C{twistd agilerpc --otel --module otelhandlers}, which also set
up the OpenTelemetry SDK as a deployment would (here, on import): a global
tracer provider whose spans are written, as they end, one JSON object per
line to C{spans.jsonl} in the server's working directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from agilerpc import rpc


class JsonLinesExporter(SpanExporter):
    """
    Writes each span to a file as a line of JSON: its name, kind, ids (hex,
    as W3C traceparent writes them), attributes and status.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as f:
            for span in spans:
                context = span.get_span_context()
                assert context is not None
                f.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "kind": span.kind.name,
                            "trace_id": f"{context.trace_id:032x}",
                            "span_id": f"{context.span_id:016x}",
                            "parent_id": None
                            if span.parent is None
                            else f"{span.parent.span_id:016x}",
                            "attributes": dict(span.attributes or {}),
                            "status": span.status.status_code.name,
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter("spans.jsonl")))
trace.set_tracer_provider(_provider)
_tracer = trace.get_tracer("otelhandlers")


@rpc
def traced(text: str) -> str:
    """
    Return C{text}, inside a span of the handler's own.
    """
    with _tracer.start_as_current_span("inner"):
        return text
