# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for L{agilerpc.metrics} and the server's observers: the
L{IServerObserver} interface, the counters L{ServerMetrics} keeps as an
observer of a server protocol (driven over a L{StringTransport} with a
L{Clock} and a fake timer), their Prometheus exposition, a scrape over
HTTP of a real listening metrics resource, the C{system.ping} and
C{system.stats} built-ins, per-call debug logs, the C{--metrics-port},
C{--metrics-interface} and C{--log-calls} options of C{twistd agilerpc}, and
the JSON log observer for twistd's C{--logger}.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as globalReactor
from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from agilerpc import Registry, RpcClient, RpcError, RpcServerFactory
from agilerpc._logging import jsonLogObserver
from agilerpc._observers import CallLog, IServerObserver, observing
from agilerpc.metrics import (
    DEFAULT_BUCKETS,
    UNKNOWN_METHOD,
    ClientCollector,
    MetricsSnapshot,
    ServerCollector,
    ServerMetrics,
    metricsResource,
)
from agilerpc.tap import Options, makeService
from agilerpc.testing import MemoryServer

from .serverhelpers import (
    PEER,
    Connection,
    ListeningReactor,
    LogCollector,
    encode,
    rawFrame,
)
from .serverprocess import ServerProcess


def render(resource: Any) -> tuple[DummyRequest, Any]:
    """
    GET C{/metrics} from C{resource}: the request and what C{render}
    returned.
    """
    request = DummyRequest([b"metrics"])
    return request, resource.getChildWithDefault(b"metrics", request).render(request)


def lines(body: bytes) -> list[str]:
    """
    The lines of a Prometheus text exposition, comments left out.
    """
    return [
        line for line in body.decode("utf-8").splitlines() if not line.startswith("#")
    ]


class FakeTimer:
    """
    A timer that says what the test sets.
    """

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def exposition(metrics: ServerMetrics) -> list[str]:
    """
    The lines of the Prometheus text format for C{metrics}, comments left
    out.
    """
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(ServerCollector(metrics))
    text: str = generate_latest(registry).decode("utf-8")
    return [line for line in text.splitlines() if not line.startswith("#")]


