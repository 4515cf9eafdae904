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
    is ready, and how many of its servers have a ready connection; and
    counters from its L{ClientStats}: connections (ready or failed), calls by
    outcome, calls resent after a goaway.
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
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
        stats = client.stats
        connects = CounterMetricFamily(
            f"{p}_connections",
            "Connection attempts, by outcome: ready (said hello) or failed.",
            labels=["client", "outcome"],
        )
        connects.add_metric([self.name, "ready"], stats.connects)
        connects.add_metric([self.name, "failed"], stats.connectFailures)
        yield connects
        calls = CounterMetricFamily(
            f"{p}_calls",
            "Calls by outcome: ok, remote_error, lost (connection lost in flight: "
            "may have run), cancelled (including timeouts).",
            labels=["client", "outcome"],
        )
        for outcome, value in [
            ("ok", stats.answered),
            ("remote_error", stats.remoteErrors),
            ("lost", stats.lost),
            ("cancelled", stats.cancelled),
        ]:
            calls.add_metric([self.name, outcome], value)
        yield calls
        resent = CounterMetricFamily(
            f"{p}_resent_calls",
            "Calls a goaway proved unrun, sent again on another connection.",
            labels=["client"],
        )
        resent.add_metric([self.name], stats.resent)
        yield resent
