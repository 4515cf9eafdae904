"""
Prometheus metrics (pip install 'agilerpc[metrics]') of a server you run
yourself; twistd agilerpc --metrics-port does the same.  And a client's
own metrics, with ClientCollector.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.interfaces import IListeningPort
from twisted.web.server import Site

from agilerpc import Registry, RpcClient, RpcServerFactory
from agilerpc.metrics import ClientCollector, ServerMetrics, metricsResource


def serve(
    reactor: Any,
    registry: Registry,
    port: int = 9988,
    metricsPort: int = 9100,
    interface: str = "127.0.0.1",
) -> tuple[IListeningPort, IListeningPort]:
    metrics = ServerMetrics()
    factory = RpcServerFactory(registry, reactor, observers=[metrics])
    rpc = reactor.listenTCP(port, factory, interface=interface)
    # GET /metrics, answered in the same reactor.
    web = reactor.listenTCP(
        metricsPort, Site(metricsResource(metrics)), interface=interface
    )
    return rpc, web


def clientMetrics(client: RpcClient) -> str:
    prometheus = CollectorRegistry()  # or prometheus_client.REGISTRY
    prometheus.register(ClientCollector(client, name="billing"))
    return generate_latest(prometheus).decode("utf-8")