class ServerTestCase(SynchronousTestCase):
    """
    A server with a few handlers, L{ServerMetrics} on a L{FakeTimer}, and a
    L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.timer = FakeTimer()
        self.metrics = ServerMetrics()
        self.pending: list[Deferred[Any]] = []
        registry = Registry()

        def add(a: int, b: int) -> int:
            self.timer.now += 0.0003
            return a + b

        def later() -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            self.pending.append(d)
            return d

        def fail() -> None:
            raise RpcError("CustomError", "no")

        def crash() -> None:
            raise ValueError("boom")

        def unencodable() -> object:
            return object()

        handlers: list[Callable[..., Any]] = [add, later, fail, crash, unencodable]
        for f in handlers:
            registry.register(f)
        self.registry = registry
        self.factory = self.makeFactory()

    def makeFactory(self, **kwargs: Any) -> RpcServerFactory:
        kwargs.setdefault("observers", [self.metrics])
        kwargs.setdefault("timer", self.timer)
        return RpcServerFactory(
            self.registry, self.clock, keepalive=10.0, lingerTimeout=1.0, **kwargs
        )


class ObserverTests(ServerTestCase):
    """
    The factory gives its connections one observer, or none.
    """

    def test_noObserver(self) -> None:
        """
        Without observers the factory has none, and its connections report
        nothing.
        """
        factory = self.makeFactory(observers=())
        self.assertIsNone(factory.observer)
        self.assertEqual(Connection(factory).call(1, "add", 1, 2), [[1, 1, None, 3]])
        self.assertEqual(self.metrics.calls, {})

    def test_oneObserver(self) -> None:
        """
        One observer is told directly.
        """
        self.assertIs(self.factory.observer, self.metrics)

    def test_interface(self) -> None:
        """
        L{ServerMetrics}, L{CallLog} and several observers as one provide
        L{IServerObserver}.
        """
        for observer in [self.metrics, CallLog(), observing([CallLog(), CallLog()])]:
            self.assertTrue(verifyObject(IServerObserver, observer))

    def test_callLogIgnoresTheRest(self) -> None:
        """
        A L{CallLog} logs calls only: connections, refusals, goaways and
        bytes are not logged.
        """
        collector = LogCollector()
        globalLogPublisher.addObserver(collector)
        self.addCleanup(globalLogPublisher.removeObserver, collector)
        events = collector.events
        factory = self.makeFactory(observers=[CallLog()], maxConnections=1)
        Connection(factory).sendBytes(rawFrame(b"\xc1"))
        Connection(factory).lost()
        self.assertEqual(
            [
                e
                for e in events
                if e.get("log_namespace") == "agilerpc.server" and "outcome" in e
            ],
            [],
        )

    def test_severalObservers(self) -> None:
        """
        Several observers are each told every event.
        """
        other = ServerMetrics()
        factory = self.makeFactory(observers=[self.metrics, other])
        connection = Connection(factory)
        connection.call(1, "add", 1, 2)
        connection.sendBytes(rawFrame(b"\xc1"))
        factory.shutdown()
        for metrics in [self.metrics, other]:
            self.assertEqual(metrics.calls, {("add", "ok"): 1})
            self.assertEqual(metrics.refused["InvalidRequest"], 1)
            self.assertEqual(metrics.goaways, {"shutdown": 1})
            self.assertEqual(metrics.bytesSent, len(connection.transport.value()))
            self.assertGreater(metrics.bytesReceived, 0)
        connection.lost()
        self.assertEqual(
            (self.metrics.openConnections(), other.openConnections()), (0, 0)
        )

    def test_badBuckets(self) -> None:
        """
        Latency buckets must be increasing and not empty.
        """
        for buckets in [(), (0.1, 0.01), (0.1, 0.1)]:
            self.assertRaises(ValueError, ServerMetrics, buckets)


class CallCounterTests(ServerTestCase):
    """
    Calls are counted by method and outcome, and timed, once each.
    """

    def test_okCall(self) -> None:
        """
        A call answered at once is counted C{ok} and its duration lands in its
        bucket.
        """
        connection = Connection(self.factory)
        self.assertEqual(connection.call(1, "add", 1, 2), [[1, 1, None, 3]])
        self.assertEqual(self.metrics.calls, {("add", "ok"): 1})
        counts = self.metrics.methods["add"].counts
        # 0.0003s: above 0.00025, at most 0.0005.
        self.assertEqual(counts[DEFAULT_BUCKETS.index(0.0005)], 1)
        self.assertEqual(sum(counts), 1)
        self.assertAlmostEqual(self.metrics.methods["add"].total, 0.0003)

    def test_errorsByType(self) -> None:
        """
        Failed calls are counted by the error type sent: an L{RpcError}'s,
        an exception's class name, C{InvalidParams}.
        """
        connection = Connection(self.factory)
        connection.call(1, "fail")
        connection.call(2, "crash")
        connection.call(3, "add", 1)
        self.flushLoggedErrors(ValueError)
        self.assertEqual(
            self.metrics.calls,
            {
                ("fail", "CustomError"): 1,
                ("crash", "ValueError"): 1,
                ("add", "InvalidParams"): 1,
            },
        )

    def test_unknownMethodsShareOneLabel(self) -> None:
        """
        Calls to methods the server does not serve are counted under one
        label, so clients cannot grow the label set.
        """
        connection = Connection(self.factory)
        connection.call(1, "nosuch")
        connection.call(2, "other")
        self.assertEqual(self.metrics.calls, {(UNKNOWN_METHOD, "MethodNotFound"): 2})

    def test_unencodableResultCountedOnce(self) -> None:
        """
        A result that cannot be encoded is counted as the C{InvalidResult}
        sent, not also as C{ok}.
        """
        connection = Connection(self.factory)
        [[_, _, error, _]] = connection.call(1, "unencodable")
        self.assertEqual(error["type"], "InvalidResult")
        self.assertEqual(self.metrics.calls, {("unencodable", "InvalidResult"): 1})

    def test_deferredCallTimedUntilAnswered(self) -> None:
        """
        A call answered later is in flight until then, and timed from its
        dispatch to its answer.
        """
        connection = Connection(self.factory)
        connection.request(1, "later")
        self.assertEqual((self.metrics.inFlight(), self.metrics.calls), (1, {}))
        self.timer.now += 2.0
        self.pending[0].callback("done")
        self.assertEqual(connection.received(), [[1, 1, None, "done"]])
        self.assertEqual(self.metrics.inFlight(), 0)
        self.assertEqual(self.metrics.calls, {("later", "ok"): 1})
        self.assertEqual(
            self.metrics.methods["later"].counts[DEFAULT_BUCKETS.index(2.5)], 1
        )
        self.assertEqual(self.metrics.methods["later"].total, 2.0)

    def test_cancelledWithConnection(self) -> None:
        """
        A call outstanding when its connection is lost is cancelled, counted
        as C{Cancelled}, and nothing is written.
        """
        connection = Connection(self.factory)
        connection.request(1, "later")
        written = connection.transport.value()
        connection.lost()
        self.assertTrue(self.pending[0].called)
        self.assertEqual(self.metrics.calls, {("later", "Cancelled"): 1})
        self.assertEqual(connection.transport.value(), written)

    def test_cancelledCall(self) -> None:
        """
        A call the client cancels is counted as C{Cancelled}.
        """
        connection = Connection(self.factory)
        connection.request(1, "later")
        connection.send([3, "cancel", 1])
        self.assertEqual(self.metrics.calls, {("later", "Cancelled"): 1})

    def test_inFlightAndConnections(self) -> None:
        """
        In-flight calls and open connections are read from the server when
        asked.
        """
        first = Connection(self.factory)
        second = Connection(self.factory)
        first.request(1, "later")
        first.request(2, "later")
        second.request(1, "later")
        self.assertEqual(
            (self.metrics.inFlight(), self.metrics.openConnections()), (3, 2)
        )
        second.lost()
        self.assertEqual(
            (self.metrics.inFlight(), self.metrics.openConnections()), (2, 1)
        )

    def test_withoutServer(self) -> None:
        """
        Metrics no server reports to count no connections and no calls in
        flight.
        """
        metrics = ServerMetrics()
        self.assertEqual((metrics.inFlight(), metrics.openConnections()), (0, 0))

    def test_bytes(self) -> None:
        """
        Every byte received and every byte written, headers included, is
        counted.
        """
        connection = Connection(self.factory)
        data = encode([0, 1, "add", [1, 2]]) + encode([0, 2, "add", [3, 4]])
        connection.sendBytes(data[:5])
        connection.sendBytes(data[5:])
        self.assertEqual(self.metrics.bytesReceived, len(data))
        self.assertEqual(self.metrics.bytesSent, len(connection.transport.value()))


class ConnectionCounterTests(ServerTestCase):
    """
    Keepalive closes, goaways and refused frames are counted by reason.
    """

    def test_keepaliveClose(self) -> None:
        """
        A connection idle for the keepalive period is counted, with its
        C{idle} goaway.
        """
        Connection(self.factory)
        self.clock.advance(10.0)
        self.assertEqual(self.metrics.keepaliveCloses, 1)
        self.assertEqual(self.metrics.goaways, {"idle": 1})

    def test_shutdownGoaways(self) -> None:
        """
        A shutdown counts one goaway per connection, each only once.
        """
        connections = [Connection(self.factory), Connection(self.factory)]
        self.factory.shutdown()
        connections[0].protocol.goaway("shutdown")
        self.assertEqual(self.metrics.goaways, {"shutdown": 2})
        self.assertEqual(self.metrics.keepaliveCloses, 0)

    def test_refusedInvalidRequest(self) -> None:
        """
        Malformed frames, cancels without a msgid and duplicate msgids are
        refused as C{InvalidRequest}.
        """
        connection = Connection(self.factory)
        connection.sendBytes(rawFrame(b"\xc1"))
        connection.send([3, "cancel"])
        connection.request(1, "later")
        connection.request(1, "later")
        self.assertEqual(
            self.metrics.refused,
            {
                "InvalidRequest": 3,
                "MessageTooLarge": 0,
                "Unauthorized": 0,
                "ServerBusy": 0,
                "FrameTimeout": 0,
                "InputBudget": 0,
            },
        )

    def test_refusedTooLarge(self) -> None:
        """
        A frame over the maximum message size is refused as
        C{MessageTooLarge}, with a goaway.
        """
        factory = self.makeFactory(maxMessageSize=100)
        connection = Connection(factory)
        connection.sendBytes(b"\x00\x00\x01\x00")
        self.assertEqual(self.metrics.refused["MessageTooLarge"], 1)
        self.assertEqual(self.metrics.goaways, {"MessageTooLarge": 1})

    def test_refusedUnauthorized(self) -> None:
        """
        A wrong token is refused as C{Unauthorized}.
        """
        factory = self.makeFactory(authToken=b"secret")
        connection = Connection(factory)
        connection.send([3, "auth", "wrong"])
        self.assertEqual(self.metrics.refused["Unauthorized"], 1)
        self.assertEqual(self.metrics.goaways, {"Unauthorized": 1})

    def test_refusedServerBusy(self) -> None:
        """
        A connection over C{maxConnections} is refused as C{ServerBusy}.
        """
        factory = self.makeFactory(maxConnections=1)
        Connection(factory)
        Connection(factory)
        self.flushLoggedErrors()
        self.assertEqual(self.metrics.refused["ServerBusy"], 1)
        self.assertEqual(self.metrics.goaways, {"ServerBusy": 1})


class ExpositionTests(ServerTestCase):
    """
    L{ServerCollector} turns the counters into Prometheus metrics when
    scraped.
    """

    def test_exposition(self) -> None:
        """
        Each counter appears under its metric name and labels.
        """
        connection = Connection(self.factory)
        connection.call(1, "add", 1, 2)
        connection.call(2, "fail")
        connection.request(3, "later")
        sent = len(connection.transport.value())
        received = self.metrics.bytesReceived
        lines = exposition(self.metrics)
        for expected in [
            'agilerpc_server_calls_total{method="add",outcome="ok"} 1.0',
            'agilerpc_server_calls_total{method="fail",outcome="CustomError"} 1.0',
            'agilerpc_server_call_duration_seconds_bucket{le="0.00025",method="add"} 0.0',
            'agilerpc_server_call_duration_seconds_bucket{le="0.0005",method="add"} 1.0',
            'agilerpc_server_call_duration_seconds_bucket{le="+Inf",method="add"} 1.0',
            'agilerpc_server_call_duration_seconds_count{method="add"} 1.0',
            "agilerpc_server_calls_in_flight 1.0",
            "agilerpc_server_connections 1.0",
            "agilerpc_server_keepalive_closes_total 0.0",
            f"agilerpc_server_received_bytes_total {float(received)}",
            f"agilerpc_server_sent_bytes_total {float(sent)}",
            'agilerpc_server_refused_frames_total{reason="ServerBusy"} 0.0',
        ]:
            self.assertIn(expected, lines)
        self.factory.shutdown()
        self.assertIn(
            'agilerpc_server_goaways_total{reason="shutdown"} 1.0',
            exposition(self.metrics),
        )


class SnapshotTests(ServerTestCase):
    """
    L{MetricsSnapshot}: what a worker sends its parent, and what the parent
    adds up.
    """

    def test_sameExposition(self) -> None:
        """
        A snapshot, sent as JSON and read back, scrapes exactly as the
        metrics it was taken of.
        """
        connection = Connection(self.factory)
        connection.call(1, "add", 1, 2)
        connection.call(2, "fail")
        connection.call(3, "nope")
        connection.request(4, "later")
        sent = json.loads(json.dumps(MetricsSnapshot.of(self.metrics).toJSON()))
        snapshot = MetricsSnapshot.fromJSON(sent)
        self.assertEqual(exposition(snapshot), exposition(self.metrics))  # type: ignore[arg-type]
        self.assertEqual((snapshot.inFlight, snapshot.openConnections), (1, 1))

    def test_add(self) -> None:
        """
        Adding sums every counter and latency bucket; gauges only when
        asked, and only a snapshot's.
        """
        connection = Connection(self.factory)
        connection.call(1, "add", 1, 2)
        connection.request(2, "later")
        one = MetricsSnapshot.of(self.metrics)
        total = MetricsSnapshot()
        total.add(one, gauges=True)
        total.add(one)
        total.add(self.metrics, gauges=True)
        self.assertEqual(total.calls, {("add", "ok"): 3})
        self.assertEqual(
            total.methods["add"].counts, [3 * c for c in one.methods["add"].counts]
        )
        self.assertEqual(total.bytesReceived, 3 * self.metrics.bytesReceived)
        self.assertEqual(total.refused["ServerBusy"], 0)
        self.assertEqual((total.inFlight, total.openConnections), (1, 1))

    def test_otherBuckets(self) -> None:
        """
        Latencies counted in other buckets cannot be added.
        """
        self.assertRaises(
            ValueError, MetricsSnapshot().add, MetricsSnapshot((0.5, 1.0))
        )

    def test_notASnapshot(self) -> None:
        """
        L{MetricsSnapshot.fromJSON} refuses what is not one with
        L{ValueError}.
        """
        good = MetricsSnapshot.of(self.metrics).toJSON()
        for bad in [
            {},
            {**good, "methods": {"m": [{}, [1], 0.0]}},
            {**good, "goaways": [1]},
            {**good, "bytesSent": "many"},
        ]:
            self.assertRaises(ValueError, MetricsSnapshot.fromJSON, bad)


class TotalsPageTests(ServerTestCase):
    """
    With C{workers}, L{metricsResource} serves this process's counters plus
    the workers' sum, once it has it.
    """

    def test_totals(self) -> None:
        """
        The page answers once the workers' snapshot arrives, with the sum of
        counters and gauges.
        """
        connection = Connection(self.factory)
        connection.call(1, "add", 1, 2)
        asked: list[Deferred[MetricsSnapshot]] = []

        def workers() -> Deferred[MetricsSnapshot]:
            d: Deferred[MetricsSnapshot] = Deferred()
            asked.append(d)
            return d

        request, result = render(metricsResource(self.metrics, workers=workers))
        self.assertEqual((result, request.written), (NOT_DONE_YET, []))
        other = MetricsSnapshot.of(self.metrics)
        other.openConnections = 4
        asked[0].callback(other)
        self.assertEqual(request.finished, 1)
        body = lines(b"".join(request.written))
        self.assertIn(
            'agilerpc_server_calls_total{method="add",outcome="ok"} 2.0', body
        )
        self.assertIn("agilerpc_server_connections 5.0", body)
        self.assertTrue(any(line.startswith("process_cpu") for line in body))
        self.assertTrue(
            request.responseHeaders.getRawHeaders(b"content-type", [b""])[0].startswith(
                b"text/plain"
            )
        )

    def test_failure(self) -> None:
        """
        When the workers' counters cannot be had, the scrape fails with 500
        and the failure is logged.
        """
        request, _ = render(
            metricsResource(
                self.metrics,
                processMetrics=False,
                workers=lambda: defer.fail(ValueError("no")),
            )
        )
        self.assertEqual((request.responseCode, request.finished), (500, 1))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def scrapeAbandoned(
        self, fire: Callable[[Deferred[MetricsSnapshot]], object]
    ) -> None:
        """
        Render the totals page, hang up, then C{fire} the workers' Deferred:
        nothing may be written.
        """
        d: Deferred[MetricsSnapshot] = Deferred()
        request, _ = render(
            metricsResource(self.metrics, processMetrics=False, workers=lambda: d)
        )
        request.processingFailed(Failure(ConnectionDone()))
        fire(d)
        self.assertEqual((request.written, request.responseCode), ([], None))

    def test_scraperGone(self) -> None:
        """
        A scraper that hangs up before the totals are ready gets nothing
        written.
        """
        self.scrapeAbandoned(lambda d: d.callback(MetricsSnapshot()))

    def test_scraperGoneThenFailure(self) -> None:
        """
        Nor when they fail: the failure is still logged.
        """
        self.scrapeAbandoned(lambda d: d.errback(ValueError("no")))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class BuiltinTests(ServerTestCase):
    """
    Every server answers C{system.ping} and C{system.stats} itself, with or
    without metrics.
    """

    def test_ping(self) -> None:
        """
        C{system.ping} answers C{"pong"}.
        """
        connection = Connection(self.makeFactory(observers=()))
        self.assertEqual(connection.call(1, "system.ping"), [[1, 1, None, "pong"]])

    def test_stats(self) -> None:
        """
        C{system.stats} answers the uptime, the open connections, the
        requests dispatched (including by closed connections), the calls
        in flight, and which process answered (worker 0: the only one).
        """
        factory = self.makeFactory(observers=())
        self.clock.advance(5.0)
        gone = Connection(factory)
        gone.call(1, "add", 1, 2)
        gone.lost()
        self.clock.advance(2.5)
        connection = Connection(factory)
        connection.request(1, "later")
        [[_, _, _, stats]] = connection.call(2, "system.stats")
        self.assertEqual(
            stats,
            {
                "uptime": 7.5,
                "connections": 1,
                "calls": 3,
                "in_flight": 1,
                "unsent_bytes": 0,
                "buffered_input_bytes": 0,
                "buffered_input_refusals": 0,
                "server": factory.hello["server"],
                "pid": os.getpid(),
                "worker": 0,
            },
        )

    def test_statsOfWorker(self) -> None:
        """
        C{system.stats} says which process of C{--workers} answered: its
        pid, and the number its factory was given.
        """
        connection = Connection(self.makeFactory(observers=(), worker=3))
        [[_, _, _, stats]] = connection.call(1, "system.stats")
        self.assertEqual((stats["pid"], stats["worker"]), (os.getpid(), 3))

    def test_notListed(self) -> None:
        """
        C{system.listMethods} lists the registry's methods only; the
        built-ins are answered all the same.
        """
        connection = Connection(self.factory)
        [[_, _, _, names]] = connection.call(1, "system.listMethods")
        self.assertNotIn("system.ping", names)
        self.assertEqual(connection.call(2, "system.ping"), [[1, 2, None, "pong"]])


class CallLogTests(ServerTestCase):
    """
    With a L{CallLog} observer, every call is logged at debug level with structured
    fields.
    """

    def test_callLogged(self) -> None:
        """
        A call's log event carries the peer, method, msgid, outcome and
        duration.
        """
        collector = LogCollector()
        globalLogPublisher.addObserver(collector)
        self.addCleanup(globalLogPublisher.removeObserver, collector)
        factory = self.makeFactory(observers=[self.metrics, CallLog()])
        connection = Connection(factory)
        connection.call(7, "add", 1, 2)
        [event] = [e for e in collector.events if e.get("method") == "add"]
        self.assertEqual(
            (
                event["log_level"].name,
                event["peer"],
                event["msgid"],
                event["outcome"],
                round(event["duration"], 6),
            ),
            ("debug", connection.transport.getPeer(), 7, "ok", 0.0003),
        )

    def test_handlerExceptionAtError(self) -> None:
        """
        A handler's exception is logged at error level (not critical: the
        server is fine), with the peer, method and msgid, whether or not
        calls are logged.
        """
        collector = LogCollector()
        globalLogPublisher.addObserver(collector)
        self.addCleanup(globalLogPublisher.removeObserver, collector)
        connection = Connection(self.makeFactory(observers=()))
        connection.call(4, "crash")
        connection.send([2, "crash", []])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        events = [e for e in collector.events if e.get("method") == "crash"]
        self.assertEqual(
            [(e["log_level"].name, e["peer"], e.get("msgid")) for e in events],
            [
                ("error", connection.protocol.peer, 4),
                ("error", connection.protocol.peer, None),
            ],
        )

    def test_callLoggedWithoutMetrics(self) -> None:
        """
        Calls are logged with a L{CallLog} alone, timed with the factory's
        default timer.
        """
        collector = LogCollector()
        globalLogPublisher.addObserver(collector)
        self.addCleanup(globalLogPublisher.removeObserver, collector)
        connection = Connection(
            self.makeFactory(observers=[CallLog()], timer=time.perf_counter)
        )
        connection.call(1, "fail")
        [event] = [e for e in collector.events if e.get("method") == "fail"]
        self.assertEqual(event["outcome"], "CustomError")
        self.assertGreaterEqual(event["duration"], 0.0)


class ScrapeTests(TestCase):
    """
    The metrics resource answers a real HTTP scrape on 127.0.0.1.
    """

    @inlineCallbacks
    def test_scrape(self) -> Any:
        """
        A GET of /metrics over HTTP returns the counters, in Prometheus's text
        format, after calls moved them.
        """
        metrics = ServerMetrics()
        factory = RpcServerFactory(Registry(), Clock(), observers=[metrics])
        connection = Connection(factory)
        connection.call(1, "system.ping")
        connection.call(2, "system.ping")
        reactor: Any = globalReactor
        port = reactor.listenTCP(
            0, Site(metricsResource(metrics)), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/metrics".encode("ascii")
        agent = Agent(globalReactor)
        response = yield agent.request(b"GET", url)
        body = yield readBody(response)
        self.assertEqual(response.code, 200)
        self.assertTrue(
            response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
        )
        lines = body.decode("utf-8").splitlines()
        self.assertIn(
            'agilerpc_server_calls_total{method="system.ping",outcome="ok"} 2.0', lines
        )
        self.assertIn("agilerpc_server_connections 1.0", lines)
        # The process collector is there too.
        self.assertTrue(
            any(line.startswith("process_cpu_seconds_total") for line in lines)
        )
        missing = yield agent.request(b"GET", url[: -len(b"metrics")] + b"other")
        yield readBody(missing)
        self.assertEqual(missing.code, 404)


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class MetricsOptionsTests(SynchronousTestCase):
    """
    C{--metrics-port}, C{--metrics-interface} and C{--log-calls}.
    """

    def test_off(self) -> None:
        """
        Without C{--metrics-port} there are no metrics and no call logs.
        """
        options = parse()
        self.assertEqual((options["metrics"], options["log-calls"]), (None, 0))

    def test_portOnInterface(self) -> None:
        """
        The metrics listen on C{--interface} by default.
        """
        self.assertEqual(
            parse("--interface", "127.0.0.1", "--metrics-port", "9100")["metrics"],
            "tcp:9100:interface=127.0.0.1",
        )
        self.assertEqual(parse("--metrics-port", "9100")["metrics"], "tcp:9100")

    def test_metricsInterface(self) -> None:
        """
        C{--metrics-interface} overrides it, IPv6 addresses escaped.
        """
        options = parse(
            "--interface",
            "127.0.0.1",
            "--metrics-port",
            "0",
            "--metrics-interface",
            "::1",
        )
        self.assertEqual(options["metrics"], r"tcp:0:interface=\:\:1")

    def assertUsageError(self, argv: list[str], fragment: str) -> None:
        from twisted.python.usage import UsageError

        error = self.assertRaises(UsageError, parse, *argv)
        self.assertIn(fragment, str(error))

    def test_badPort(self) -> None:
        """
        A port that is not one is a usage error.
        """
        self.assertUsageError(
            ["--metrics-port", "x"], "--metrics-port must be a number"
        )
        self.assertUsageError(
            ["--metrics-port", "65536"], "--metrics-port must be <= 65535"
        )

    def test_interfaceNeedsPort(self) -> None:
        """
        C{--metrics-interface} alone is a usage error.
        """
        self.assertUsageError(
            ["--metrics-interface", "127.0.0.1"],
            "--metrics-interface needs --metrics-port",
        )

    def test_withWorkers(self) -> None:
        """
        C{--metrics-port} with C{--workers} above 1 serves, from the parent
        only, the totals of every process: its page asks the supervisor for
        the workers' counters.
        """
        from twisted.application.internet import StreamServerEndpointService

        from agilerpc._service import RpcService
        from agilerpc._workers import WorkerSupervisor

        options = parse("--port", "0", "--workers", "2", "--metrics-port", "9100")
        server, supervisor, web = list(makeService(options, Clock()))  # type: ignore[call-overload]
        self.assertIsInstance(server, RpcService)
        self.assertIsInstance(supervisor, WorkerSupervisor)
        self.assertIsInstance(web, StreamServerEndpointService)
        page = web.factory.resource.getChildWithDefault(
            b"metrics", DummyRequest([b"metrics"])
        )
        self.assertEqual(page.workers, supervisor.metrics)
        self.assertIsInstance(page.metrics, ServerMetrics)
        self.assertIs(page.metrics, server.factory.observer)

    def test_withoutExtra(self) -> None:
        """
        Without prometheus-client installed, C{--metrics-port} is a usage
        error that says how to install it.
        """
        import prometheus_client

        # A None entry makes the import raise ImportError.
        sys.modules["prometheus_client"] = None  # type: ignore[assignment]
        self.addCleanup(sys.modules.__setitem__, "prometheus_client", prometheus_client)
        self.assertUsageError(
            ["--metrics-port", "9100"], "pip install 'agilerpc[metrics]'"
        )

    def test_makeService(self) -> None:
        """
        With C{--metrics-port}, the service also serves HTTP on that port, and
        the server counts into metrics; C{--log-calls} logs calls too.
        """
        reactor = ListeningReactor()
        service = makeService(
            parse(
                "--port",
                "0",
                "--interface",
                "127.0.0.1",
                "--metrics-port",
                "9100",
                "--log-calls",
            ),
            reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        [(rpcPort, factory, _, _), (metricsPort, site, _, interface)] = sorted(
            reactor.tcpServers, key=lambda s: s[0]
        )
        self.assertEqual((rpcPort, metricsPort, interface), (0, 9100, "127.0.0.1"))
        assert isinstance(factory, RpcServerFactory)
        self.assertIsInstance(site, Site)
        observers = getattr(factory.observer, "observers", ())
        self.assertEqual([type(o) for o in observers], [ServerMetrics, CallLog])


class JsonLogObserverTests(SynchronousTestCase):
    """
    L{jsonLogObserver} writes one JSON object per event, addresses as text.
    """

    def test_event(self) -> None:
        """
        An event's fields are written as JSON, an address as C{host:port}.
        """
        out = io.StringIO()
        observer = jsonLogObserver(out)
        from twisted.logger import Logger

        log = Logger(namespace="test", observer=observer)
        log.warn("{peer}: {method} slow", peer=PEER, method="add", msgid=3)
        [line] = out.getvalue().splitlines()
        event = json.loads(line.lstrip("\x1e"))
        self.assertEqual(
            (
                event["peer"],
                event["method"],
                event["msgid"],
                event["log_level"]["name"],
            ),
            ("127.0.0.1:40000", "add", 3, "warn"),
        )
        self.assertEqual(event["log_namespace"], "test")

    def test_otherAddresses(self) -> None:
        """
        IPv6 addresses are written as C{[host]:port}, UNIX ones as their
        path; other values as they are.
        """
        out = io.StringIO()
        observer = jsonLogObserver(out)
        observer(
            {
                "log_format": "x",
                "v6": IPv6Address("TCP", "::1", 9988),
                "unix": UNIXAddress(b"/run/agilerpc.sock"),
                "unixText": UNIXAddress("/run/other.sock"),
                "n": [1, "a"],
            }
        )
        event = json.loads(out.getvalue())
        self.assertEqual(
            (event["v6"], event["unix"], event["unixText"], event["n"]),
            ("[::1]:9988", "/run/agilerpc.sock", "/run/other.sock", [1, "a"]),
        )

    def test_standardOutput(self) -> None:
        """
        Without a file, events go to standard output, one line each: what
        twistd's C{--logger agilerpc.jsonLogObserver} gets.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        observer = namedAny("agilerpc.jsonLogObserver")()
        observer({"log_format": "hello", "a": 1})
        observer({"log_format": "again", "a": 2})
        self.assertEqual(
            [json.loads(line)["a"] for line in out.getvalue().splitlines()], [1, 2]
        )


