"""
Server metrics: plain counters kept by an instrumented server protocol, read
by a Prometheus collector when scraped, and served over HTTP by Twisted's
web server in the same reactor.

Nothing here costs anything while metrics are off: the factory builds the
plain L{RpcServerProtocol} then, and only L{ObservedServerProtocol}, used
when a factory has L{ServerMetrics} (or logs every call), times and counts
calls.  Even then the hot path only adds to ints and dicts: the Prometheus
metric families are built at scrape time.

C{prometheus_client} (the C{metrics} extra) is imported only by
L{ServerCollector} and L{metricsResource}.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from . import _wire
from ._server import RpcServerProtocol

if TYPE_CHECKING:
    from ._server import RpcServerFactory

_log = Logger(namespace="agilerpc.server")

#: Latency bucket bounds in seconds: an RPC on a LAN takes from tens of
#: microseconds to seconds.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: Why a frame (or a connection, for C{ServerBusy}) was refused.
REFUSAL_REASONS = ("InvalidRequest", "MessageTooLarge", "Unauthorized", "ServerBusy")

#: The method label of calls to methods the server does not serve, so that
#: clients cannot grow the label set without bound.
UNKNOWN_METHOD = "<unknown>"

OK = "ok"


class MethodStats:
    """
    The calls of one method: how many ended with each outcome, and how long
    they took.

    @ivar outcomes: calls by outcome.
    @ivar counts: calls in each latency bucket (not cumulative), the last
        one for calls slower than every bound.
    @ivar total: the seconds of all its calls.
    """

    __slots__ = ("counts", "outcomes", "total")

    def __init__(self, buckets: int) -> None:
        self.outcomes: dict[str, int] = {}
        self.counts = [0] * (buckets + 1)
        self.total = 0.0


class ServerMetrics:
    """
    The counters of one server (one L{RpcServerFactory}), as plain numbers.

    @ivar methods: the L{MethodStats} of each method called; an outcome is
        C{"ok"} or the error type sent (C{"MethodNotFound"}, C{"ValueError"},
        C{"Cancelled"}...).
    @ivar keepaliveCloses: connections closed for being idle.
    @ivar goaways: goaways sent, by reason.
    @ivar refused: frames refused, by reason (see L{REFUSAL_REASONS}).
    @ivar bytesReceived: bytes read from clients.
    @ivar bytesSent: bytes written to clients, frame headers included.
    @ivar factory: the server these count for (set by the factory).
    """

    def __init__(
        self,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be increasing and not empty")
        self.buckets = tuple(buckets)
        self.timer = timer
        self.methods: dict[str, MethodStats] = {}
        self.keepaliveCloses = 0
        self.goaways: dict[str, int] = {}
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.bytesReceived = 0
        self.bytesSent = 0
        self.factory: RpcServerFactory | None = None

    def recordCall(self, method: str, outcome: str, duration: float) -> None:
        """
        Count one finished call of C{method} that took C{duration} seconds.
        """
        stats = self.methods.get(method)
        if stats is None:
            stats = self.methods[method] = MethodStats(len(self.buckets))
        outcomes = stats.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        stats.counts[bisect_left(self.buckets, duration)] += 1
        stats.total += duration

    @property
    def calls(self) -> dict[tuple[str, str], int]:
        """
        Finished calls by C{(method, outcome)}.
        """
        return {
            (method, outcome): count
            for method, stats in self.methods.items()
            for outcome, count in stats.outcomes.items()
        }

    def openConnections(self) -> int:
        """
        The connections open now (accepted or being refused).
        """
        return 0 if self.factory is None else len(self.factory.connections)

    def inFlight(self) -> int:
        """
        The calls dispatched and not yet answered now.
        """
        if self.factory is None:
            return 0
        return sum(len(p._outstanding) for p in self.factory.connections)


class ObservedServerProtocol(RpcServerProtocol):
    """
    L{RpcServerProtocol} that counts what it does into the factory's
    L{ServerMetrics}, when it has some, and logs every call at debug level
    when the factory's C{logCalls} is set.

    It only wraps the plain protocol's methods, so that the plain one keeps
    its hot path free of any of this.
    """

    def __init__(self, factory: RpcServerFactory) -> None:
        super().__init__(factory)
        self._metrics: ServerMetrics | None = factory.metrics
        self._logCalls = factory.logCalls
        self._timer = (
            factory.metrics.timer if factory.metrics is not None else time.perf_counter
        )
        # When each outstanding (and the current synchronous) call started.
        self._starts: dict[int, float] = {}

    # -- calls --------------------------------------------------------------

    # The per-call methods call the plain protocol's directly: cheaper than
    # super().

    def _request(self, request: _wire.Request) -> None:
        msgid = request.msgid
        if msgid in self._outstanding:
            self._refused("InvalidRequest")
        else:
            self._starts[msgid] = self._timer()
        _baseRequest(self, request)

    def _sendResult(self, msgid: int, result: Any, method: str) -> None:
        _baseSendResult(self, msgid, result, method)
        # An unencodable or too large result went out as an error:
        # _sendError counted it, and took its start time.
        start = self._starts.pop(msgid, None)
        if start is None:
            return
        duration = self._timer() - start
        metrics = self._metrics
        if metrics is not None:
            stats = metrics.methods.get(method)
            if stats is not None and OK in stats.outcomes:
                # The usual case, inline.
                stats.outcomes[OK] += 1
                stats.counts[bisect_left(metrics.buckets, duration)] += 1
                stats.total += duration
            else:
                metrics.recordCall(method, OK, duration)
        if self._logCalls:
            self._logCall(msgid, method, OK, duration)

    def _sendError(self, msgid: int | None, error: dict[str, Any], method: str) -> None:
        super()._sendError(msgid, error, method)
        if msgid is not None:
            outcome = error.get("type")
            self._finished(msgid, method, outcome if isinstance(outcome, str) else "?")

    def _finished(self, msgid: int, method: str, outcome: str) -> None:
        start = self._starts.pop(msgid, None)
        if start is None:
            return
        duration = self._timer() - start
        metrics = self._metrics
        if metrics is not None:
            label = method
            if outcome == "MethodNotFound" and method not in self.factory.registry:
                label = UNKNOWN_METHOD
            metrics.recordCall(label, outcome, duration)
        if self._logCalls:
            self._logCall(msgid, method, outcome, duration)

    def _logCall(self, msgid: int, method: str, outcome: str, duration: float) -> None:
        _log.debug(
            "{peer}: {method} #{msgid}: {outcome} in {duration:.6f}s",
            peer=self.peer,
            method=method,
            msgid=msgid,
            outcome=outcome,
            duration=duration,
        )

    # -- bytes --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        metrics = self._metrics
        if metrics is not None:
            metrics.bytesReceived += len(data)
        _baseDataReceived(self, data)

    def _send(self, payload: bytes) -> None:
        metrics = self._metrics
        if metrics is not None and not (self._disconnected or self._writeClosed):
            metrics.bytesSent += len(payload) + 4
        _baseSend(self, payload)

    # -- refusals, keepalive and goaways -----------------------------------

    def _refused(self, reason: str) -> None:
        if self._metrics is not None:
            refused = self._metrics.refused
            refused[reason] = refused.get(reason, 0) + 1

    def _refuse(self, error: Any) -> None:
        self._refused("InvalidRequest")
        super()._refuse(error)

    def lengthLimitExceeded(self, length: int) -> None:
        self._refused("MessageTooLarge")
        super().lengthLimitExceeded(length)

    def timeoutConnection(self) -> None:
        if self._metrics is not None:
            self._metrics.keepaliveCloses += 1
        super().timeoutConnection()

    def goAway(self, reason: str) -> None:
        if self._metrics is not None and not (self._goawaySent or self._disconnected):
            goaways = self._metrics.goaways
            goaways[reason] = goaways.get(reason, 0) + 1
            if reason in ("Unauthorized", "ServerBusy"):
                self._refused(reason)
        super().goAway(reason)


class ServerCollector:
    """
    A Prometheus collector reading a L{ServerMetrics} at scrape time.
    """

    def __init__(self, metrics: ServerMetrics, prefix: str = "agilerpc_server") -> None:
        self.metrics = metrics
        self.prefix = prefix

    def describe(self) -> list[Any]:
        # Names are fixed: let the registry check them without a collect.
        return list(self.collect())

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        m = self.metrics
        p = self.prefix
        calls = CounterMetricFamily(
            f"{p}_calls",
            "Calls answered, by method and outcome (ok or the error type).",
            labels=["method", "outcome"],
        )
        for (method, outcome), count in sorted(m.calls.items()):
            calls.add_metric([method, outcome], count)
        yield calls
        latency = HistogramMetricFamily(
            f"{p}_call_duration_seconds",
            "Seconds from a request's dispatch to its answer, by method.",
            labels=["method"],
        )
        for method, stats in sorted(m.methods.items()):
            counts = stats.counts
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*m.buckets, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(
                    ("+Inf" if bound == float("inf") else repr(bound), cumulative)
                )
            latency.add_metric([method], buckets, stats.total)
        yield latency
        yield GaugeMetricFamily(
            f"{p}_calls_in_flight",
            "Calls dispatched and not answered yet.",
            value=m.inFlight(),
        )
        yield GaugeMetricFamily(
            f"{p}_connections", "Open connections.", value=m.openConnections()
        )
        yield CounterMetricFamily(
            f"{p}_keepalive_closes",
            "Connections closed for being idle for the keepalive period.",
            value=m.keepaliveCloses,
        )
        goaways = CounterMetricFamily(
            f"{p}_goaways", "Goaways sent, by reason.", labels=["reason"]
        )
        for reason, count in sorted(m.goaways.items()):
            goaways.add_metric([reason], count)
        yield goaways
        yield CounterMetricFamily(
            f"{p}_received_bytes", "Bytes read from clients.", value=m.bytesReceived
        )
        yield CounterMetricFamily(
            f"{p}_sent_bytes", "Bytes written to clients.", value=m.bytesSent
        )
        refused = CounterMetricFamily(
            f"{p}_refused_frames",
            "Frames (and, for ServerBusy, connections) refused, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(m.refused.items()):
            refused.add_metric([reason], count)
        yield refused


class _MetricsPage(Resource):
    """
    The text exposition of a Prometheus registry, rendered in the reactor
    thread (it only reads counters).
    """

    isLeaf = True

    def __init__(self, registry: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        body: bytes = generate_latest(self.registry)
        return body


def metricsResource(metrics: ServerMetrics, processMetrics: bool = True) -> Resource:
    """
    A web resource serving C{metrics} at C{/metrics} in Prometheus's text
    format; with C{processMetrics}, the process's CPU, memory and file
    descriptors too.

    @raise ImportError: if prometheus_client (the C{metrics} extra) is not
        installed.
    """
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry()
    registry.register(ServerCollector(metrics))
    if processMetrics:
        ProcessCollector(registry=registry)
    root = Resource()
    root.putChild(b"metrics", _MetricsPage(registry))
    return root


_baseRequest = RpcServerProtocol._request
_baseSendResult = RpcServerProtocol._sendResult
_baseDataReceived = RpcServerProtocol.dataReceived
_baseSend = RpcServerProtocol._send
