"""
Prometheus metrics of agilerpc servers and clients::

    from prometheus_client import REGISTRY
    from agilerpc.metrics import ClientCollector, ServerMetrics

    metrics = ServerMetrics()
    factory = RpcServerFactory(registry, reactor, observers=[metrics])
    REGISTRY.register(ServerCollector(metrics))     # or serve metricsResource(metrics)
    REGISTRY.register(ClientCollector(client, name="billing"))

L{ServerMetrics} is an L{IServerObserver}: the server tells it what its
connections do and it adds to plain ints and dicts; the Prometheus metric
families are built only when scraped.  L{ClientCollector} reads an
L{RpcClient}'s public state when scraped, so the client counts nothing for it.

C{prometheus_client} (the C{metrics} extra) is imported only when scraped or
when L{metricsResource} is called.  This module loads C{twisted.web}:
C{import agilerpc} does not import it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from ._observers import IServerObserver
from ._server import ABORT_REASONS
from ._serverconnection import REFUSAL_REASONS

if TYPE_CHECKING:
    from ._client import RpcClient

__all__ = [
    "ABORT_REASONS",
    "DEFAULT_BUCKETS",
    "REFUSAL_REASONS",
    "UNKNOWN_METHOD",
    "ClientCollector",
    "MethodStats",
    "MetricsSite",
    "MetricsSnapshot",
    "ServerCollector",
    "ServerMetrics",
    "metricsResource",
]

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

#: The method label of calls to methods the server does not serve, so that
#: clients cannot grow the label set without bound.
UNKNOWN_METHOD = "<unknown>"

OK = "ok"

_log = Logger(namespace="agilerpc.metrics")


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


@implementer(IServerObserver)
class ServerMetrics:
    """
    The counters of one server, as plain numbers: give it to
    L{RpcServerFactory}'s C{observers}.

    @ivar methods: the L{MethodStats} of each method called; an outcome is
        C{"ok"} or the error type sent (C{"MethodNotFound"}, C{"ValueError"},
        C{"Cancelled"}...).
    @ivar keepaliveCloses: connections closed for being idle.
    @ivar goaways: goaways sent, by reason.
    @ivar refused: frames refused, by reason (see L{REFUSAL_REASONS}).
    @ivar aborted: connections the server aborted for going over a limit, by
        reason (see L{ABORT_REASONS}).
    @ivar streamItems: stream items sent, by method (a stream's outcome is
        its call's, in L{methods}).
    @ivar bytesReceived: bytes read from clients.
    @ivar bytesSent: bytes written to clients, frame headers included.
    @ivar connections: the open connections.
    """

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be increasing and not empty")
        self.buckets = tuple(buckets)
        self.methods: dict[str, MethodStats] = {}
        self.keepaliveCloses = 0
        self.goaways: dict[str, int] = {}
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.aborted: dict[str, int] = dict.fromkeys(ABORT_REASONS, 0)
        self.streamItems: dict[str, int] = {}
        self.bytesReceived = 0
        self.bytesSent = 0
        self.connections: set[Any] = set()

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
        return len(self.connections)

    def inFlight(self) -> int:
        """
        The calls dispatched and not yet answered now.
        """
        return sum(c.inFlight for c in self.connections)

    def unsentBytes(self) -> int:
        """
        The bytes of responses written and not sent now, because their
        clients do not read.
        """
        return sum(c.unsent for c in self.connections)

    def bufferedInput(self) -> int:
        """
        The bytes of unfinished frames the open connections hold now (see
        L{RpcServerFactory.inputBudget}).
        """
        return sum(c.bufferedInput for c in self.connections)

    # -- IServerObserver ----------------------------------------------------

    def connectionOpened(self, connection: Any) -> None:
        self.connections.add(connection)

    def connectionClosed(self, connection: Any) -> None:
        self.connections.discard(connection)

    def callFinished(
        self, connection: Any, msgid: int, method: str, outcome: str, duration: float
    ) -> None:
        stats = self.methods.get(method)
        if outcome == OK and stats is not None and OK in stats.outcomes:
            # The usual case, inline.
            stats.outcomes[OK] += 1
            stats.counts[bisect_left(self.buckets, duration)] += 1
            stats.total += duration
            return
        if outcome == "MethodNotFound" and method not in connection.factory.registry:
            method = UNKNOWN_METHOD
        self.recordCall(method, outcome, duration)

    def frameRefused(self, connection: Any, reason: str) -> None:
        refused = self.refused
        refused[reason] = refused.get(reason, 0) + 1

    def goawaySent(self, connection: Any, reason: str) -> None:
        goaways = self.goaways
        goaways[reason] = goaways.get(reason, 0) + 1
        if reason == "idle":
            self.keepaliveCloses += 1

    def connectionAborted(self, connection: Any, reason: str) -> None:
        aborted = self.aborted
        aborted[reason] = aborted.get(reason, 0) + 1

    def itemSent(self, connection: Any, msgid: int, method: str) -> None:
        items = self.streamItems
        items[method] = items.get(method, 0) + 1

    def openStreams(self) -> int:
        """
        The streams being answered now.
        """
        return sum(c.openStreams for c in self.connections)

    def receivedBytes(self, connection: Any, count: int) -> None:
        self.bytesReceived += count

    def sentBytes(self, connection: Any, count: int) -> None:
        self.bytesSent += count


class MetricsSnapshot:
    """
    What a L{ServerMetrics} counts, copied at one time as plain data: the
    counters of one process or the sums of several (C{--workers}), and what
    L{ServerCollector} reads.

    Its counters and L{MethodStats} are those of L{ServerMetrics}; its gauges
    are numbers: C{openConnections}, C{inFlight}, C{unsentBytes},
    C{bufferedInput} and C{openStreams}.
    """

    _COUNTERS = ("keepaliveCloses", "bytesReceived", "bytesSent")
    _BY_LABEL = ("goaways", "refused", "aborted", "streamItems")
    _GAUGES = (
        "openConnections",
        "inFlight",
        "unsentBytes",
        "bufferedInput",
        "openStreams",
    )

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.methods: dict[str, MethodStats] = {}
        self.keepaliveCloses = 0
        self.goaways: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.aborted: dict[str, int] = {}
        self.streamItems: dict[str, int] = {}
        self.bytesReceived = 0
        self.bytesSent = 0
        self.openConnections = 0
        self.inFlight = 0
        self.unsentBytes = 0
        self.bufferedInput = 0
        self.openStreams = 0

    @classmethod
    def of(cls, metrics: ServerMetrics) -> MetricsSnapshot:
        """
        A copy of what C{metrics} counts now.
        """
        snapshot = cls(metrics.buckets)
        snapshot.add(metrics)
        snapshot.openConnections = metrics.openConnections()
        snapshot.inFlight = metrics.inFlight()
        snapshot.unsentBytes = metrics.unsentBytes()
        snapshot.bufferedInput = metrics.bufferedInput()
        snapshot.openStreams = metrics.openStreams()
        return snapshot

    def add(self, other: ServerMetrics | MetricsSnapshot, gauges: bool = False) -> None:
        """
        Add the counters of C{other} (with C{gauges}, a L{MetricsSnapshot}'s
        gauges too) to this one's.

        @raise ValueError: if their latency buckets differ.
        """
        if other.buckets != self.buckets:
            raise ValueError(
                f"cannot add latencies in buckets {other.buckets} to {self.buckets}"
            )
        for method, stats in other.methods.items():
            mine = self.methods.get(method)
            if mine is None:
                mine = self.methods[method] = MethodStats(len(self.buckets))
            for outcome, count in stats.outcomes.items():
                mine.outcomes[outcome] = mine.outcomes.get(outcome, 0) + count
            mine.counts = [
                a + b for a, b in zip(mine.counts, stats.counts, strict=True)
            ]
            mine.total += stats.total
        for name in self._COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in self._BY_LABEL:
            mine = getattr(self, name)
            for label, count in getattr(other, name).items():
                mine[label] = mine.get(label, 0) + count
        if gauges and isinstance(other, MetricsSnapshot):
            for name in self._GAUGES:
                setattr(self, name, getattr(self, name) + getattr(other, name))

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

    def toJSON(self) -> dict[str, Any]:
        """
        This snapshot as a map of JSON values (what a worker sends its
        parent); L{fromJSON} reads it back.
        """
        data: dict[str, Any] = {
            "buckets": list(self.buckets),
            "methods": {
                method: [stats.outcomes, stats.counts, stats.total]
                for method, stats in self.methods.items()
            },
        }
        for name in (*self._COUNTERS, *self._BY_LABEL, *self._GAUGES):
            data[name] = getattr(self, name)
        return data

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> MetricsSnapshot:
        """
        The snapshot L{toJSON} made C{data} of.

        @raise ValueError: if C{data} is not one (a key missing, a value of
            the wrong kind).
        """
        try:
            snapshot = cls(tuple(float(b) for b in data["buckets"]))
            for method, (outcomes, counts, total) in data["methods"].items():
                stats = snapshot.methods[str(method)] = MethodStats(
                    len(snapshot.buckets)
                )
                stats.outcomes = {str(k): int(v) for k, v in outcomes.items()}
                if len(counts) != len(stats.counts):
                    raise ValueError("latency counts do not match the buckets")
                stats.counts = [int(c) for c in counts]
                stats.total = float(total)
            for name in (*cls._COUNTERS, *cls._GAUGES):
                setattr(snapshot, name, int(data[name]))
            for name in cls._BY_LABEL:
                setattr(snapshot, name, {str(k): int(v) for k, v in data[name].items()})
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a metrics snapshot: {e!r}") from None
        return snapshot


class ServerCollector:
    """
    A Prometheus collector reading a L{ServerMetrics} (or a
    L{MetricsSnapshot}) at scrape time.
    """

    def __init__(
        self,
        metrics: ServerMetrics | MetricsSnapshot,
        prefix: str = "agilerpc_server",
    ) -> None:
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
        if isinstance(m, ServerMetrics):
            m = MetricsSnapshot.of(m)
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
            value=m.inFlight,
        )
        yield GaugeMetricFamily(
            f"{p}_connections", "Open connections.", value=m.openConnections
        )
        yield GaugeMetricFamily(
            f"{p}_buffered_input_bytes",
            "Bytes of unfinished frames the open connections hold now.",
            value=m.bufferedInput,
        )
        yield CounterMetricFamily(
            f"{p}_keepalive_closes",
            "Connections closed for being idle for the keepalive period.",
            value=m.keepaliveCloses,
        )
        yield _filled(
            CounterMetricFamily(
                f"{p}_goaways", "Goaways sent, by reason.", labels=["reason"]
            ),
            m.goaways,
        )
        yield CounterMetricFamily(
            f"{p}_received_bytes", "Bytes read from clients.", value=m.bytesReceived
        )
        yield CounterMetricFamily(
            f"{p}_sent_bytes", "Bytes written to clients.", value=m.bytesSent
        )
        yield _filled(
            CounterMetricFamily(
                f"{p}_refused_frames",
                "Frames (and, for ServerBusy, connections) refused, by reason.",
                labels=["reason"],
            ),
            m.refused,
        )
        yield GaugeMetricFamily(
            f"{p}_streams_open", "Streams being answered.", value=m.openStreams
        )
        yield _filled(
            CounterMetricFamily(
                f"{p}_stream_items",
                "Stream items sent, by method (a stream's outcome is its call's).",
                labels=["method"],
            ),
            m.streamItems,
        )
        yield GaugeMetricFamily(
            f"{p}_unsent_bytes",
            "Bytes of responses written and not sent, their clients not reading.",
            value=m.unsentBytes,
        )
        yield _filled(
            CounterMetricFamily(
                f"{p}_aborted_connections",
                "Connections aborted for going over a limit, by reason.",
                labels=["reason"],
            ),
            m.aborted,
        )


def _filled(family: Any, counts: Mapping[str, int]) -> Any:
    """
    C{family}, a metric family with one label, given a sample per key of
    C{counts} (sorted, so that scrapes list them in the same order).
    """
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


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


class _TotalsPage(Resource):
    """
    The exposition of the totals of every process of C{--workers}: this
    process's L{ServerMetrics} plus the snapshot C{workers()} fires with,
    rendered once it has.
    """

    isLeaf = True

    def __init__(
        self,
        metrics: ServerMetrics,
        workers: Callable[[], Deferred[MetricsSnapshot]],
        processMetrics: bool,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.metrics = metrics
        self.workers = workers
        self.processMetrics = processMetrics

    def render_GET(self, request: Request) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST

        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        finished = [False]
        request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))
        d = self.workers()
        d.addCallback(self._render)

        def write(body: bytes) -> None:
            if not finished[0]:
                request.write(body)
                request.finish()

        def failed(reason: Any) -> None:
            _log.failure("cannot collect the workers' metrics", failure=reason)
            if not finished[0]:
                request.setResponseCode(500)
                request.write(b"cannot collect the workers' metrics\n")
                request.finish()

        d.addCallbacks(write, failed)
        return NOT_DONE_YET

    def _render(self, workers: MetricsSnapshot) -> bytes:
        from prometheus_client import (
            CollectorRegistry,
            ProcessCollector,
            generate_latest,
        )

        totals = MetricsSnapshot.of(self.metrics)
        totals.add(workers, gauges=True)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ServerCollector(totals))
        if self.processMetrics:
            ProcessCollector(registry=registry)
        body: bytes = generate_latest(registry)
        return body


def metricsResource(
    metrics: ServerMetrics,
    processMetrics: bool = True,
    workers: Callable[[], Deferred[MetricsSnapshot]] | None = None,
) -> Resource:
    """
    A web resource serving C{metrics} at C{/metrics} in Prometheus's text
    format; with C{processMetrics}, the process's CPU, memory and file
    descriptors too.

    With C{workers} (C{--workers}: L{WorkerSupervisor.metrics
    <agilerpc._workers.WorkerSupervisor.metrics>}), each scrape first asks
    it for the sum of the other processes' counters and serves the totals:
    C{metrics} plus that sum.  The C{process_*} metrics are still this
    process's own.

    @raise ImportError: if prometheus_client (the C{metrics} extra) is not
        installed.
    """
    from prometheus_client import CollectorRegistry, ProcessCollector

    root = Resource()
    if workers is not None:
        root.putChild(b"metrics", _TotalsPage(metrics, workers, processMetrics))
        return root
    registry = CollectorRegistry()
    registry.register(ServerCollector(metrics))
    if processMetrics:
        ProcessCollector(registry=registry)
    root.putChild(b"metrics", _MetricsPage(registry))
    return root


class MetricsSite(Site):
    """
    A site that does not log each request: a scrape every few seconds would
    fill the log.
    """

    def log(self, request: Any) -> None:
        pass


class ClientCollector:
    """
    Gauges of one L{RpcClient}, labelled C{client=name}: calls queued for a
    connection, calls unanswered (queued or in flight), whether a connection
    is ready, and how many of its servers have a ready connection; and
    counters from its L{ClientStats}: connections (ready or failed), calls by
    outcome, calls resent after a goaway, retries of idempotent calls lost
    in flight.
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
        retries = CounterMetricFamily(
            f"{p}_retries",
            "Idempotent calls sent again after they were lost in flight (each "
            "retry counts once).",
            labels=["client"],
        )
        retries.add_metric([self.name], stats.retries)
        yield retries