class ClientCollectorTests(SynchronousTestCase):
    """
    L{ClientCollector} reports an L{RpcClient}'s queue and connections when
    scraped.
    """

    def scrape(self, collector: ClientCollector) -> list[str]:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(collector)
        text: str = generate_latest(registry).decode("utf-8")
        return [line for line in text.splitlines() if not line.startswith("#")]

    def test_queueAndConnections(self) -> None:
        """
        Calls made before the hello are queued; once connected they are in
        flight, and the connection is counted ready.
        """
        registry = Registry()
        pending: list[Deferred[Any]] = []

        def later() -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d

        registry.register(later)
        server = MemoryServer(registry)
        client = RpcClient(server.reactor, "server", 9988)
        collector = ClientCollector(client, name="billing")
        client.callRemote("later")
        client.callRemote("later")
        # The five gauges come first; the counters follow.
        self.assertEqual(
            self.scrape(collector)[:5],
            [
                'agilerpc_client_queued_calls{client="billing"} 2.0',
                'agilerpc_client_pending_calls{client="billing"} 2.0',
                'agilerpc_client_connected{client="billing"} 0.0',
                'agilerpc_client_ready_endpoints{client="billing"} 0.0',
                'agilerpc_client_endpoints{client="billing"} 1.0',
            ],
        )
        server.flush()
        self.assertEqual(
            self.scrape(collector)[:5],
            [
                'agilerpc_client_queued_calls{client="billing"} 0.0',
                'agilerpc_client_pending_calls{client="billing"} 2.0',
                'agilerpc_client_connected{client="billing"} 1.0',
                'agilerpc_client_ready_endpoints{client="billing"} 1.0',
                'agilerpc_client_endpoints{client="billing"} 1.0',
            ],
        )
        for d in pending:
            d.callback(None)
        server.flush()
        self.assertIn(
            'agilerpc_client_pending_calls{client="billing"} 0.0',
            self.scrape(collector),
        )

    def test_outcomeAndConnectionCounters(self) -> None:
        """
        Connections (ready or failed) and calls by outcome are counted:
        answered, remote error, lost with the connection, cancelled, and
        resent after a goaway.
        """
        registry = Registry()
        pending: list[Deferred[Any]] = []

        def later() -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d

        registry.register(later)
        registry.register(lambda: 1, name="one")
        server = MemoryServer(registry)
        client = RpcClient(server.reactor, "server", 9988)
        client.factory.jitter = 0
        collector = ClientCollector(client, name="c")
        server.refusing = True
        client.callRemote("one")
        server.flush()
        server.refusing = False
        server.reactor.advance(client.factory.delay)
        server.flush()
        client.callRemote("nope").addErrback(lambda f: None)
        cancelled = client.callRemote("later")
        cancelled.addErrback(lambda f: None)
        cancelled.cancel()
        server.flush()
        lost = client.callRemote("later")
        lost.addErrback(lambda f: None)
        server.flush()
        server.drop()
        afterDrop = client.callRemote("one")
        server.flush()
        # The lost connection's endpoint waits for its backoff delay.
        server.reactor.advance(1)
        server.flush()
        connection = server.openConnections()[0]
        unrun = client.callRemote("one")
        connection.server.goaway("shutdown")
        server.flush()
        self.assertEqual(self.successResultOf(afterDrop), 1)
        self.assertEqual(self.successResultOf(unrun), 1)
        lines = self.scrape(collector)[5:]
        self.assertEqual(
            [line for line in lines if "_created" not in line],
            [
                'agilerpc_client_connections_total{client="c",outcome="ready"} 3.0',
                'agilerpc_client_connections_total{client="c",outcome="failed"} 1.0',
                'agilerpc_client_calls_total{client="c",outcome="ok"} 3.0',
                'agilerpc_client_calls_total{client="c",outcome="remote_error"} 1.0',
                'agilerpc_client_calls_total{client="c",outcome="lost"} 1.0',
                'agilerpc_client_calls_total{client="c",outcome="cancelled"} 1.0',
                'agilerpc_client_resent_calls_total{client="c"} 1.0',
                'agilerpc_client_retries_total{client="c"} 0.0',
            ],
        )

    def test_retriesCounted(self) -> None:
        """
        An idempotent call lost in flight and sent again counts one retry;
        it is not counted lost, and its answer counts ok.
        """
        registry = Registry()
        pending: list[Deferred[Any]] = []

        def later() -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d

        registry.register(later)
        server = MemoryServer(registry)
        client = RpcClient(server.reactor, "server", 9988, idempotent={"later"})
        collector = ClientCollector(client, name="c")
        d = client.callRemote("later")
        server.flush()
        server.drop()
        # The backoff, then the endpoint's reconnect delay.
        server.advance(1)
        server.advance(1)
        self.assertEqual(len(pending), 2)
        pending[1].callback("done")
        server.flush()
        self.assertEqual(self.successResultOf(d), "done")
        lines = self.scrape(collector)
        for expected in [
            'agilerpc_client_retries_total{client="c"} 1.0',
            'agilerpc_client_calls_total{client="c",outcome="lost"} 0.0',
            'agilerpc_client_calls_total{client="c",outcome="ok"} 1.0',
        ]:
            self.assertIn(expected, lines)


