"""
Tracing with OpenTelemetry (pip install 'agilerpc[otel]'): the client's
span and the server's are one trace.  Here the spans go to an exporter in
memory; in production, set up the SDK with your exporter (or run under
opentelemetry-instrument) and leave out tracerProvider.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from agilerpc import Registry, RpcClient, RpcServerFactory


def tracerProvider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def serverFactory(
    reactor: Any, registry: Registry, provider: TracerProvider
) -> RpcServerFactory:
    # twistd agilerpc --otel does this with the global tracer provider.
    return RpcServerFactory(registry, reactor, tracing=True, tracerProvider=provider)


async def main(reactor: Any, host: str, port: int, provider: TracerProvider) -> Any:
    client = RpcClient(
        reactor, host, port, timeout=10, tracing=True, tracerProvider=provider
    )
    tracer = provider.get_tracer("billing")
    with tracer.start_as_current_span("checkout"):  # the call's parent
        result = await client.callRemote("sayHello", "zhangsan")
    await client.close()
    return result
