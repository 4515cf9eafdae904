"""
Client metrics: a Prometheus collector that reads an L{RpcClient}'s public
state when scraped, so the client itself counts nothing for it.

    from prometheus_client import REGISTRY
    REGISTRY.register(ClientCollector(client, name="billing"))

C{prometheus_client} (the C{metrics} extra) is imported only when scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._client import RpcClient


class ClientCollector:
    """
    Gauges of one L{RpcClient}, labelled C{client=name}: calls queued for a
    connection, calls unanswered (queued or in flight), whether a connection
    is ready, and how many of its servers have a ready connection.
    """

    def __init__(
        self, client: RpcClient, name: str = "default", prefix: str = "agilerpc_client"
    ) -> None:
        self.client = client
        self.name = name
        self.prefix = prefix

    def describe(self) -> list[Any]:
        return list(self.collect())

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        client = self.client
        p = self.prefix
        for suffix, documentation, value in [
            ("queued_calls", "Calls waiting for a connection.", client.queued),
            (
                "pending_calls",
                "Calls not answered yet: queued or in flight.",
                client.pending,
            ),
            (
                "connected",
                "1 when a connection is ready to take calls.",
                client.connected,
            ),
            (
                "ready_endpoints",
                "Servers with a connection ready to take calls.",
                len(client.readyEndpoints),
            ),
            ("endpoints", "Servers the client knows.", len(client.endpoints)),
        ]:
            family = GaugeMetricFamily(
                f"{p}_{suffix}", documentation, labels=["client"]
            )
            family.add_metric([self.name], float(value))
            yield family