class TwistdMetricsTests(SynchronousTestCase):
    """
    C{twistd agilerpc --metrics-port} in a subprocess: the health-check
    built-ins answer, and an HTTP scrape shows the calls made.
    """

    def test_scrapeTwistd(self) -> None:
        """
        Calls to a real server move its counters, and C{/metrics} on
        C{--metrics-port} shows them.
        """
        server = ServerProcess.start(
            self, "--metrics-port", "0", "--metrics-interface", "127.0.0.1"
        )
        metricsPort = int(server.waitForOutput(r"MetricsSite starting on (\d+)")[1])
        client = server.connect(self)
        client.receiveHello()
        self.assertEqual(client.call("sayHello", "x"), [1, 1, None, "hello x"])
        self.assertEqual(client.call("system.ping"), [1, 2, None, "pong"])
        [_, _, error, stats] = client.call("system.stats")
        self.assertEqual(
            (error, stats["connections"], stats["calls"], stats["in_flight"]),
            (None, 1, 3, 0),
        )
        url = f"http://127.0.0.1:{metricsPort}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            lines = response.read().decode("utf-8").splitlines()
        for expected in [
            'agilerpc_server_calls_total{method="sayHello",outcome="ok"} 1.0',
            'agilerpc_server_calls_total{method="system.ping",outcome="ok"} 1.0',
            'agilerpc_server_calls_total{method="system.stats",outcome="ok"} 1.0',
            "agilerpc_server_connections 1.0",
        ]:
            self.assertIn(expected, lines)
        client.close()
        self.assertEqual(server.stop(), -signal.SIGTERM)
