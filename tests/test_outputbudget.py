"""
Tests for the limit on responses a client has not read (issue 13, item 2):
the bytes a connection writes while its transport has paused it are counted,
per connection (C{maxUnsent}, C{--max-unsent}) and across connections
(C{maxUnsentTotal}, C{--max-unsent-total}); past either limit the connection
is aborted, logged and counted, like redis' C{client-output-buffer-limit}.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from typing import Any

from twisted.internet.error import ConnectionAborted
from twisted.logger import LogLevel
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import RpcError, RpcServerFactory, RpcService, _wire
from agilerpc._observers import CallLog
from agilerpc._peerlog import BURST
from agilerpc._server import DEFAULT_MAX_UNSENT, DEFAULT_MAX_UNSENT_TOTAL
from agilerpc.metrics import ServerCollector, ServerMetrics
from agilerpc.tap import Options, makeService

from .serverhelpers import (
    BufferingTransport,
    Connection,
    ListeningReactor,
    ServerTestCase,
)
from .serverprocess import STRESS, RawClient, ServerProcess, rssKiB, scale
from .tlshelpers import pki

KiB = 1024
MiB = 1024 * KiB

#: The largest message in these tests, and the per-connection limit.
MESSAGE = 256 * KiB
LIMIT = 1 * MiB


class UnsentTestCase(ServerTestCase):
    """
    Connections whose transport has a send buffer that pauses the server
    when it holds more than 64 KiB the client has not read.
    """

    def makeFactory(self, **kwargs: Any) -> RpcServerFactory:
        kwargs.setdefault("maxMessageSize", MESSAGE)
        kwargs.setdefault("maxUnsent", LIMIT)
        return super().makeFactory(**kwargs)

    def buffered(self, factory: RpcServerFactory | None = None) -> Connection:
        """
        A new connection over a L{BufferingTransport}.
        """
        connection = Connection(
            self.factory if factory is None else factory, BufferingTransport()
        )
        connection.received()
        self.addCleanup(self._checkWrites, connection)
        return connection

    def respond(self, connection: Connection, key: str, size: int) -> int:
        """
        Fire the C{later} call C{key} with C{size} bytes; the bytes written.
        """
        before = len(connection.transport.value())
        self.pending.pop(key).callback(b"x" * size)
        return len(connection.transport.value()) - before

    def paused(self, connection: Connection, size: int = 100 * KiB) -> int:
        """
        Make the transport pause the server with the response to a C{later}
        call of C{size} bytes; the bytes written (all unsent).
        """
        key = f"pause{id(connection)}"
        connection.request(900, "later", key)
        written = self.respond(connection, key, size)
        assert isinstance(connection.transport, BufferingTransport)
        self.assertTrue(connection.transport.producerPaused)
        return written

    def aborted(self, connection: Connection) -> bool:
        return connection.transport.closes == ["abortConnection"]


class CountingTests(UnsentTestCase):
    """
    What a connection writes while paused is counted, and released when the
    transport resumes it or the connection is lost.
    """

    def test_notCountedWhileTheClientReads(self) -> None:
        """
        Responses that fit the transport's buffer are not counted.
        """
        connection = self.buffered()
        connection.request(1, "later", "a")
        self.respond(connection, "a", 30 * KiB)
        self.assertEqual(connection.protocol.unsent, 0)
        self.assertEqual(self.factory.unsent.total, 0)

    def test_countedFromTheWriteThatPaused(self) -> None:
        """
        The write that makes the transport pause the server is counted, and
        so is every write after it.
        """
        connection = self.buffered()
        connection.request(1, "later", "a")
        connection.request(2, "later", "b")
        first = self.paused(connection)
        second = self.respond(connection, "a", 50 * KiB)
        self.assertEqual(connection.protocol.unsent, first + second)
        self.assertEqual(self.factory.unsent.total, first + second)

    def test_everyWriteCounted(self) -> None:
        """
        Errors, the inlined response of a plain handler, and responses with
        an observer (another write path) are counted too.
        """
        connection = self.buffered()
        connection.request(1, "later", "a")
        self.paused(connection)
        before = connection.protocol.unsent
        written = len(connection.transport.value())
        self.pending.pop("a").errback(Failure(RpcError("Custom", "no")))
        written = len(connection.transport.value()) - written
        self.assertEqual(connection.protocol.unsent, before + written)

        # The fast path of stringReceived: the write that pauses.
        for factory in [self.factory, self.makeFactory(observers=[ServerMetrics()])]:
            connection = self.buffered(factory)
            # The first result of a type takes the slow path: now bytes is
            # known.
            connection.call(0, "blob", 10)
            before = len(connection.transport.value())
            connection.request(1, "blob", 100 * KiB)
            written = len(connection.transport.value()) - before
            self.assertEqual(connection.protocol.unsent, written)

    def test_resumeReleases(self) -> None:
        """
        When the transport resumes the server (its buffer is empty), nothing
        is unsent any more, and the requests that waited are read.
        """
        connection = self.buffered()
        self.paused(connection)
        connection.received()
        connection.request(1, "add", 1, 2)
        self.assertEqual(connection.received(), [])
        assert isinstance(connection.transport, BufferingTransport)
        connection.transport.drain()
        self.assertEqual(connection.protocol.unsent, 0)
        self.assertEqual(self.factory.unsent.total, 0)
        self.assertEqual(connection.received(), [[1, 1, None, 3]])

    def test_connectionLostReleases(self) -> None:
        """
        A connection lost with unsent bytes gives up its share of the total.
        """
        connection = self.buffered()
        self.paused(connection)
        self.assertGreater(self.factory.unsent.total, 0)
        connection.lost()
        self.assertEqual(self.factory.unsent.total, 0)

    def test_lostWhileWriting(self) -> None:
        """
        A connection lost inside the write that filled its buffer (a
        transport may report a failed write at once) holds nothing
        afterwards.
        """

        class LosingTransport(BufferingTransport):
            protocol: Any = None

            def write(self, data: bytes) -> None:
                super().write(data)
                if self.producerPaused and self.protocol is not None:
                    protocol, self.protocol = self.protocol, None
                    protocol.connectionLost(Failure(ConnectionAborted()))

        transport = LosingTransport()
        connection = Connection(self.factory, transport)
        transport.protocol = connection.protocol
        connection.request(1, "later", "a")
        self.respond(connection, "a", 100 * KiB)
        self.assertEqual(self.factory.unsent.total, 0)
        self.assertEqual(len(self.factory.unsent), 0)

    def test_stats(self) -> None:
        """
        C{system.stats} says how many bytes are unsent across connections.
        """
        connection = self.buffered()
        held = self.paused(connection)
        other = self.buffered()
        [[_, _, _, stats]] = other.call(1, "system.stats")
        self.assertEqual(stats["unsent_bytes"], held)
        assert isinstance(connection.transport, BufferingTransport)
        connection.transport.drain()
        [[_, _, _, stats]] = other.call(2, "system.stats")
        self.assertEqual(stats["unsent_bytes"], 0)


class LimitTests(UnsentTestCase):
    """
    A connection that holds more than C{maxUnsent} unsent, or the largest
    holder when all hold more than C{maxUnsentTotal}, is aborted.
    """

    def test_overMaxUnsentAborts(self) -> None:
        """
        Responses produced after the client stopped reading are written until
        they pass C{maxUnsent}; then the connection is aborted, logged at warn
        with the peer, and nothing more is written to it.
        """
        events = self.captureLogs()
        connection = self.buffered()
        for key in "abcdefg":
            connection.request(ord(key), "later", key)
        self.paused(connection, 200 * KiB)
        for key in "abcd":
            self.respond(connection, key, 200 * KiB)
            self.assertFalse(self.aborted(connection))
        self.respond(connection, "e", 200 * KiB)
        self.assertTrue(self.aborted(connection))
        self.assertEqual(self.factory.unsent.total, 0)
        self.assertEqual(connection.protocol.unsent, 0)
        # Calls that end later write nothing (checked at cleanup) and break
        # nothing.
        self.respond(connection, "f", 200 * KiB)
        self.pending.pop("g").errback(Failure(RpcError("Custom", "late")))
        connection.protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(self.factory.unsent.total, 0)
        [event] = [
            e for e in events if "over --max-unsent (" in e.get("log_format", "")
        ]
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["peer"], connection.protocol.peer)
        self.assertEqual(event["limit"], LIMIT)
        self.assertGreater(event["unsent"], LIMIT)

    def test_otherConnectionsServed(self) -> None:
        """
        Aborting one connection leaves the others as they were.
        """
        other = self.buffered()
        hog = self.buffered()
        for key in "abcdef":
            hog.request(ord(key), "later", key)
        self.paused(hog, 200 * KiB)
        for key in "abcde":
            self.respond(hog, key, 200 * KiB)
        self.assertTrue(self.aborted(hog))
        self.assertUsable(other)

    def test_noLimit(self) -> None:
        """
        With C{maxUnsent=None} and C{maxUnsentTotal=None}, unsent bytes are
        counted and nothing is aborted.
        """
        factory = self.makeFactory(maxUnsent=None, maxUnsentTotal=None)
        connection = self.buffered(factory)
        for key in range(10):
            connection.request(key, "later", str(key))
        held = self.paused(connection, 200 * KiB)
        for key in range(10):
            held += self.respond(connection, str(key), 200 * KiB)
        self.assertFalse(self.aborted(connection))
        self.assertEqual(factory.unsent.total, held)

    def test_overTotalAbortsTheLargest(self) -> None:
        """
        When the connections together hold more than C{maxUnsentTotal}, the
        one holding the most is aborted, whichever wrote last; the others
        keep their share and their connection.
        """
        events = self.captureLogs()
        factory = self.makeFactory(maxUnsent=None, maxUnsentTotal=LIMIT)
        large = self.buffered(factory)
        small = self.buffered(factory)
        large.request(1, "later", "a")
        large.request(2, "later", "b")
        small.request(1, "later", "c")
        largeHeld = self.paused(large, 250 * KiB)
        largeHeld += self.respond(large, "a", 250 * KiB)
        largeHeld += self.respond(large, "b", 250 * KiB)
        smallHeld = self.paused(small, 250 * KiB)
        self.assertFalse(self.aborted(large) or self.aborted(small))
        self.assertEqual(factory.unsent.total, largeHeld + smallHeld)
        smallHeld += self.respond(small, "c", 250 * KiB)
        self.assertEqual(factory.unsent.total, smallHeld)
        self.assertEqual(small.protocol.unsent, smallHeld)
        self.assertTrue(self.aborted(large))
        self.assertFalse(self.aborted(small))
        self.assertEqual(large.protocol.unsent, 0)
        [event] = [e for e in events if "--max-unsent-total" in e.get("log_format", "")]
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["limit"], LIMIT)

    def test_overTotalAbortsTheWriter(self) -> None:
        """
        A connection that alone takes the total past C{maxUnsentTotal} is
        aborted.
        """
        factory = self.makeFactory(maxUnsent=None, maxUnsentTotal=LIMIT)
        connection = self.buffered(factory)
        for key in "abcdef":
            connection.request(ord(key), "later", key)
        self.paused(connection, 200 * KiB)
        for key in "abcde":
            self.respond(connection, key, 200 * KiB)
        self.assertTrue(self.aborted(connection))
        self.assertEqual(factory.unsent.total, 0)

    def test_logRateLimited(self) -> None:
        """
        Aborts are logged through the per-peer rate limit: a host that makes
        the server abort many connections at once gets a few lines.
        """
        events = self.captureLogs()
        for _ in range(BURST + 5):
            connection = self.buffered()
            for key in "abcde":
                connection.request(ord(key), "later", key)
            self.paused(connection, 200 * KiB)
            for key in "abcde":
                self.respond(connection, key, 200 * KiB)
            self.assertTrue(self.aborted(connection))
        logged = [e for e in events if "over --max-unsent (" in e.get("log_format", "")]
        self.assertEqual(len(logged), BURST)

    def test_metrics(self) -> None:
        """
        L{ServerMetrics} counts the aborts by reason, and exposes the bytes
        unsent now as a gauge.
        """
        from prometheus_client import CollectorRegistry, generate_latest

        metrics = ServerMetrics()
        # With another observer: both are told.
        other = ServerMetrics()
        factory = self.makeFactory(
            observers=[metrics, CallLog(), other], maxUnsentTotal=2 * LIMIT
        )
        held = self.buffered(factory)
        heldBytes = self.paused(held)
        hog = self.buffered(factory)
        for key in "abcdef":
            hog.request(ord(key), "later", key)
        self.paused(hog, 200 * KiB)
        for key in "abcde":
            self.respond(hog, key, 200 * KiB)
        self.assertEqual(metrics.aborted, {"UnsentLimit": 1, "UnsentTotalLimit": 0})
        self.assertEqual(other.aborted, metrics.aborted)
        self.assertEqual(metrics.unsentBytes(), heldBytes)
        registry = CollectorRegistry()
        registry.register(ServerCollector(metrics))
        lines = generate_latest(registry).decode("utf-8").splitlines()
        self.assertIn(f"agilerpc_server_unsent_bytes {float(heldBytes)}", lines)
        self.assertIn(
            'agilerpc_server_aborted_connections_total{reason="UnsentLimit"} 1.0',
            lines,
        )
        self.assertIn(
            'agilerpc_server_aborted_connections_total{reason="UnsentTotalLimit"} 0.0',
            lines,
        )


class FactoryOptionTests(SynchronousTestCase):
    """
    L{RpcServerFactory}'s C{maxUnsent} and C{maxUnsentTotal}.
    """

    def factory(self, **kwargs: Any) -> RpcServerFactory:
        from agilerpc import Registry

        return RpcServerFactory(Registry(), ListeningReactor(), **kwargs)

    def test_defaults(self) -> None:
        """
        By default a connection may hold 64 MiB unsent (eight of the largest
        messages), and all of them 1 GiB.
        """
        self.assertEqual(DEFAULT_MAX_UNSENT, 64 * MiB)
        self.assertEqual(DEFAULT_MAX_UNSENT, 8 * _wire.DEFAULT_MAX_MESSAGE_SIZE)
        self.assertEqual(DEFAULT_MAX_UNSENT_TOTAL, 1024 * MiB)
        factory = self.factory()
        self.assertEqual(factory.maxUnsent, DEFAULT_MAX_UNSENT)
        self.assertEqual(factory.unsent.limit, DEFAULT_MAX_UNSENT_TOTAL)

    def test_invalid(self) -> None:
        """
        A limit below 1, or below the maximum message size (a single response
        may be that large), is refused.
        """
        for kwargs in [
            {"maxUnsent": 0},
            {"maxUnsentTotal": -1},
            {"maxMessageSize": 1000, "maxUnsent": 999},
            {"maxMessageSize": 1000, "maxUnsentTotal": 999},
        ]:
            self.assertRaises(ValueError, self.factory, **kwargs)
        self.factory(maxMessageSize=1000, maxUnsent=1000, maxUnsentTotal=1000)


class TapOptionTests(SynchronousTestCase):
    """
    C{twistd agilerpc --max-unsent} and C{--max-unsent-total}.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def service(self, *argv: str) -> RpcServerFactory:
        service = makeService(self.parse(*argv), ListeningReactor())
        assert isinstance(service, RpcService)
        return service.factory

    def test_tapDefaults(self) -> None:
        """
        C{twistd agilerpc} has the factory's defaults.
        """
        factory = self.service()
        self.assertEqual(factory.maxUnsent, DEFAULT_MAX_UNSENT)
        self.assertEqual(factory.unsent.limit, DEFAULT_MAX_UNSENT_TOTAL)

    def test_tapGiven(self) -> None:
        """
        The options' values are the factory's limits; 0 is no limit.
        """
        factory = self.service(
            "--max-unsent", str(16 * MiB), "--max-unsent-total", str(256 * MiB)
        )
        self.assertEqual(factory.maxUnsent, 16 * MiB)
        self.assertEqual(factory.unsent.limit, 256 * MiB)
        factory = self.service("--max-unsent", "0", "--max-unsent-total", "0")
        self.assertIsNone(factory.maxUnsent)
        self.assertIsNone(factory.unsent.limit)

    def test_tapInvalid(self) -> None:
        """
        A negative limit, or one below C{--max-message-size}, is a usage
        error.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--max-unsent", "-1")
        self.assertEqual(str(e), "--max-unsent must be >= 0, not '-1'")
        e = self.assertRaises(usage.UsageError, self.parse, "--max-unsent-total", "x")
        self.assertEqual(str(e), "--max-unsent-total must be a number, not 'x'")
        e = self.assertRaises(
            usage.UsageError,
            self.parse,
            "--max-message-size",
            "2000",
            "--max-unsent",
            "1000",
        )
        self.assertEqual(
            str(e), "--max-unsent must be 0 or >= --max-message-size (2000), not 1000"
        )
        e = self.assertRaises(
            usage.UsageError, self.parse, "--max-unsent-total", "1000"
        )
        self.assertEqual(
            str(e),
            "--max-unsent-total must be 0 or >= --max-message-size "
            f"({_wire.DEFAULT_MAX_MESSAGE_SIZE}), not 1000",
        )


class ServerProcessTests(SynchronousTestCase):
    """
    Against C{twistd agilerpc}: a client that asks for large results from a
    Deferred handler and never reads them.
    """

    timeout = 600 if STRESS else 60

    def hog(
        self, server: ServerProcess, tls: ssl.SSLContext | None = None
    ) -> socket.socket:
        """
        A client that never reads (over TLS with C{tls}).
        """
        hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(hog.close)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.settimeout(10)
        hog.connect(("127.0.0.1", server.port))
        if tls is not None:
            hog = tls.wrap_socket(hog, server_hostname="localhost")
            self.addCleanup(hog.close)
        return hog

    def ask(
        self, hog: socket.socket, msgids: range, size: int, delay: float = 0.2
    ) -> None:
        """
        Send requests for C{size}-byte results produced C{delay} seconds
        later.
        """
        hog.sendall(
            b"".join(
                _wire.frame(_wire.encodeRequest(i, "blobLater", [size, delay]))
                for i in msgids
            )
        )

    def waitForStats(
        self, client: Any, done: Any, timeout: float = 20.0
    ) -> dict[str, Any]:
        """
        Poll C{system.stats} until C{done(stats)}; the stats.
        """
        deadline = time.monotonic() + timeout
        while True:
            stats: dict[str, Any] = client.call("system.stats")[3]
            if done(stats):
                return stats
            self.assertLess(time.monotonic(), deadline, f"last stats: {stats}")
            time.sleep(0.05)

    def test_clientThatNeverReadsItsResults(self) -> None:
        """
        A client that sent small requests for large results (Deferred) and
        reads none is aborted once the server holds C{--max-unsent} for it:
        the server's RSS grows by about that much, not by the results, and
        another client is served throughout.
        """
        # Short: 96 MiB of results with a 16 MiB limit; full (tox -e stress):
        # the 3000 requests (about 67 KB) for 1 MiB results, with the
        # default limit.
        limit = scale(16 * MiB, DEFAULT_MAX_UNSENT)
        requests = scale(96, 3000)
        server = ServerProcess.start(self, "--max-unsent", str(limit))
        other = server.connect(self)
        other.receiveHello()
        self.assertEqual(other.call("echo", "warm")[3], "warm")
        before = rssKiB(server.pid) * KiB

        hog = self.hog(server)
        # Every request is read before any result is ready (the server stops
        # reading only once results fill its buffer).  The first 8 MiB of
        # results, more than the kernel's buffers take and less than the
        # limit, come first: the server holds some, and says so.
        self.ask(hog, range(8), MiB, 0.2)
        self.ask(hog, range(8, requests), MiB, 2.0)
        self.waitForStats(other, lambda s: s["unsent_bytes"] > 0, timeout=2.0)
        server.waitForOutput(r"over --max-unsent \(", timeout=30)
        stats = self.waitForStats(
            other, lambda s: s["connections"] == 1 and s["unsent_bytes"] == 0
        )
        self.assertEqual(stats["in_flight"], 0)
        grown = rssKiB(server.pid) * KiB - before
        self.assertLess(
            grown, limit + 48 * MiB, f"server RSS grew by {grown // MiB} MiB"
        )
        # The hog's connection was aborted; everyone else is still served.
        hog.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while hog.recv(1 << 20):
                pass
        started = time.monotonic()
        self.assertEqual(other.call("echo", "still here")[3], "still here")
        self.assertLess(time.monotonic() - started, 2.0)

    def test_overTLS(self) -> None:
        """
        The unsent responses are counted, and the client aborted past
        C{--max-unsent}, over TLS too: the transport pauses the server the
        same way.
        """
        p = pki()
        server = ServerProcess.start(
            self,
            "--tls-cert",
            p.path("server.pem"),
            "--tls-key",
            p.path("server.key"),
            "--max-unsent",
            str(16 * MiB),
        )
        other = RawClient(server.port, 10.0)
        self.addCleanup(other.close)
        context = ssl.create_default_context(cafile=p.path("ca.pem"))
        other.sock = context.wrap_socket(other.sock, server_hostname="localhost")
        other.receiveHello()
        hog = self.hog(server, context)
        self.ask(hog, range(8), MiB, 0.2)
        self.ask(hog, range(8, 96), MiB, 2.0)
        self.waitForStats(other, lambda s: s["unsent_bytes"] > 0, timeout=2.0)
        server.waitForOutput(r"over --max-unsent \(", timeout=30)
        self.waitForStats(
            other, lambda s: s["connections"] == 1 and s["unsent_bytes"] == 0
        )
        self.assertEqual(other.call("echo", "still here")[3], "still here")

    def test_clientsThatNeverReadShareTheTotal(self) -> None:
        """
        Several such clients, with no limit per connection, are aborted
        (largest first) as together they pass C{--max-unsent-total}: the
        server's RSS grows by about that much, not by all their results.
        """
        # Short: 8 clients, 128 MiB of results, a 24 MiB total; full: 16
        # clients, 640 MiB, a 256 MiB total.
        total = scale(24 * MiB, 256 * MiB)
        hogs = scale(8, 16)
        requests = scale(16, 40)
        server = ServerProcess.start(
            self, "--max-unsent", "0", "--max-unsent-total", str(total)
        )
        other = server.connect(self)
        other.receiveHello()
        self.assertEqual(other.call("echo", "warm")[3], "warm")
        before = rssKiB(server.pid) * KiB
        calls = other.call("system.stats")[3]["calls"] + hogs * requests
        # Each client's results come in a reactor iteration of their own: an
        # aborted connection's buffer is freed in its connectionLost, on the
        # iteration after the abort.
        for i in range(hogs):
            self.ask(self.hog(server), range(requests), MiB, 0.2 + 0.15 * i)
        server.waitForOutput(r"--max-unsent-total", timeout=30)
        # Every result was produced: written, or dropped with its connection.
        self.waitForStats(
            other,
            lambda s: (
                s["calls"] > calls
                and s["in_flight"] == 0
                and s["unsent_bytes"] <= total
            ),
        )
        # Beyond the total: the results of the client aborted in an
        # iteration, until its connectionLost, and Twisted's copy of a
        # buffer when it joins it to write.
        grown = rssKiB(server.pid) * KiB - before
        self.assertLess(
            grown,
            total + 2 * requests * MiB + 32 * MiB,
            f"server RSS grew by {grown // MiB} MiB",
        )
        started = time.monotonic()
        self.assertEqual(other.call("echo", "still here")[3], "still here")
        self.assertLess(time.monotonic() - started, 2.0)
