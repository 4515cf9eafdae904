"""
Tests for the server's limits and gates: backpressure on the send buffer,
C{maxInFlight}, C{maxConnections} and token auth.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import _wire

from .serverhelpers import (
    Connection,
    LogCollector,
    RecordingTransport,
    ServerTestCase,
    encode,
    rawFrame,
)
from .serverprocess import ServerProcess, rssKiB


class BackpressureTests(ServerTestCase):
    def test_registeredAsStreamingProducer(self) -> None:
        """
        The protocol registers with its transport as a streaming producer, so
        a full send buffer pauses it.
        """
        connection = self.connect()
        self.assertIs(connection.transport.producer, connection.protocol)
        self.assertTrue(connection.transport.streaming)

    def test_tlsRegistersAfterHandshake(self) -> None:
        """
        Over TLS the protocol becomes the transport's producer only once the
        handshake completes: before it, the TLS layer buffers the hello and
        would pause reading, which would stall the handshake itself.
        """

        class TLSTransport(RecordingTransport):
            def getPeerCertificate(self) -> None:
                return None

        protocol = self.factory.buildProtocol(None)
        transport = TLSTransport()
        protocol.makeConnection(transport)
        self.assertIsNone(transport.producer)
        protocol.handshakeCompleted()
        self.assertIs(transport.producer, protocol)

    def test_fullSendBufferStopsReading(self) -> None:
        """
        While the transport's send buffer is full, the server stops reading
        (it pauses the transport) and dispatches nothing; when it drains, the
        buffered requests are dispatched.
        """
        connection = self.connect()
        protocol = connection.protocol
        protocol.pauseProducing()
        self.assertEqual(connection.transport.producerState, "paused")
        connection.request(1, "echo", "a")
        connection.request(2, "echo", "b")
        self.assertEqual(self.calls, [])
        self.assertEqual(connection.received(), [])
        protocol.resumeProducing()
        self.assertEqual(connection.transport.producerState, "producing")
        self.assertEqual(self.calls, ["a", "b"])
        self.assertEqual(connection.received(), [[1, 1, None, "a"], [1, 2, None, "b"]])

    def test_pauseMidChunk(self) -> None:
        """
        A full buffer reached while a chunk of several frames is parsed stops
        dispatch at that frame; the rest waits for the resume.
        """
        connection = self.connect()
        protocol = connection.protocol
        original = connection.transport.write

        def write(data: bytes) -> None:
            original(data)
            if len(self.calls) == 1:
                protocol.pauseProducing()

        connection.transport.write = write  # type: ignore[method-assign]
        connection.sendBytes(b"".join(encode([0, i, "echo", [i]]) for i in range(5)))
        self.assertEqual(self.calls, [0])
        protocol.resumeProducing()
        self.assertEqual(self.calls, [0, 1, 2, 3, 4])


class MaxInFlightTests(ServerTestCase):
    def test_stopsReadingAtLimit(self) -> None:
        """
        With maxInFlight calls outstanding the server stops reading; when one
        finishes it reads and dispatches what waited.
        """
        connection = self.connect(maxInFlight=2)
        connection.request(1, "later", "a")
        self.assertEqual(connection.transport.producerState, "producing")
        connection.request(2, "later", "b")
        self.assertEqual(connection.transport.producerState, "paused")
        connection.request(3, "later", "c")
        self.assertEqual(self.calls, ["a", "b"])
        self.pending["a"].callback("A")
        self.assertEqual(self.calls, ["a", "b", "c"])
        self.assertEqual(connection.received(), [[1, 1, None, "A"]])
        # Two outstanding again: paused again.
        self.assertEqual(connection.transport.producerState, "paused")
        self.pending["b"].callback("B")
        self.pending["c"].callback("C")
        self.assertEqual(connection.transport.producerState, "producing")
        self.assertEqual(connection.received(), [[1, 2, None, "B"], [1, 3, None, "C"]])

    def test_noErrorBeyondLimit(self) -> None:
        """
        Requests beyond the limit get no error: they simply wait.
        """
        connection = self.connect(maxInFlight=1)
        connection.request(1, "later", "a")
        for i in range(2, 6):
            connection.request(i, "echo", i)
        self.assertEqual(connection.received(), [])
        self.pending["a"].callback("A")
        self.assertEqual([m[1] for m in connection.received()], [1, 2, 3, 4, 5])

    def test_writePauseAndLimitTogether(self) -> None:
        """
        Reading resumes only when neither the send buffer nor the in-flight
        limit holds it back.
        """
        connection = self.connect(maxInFlight=1)
        connection.request(1, "later", "a")
        connection.protocol.pauseProducing()
        self.pending["a"].callback("A")
        self.assertEqual(connection.transport.producerState, "paused")
        connection.protocol.resumeProducing()
        self.assertEqual(connection.transport.producerState, "producing")

    def test_invalidLimit(self) -> None:
        """
        maxInFlight must be at least 1.
        """
        self.assertRaises(ValueError, self.makeFactory, maxInFlight=0)


class MaxContainersTests(ServerTestCase):
    """
    C{maxContainers} bounds the arrays and maps one request may hold, so
    that no single message stalls the server while it builds them.
    """

    def test_refusedWithMsgid(self) -> None:
        """
        A request holding more arrays and maps than the limit is refused
        with C{InvalidRequest} for its msgid, nothing runs, and the
        connection goes on.
        """
        connection = self.connect(maxContainers=10, maxMessageSize=2**20)
        payload = b"\x94\x00\x05\xa4echo\x91\x9a" + b"\x90" * 10
        connection.sendBytes(rawFrame(payload))
        self.assertError(
            connection.received(),
            5,
            "InvalidRequest",
            "the message holds more than 10 arrays and maps",
        )
        self.assertEqual(self.calls, [])
        self.assertUsable(connection)

    def test_atLimitAccepted(self) -> None:
        """
        Exactly the limit, the message's own array and maps included, is
        accepted.
        """
        connection = self.connect(maxContainers=10, maxMessageSize=2**20)
        value: list[Any] = [[], {}, [], [], [], [], []]
        self.assertEqual(connection.call(5, "echo", value), [[1, 5, None, value]])

    def test_lookalikeBytesAccepted(self) -> None:
        """
        Bytes inside a bin that look like array headers do not count.
        """
        connection = self.connect(maxContainers=10, maxMessageSize=2**20)
        value = b"\x90" * 1000
        self.assertEqual(connection.call(5, "echo", value), [[1, 5, None, value]])

    def test_noLimit(self) -> None:
        """
        With no limit, any number of arrays is accepted.
        """
        connection = self.connect(maxContainers=None, maxMessageSize=2**20)
        value: list[Any] = [[]] * 70000
        self.assertEqual(connection.call(5, "echo", value), [[1, 5, None, value]])

    def test_default(self) -> None:
        """
        By default a request may hold 65,536 arrays and maps: 65,533 empty
        arrays in the argument, the argument, the args array and the message.
        """
        connection = self.connect(maxMessageSize=2**20)
        self.assertEqual(connection.protocol.factory.maxContainers, 65536)
        value: list[Any] = [[]] * 65533
        self.assertEqual(connection.call(5, "echo", value), [[1, 5, None, value]])
        connection.request(6, "echo", [*value, []])
        self.assertError(connection.received(), 6, "InvalidRequest")

    def test_invalidLimit(self) -> None:
        """
        A limit below 1 is a configuration error.
        """
        self.assertRaises(ValueError, self.makeFactory, maxContainers=0)


class MaxConnectionsTests(ServerTestCase):
    def test_busyGoawayInsteadOfHello(self) -> None:
        """
        Beyond maxConnections a new connection gets a ServerBusy goaway, no
        hello, and is closed; existing ones are unaffected.
        """
        factory = self.makeFactory(maxConnections=2)
        first = Connection(factory)
        second = Connection(factory)
        with self.capture() as events:
            third = Connection(factory)
        self.assertEqual(third.hello, [[3, "goaway", None, "ServerBusy"]])
        self.assertEqual(third.transport.closes, ["loseWriteConnection"])
        self.assertEqual(len(events), 1)
        third.request(1, "echo", "x")
        self.assertEqual(third.received(), [])
        self.assertEqual(first.call(1, "echo", "ok"), [[1, 1, None, "ok"]])
        self.assertEqual(second.hello[0][1], "hello")

    def capture(self) -> Any:
        collector = LogCollector()
        test = self

        class Capture:
            def __enter__(self) -> list[Any]:
                globalLogPublisher.addObserver(collector)
                return collector.events

            def __exit__(self, *exc: object) -> None:
                globalLogPublisher.removeObserver(collector)
                test.assertTrue(collector.events)

        return Capture()

    def test_closedConnectionsFreeSlots(self) -> None:
        """
        Once an accepted connection closes, a new one is accepted; refused
        ones never count.
        """
        factory = self.makeFactory(maxConnections=1)
        first = Connection(factory)
        busy = Connection(factory)
        busy.lost()
        self.assertEqual(factory.accepted, 1)
        first.lost()
        self.assertEqual(factory.accepted, 0)
        again = Connection(factory)
        self.assertEqual(again.hello[0][1], "hello")


class AuthTests(ServerTestCase):
    TOKEN = b"s3cret-token"

    def authConnection(self) -> Connection:
        return self.connect(authToken=self.TOKEN)

    def test_helloSaysAuth(self) -> None:
        """
        A server with a token says so in its hello.
        """
        connection = self.authConnection()
        self.assertEqual(connection.hello[0][2]["auth"], "token")
        self.assertNotIn("auth", Connection(self.makeFactory()).hello[0][2])

    def test_rightToken(self) -> None:
        """
        After [3, "auth", token] with the right token (str or bin), requests
        are served.
        """
        for token in (self.TOKEN, self.TOKEN.decode()):
            connection = self.authConnection()
            connection.send([3, "auth", token])
            self.assertEqual(connection.received(), [])
            self.assertEqual(connection.call(1, "echo", "x"), [[1, 1, None, "x"]])

    def test_wrongToken(self) -> None:
        """
        A wrong token is refused with Unauthorized and a goaway, the
        connection closes, nothing is dispatched, and the token offered is
        not logged.
        """
        connection = self.authConnection()
        collector = LogCollector()
        globalLogPublisher.addObserver(collector)
        try:
            connection.send([3, "auth", "guess-123"])
        finally:
            globalLogPublisher.removeObserver(collector)
        received = connection.received()
        self.assertEqual(received[0][0:2], [1, None])
        self.assertEqual(received[0][2]["type"], "Unauthorized")
        self.assertEqual(received[1], [3, "goaway", None, "Unauthorized"])
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])
        connection.request(1, "echo", "x")
        self.assertEqual(self.calls, [])
        self.assertTrue(collector.events)
        for event in collector.events:
            self.assertNotIn("guess-123", repr(event))

    def test_requestBeforeAuth(self) -> None:
        """
        A request before auth is refused with Unauthorized (for its msgid)
        and not dispatched.
        """
        connection = self.authConnection()
        connection.request(4, "echo", "x")
        received = connection.received()
        self.assertEqual(received[0][0:2], [1, 4])
        self.assertEqual(received[0][2]["type"], "Unauthorized")
        self.assertEqual(received[1], [3, "goaway", None, "Unauthorized"])
        self.assertEqual(self.calls, [])

    def test_notificationBeforeAuth(self) -> None:
        """
        A notification before auth is refused and not run.
        """
        connection = self.authConnection()
        connection.send([2, "echo", ["x"]])
        self.assertEqual(connection.received()[1], [3, "goaway", None, "Unauthorized"])
        self.assertEqual(self.calls, [])

    def test_malformedBeforeAuth(self) -> None:
        """
        A malformed frame before auth gets C{Unauthorized} and the goaway
        (with the msgid of a request whose start can be read), not the
        C{InvalidRequest} an authenticated client would get; a right token
        after it is not read.
        """
        for payload, msgid in [
            (b"", None),
            (b"\xc1", None),
            (b"\x94\x00\x09\xa3add\x05", 9),
            (b"\x94\x01\x03\xc0\x01", None),
            (b"\x94\x00\x09\xa3add", 9),
        ]:
            connection = self.authConnection()
            connection.sendBytes(rawFrame(payload))
            received = connection.received()
            self.assertEqual(received[0][:2], [1, msgid], payload)
            self.assertEqual(received[0][2]["type"], "Unauthorized")
            self.assertEqual(received[1], [3, "goaway", None, "Unauthorized"])
            connection.send([3, "auth", self.TOKEN])
            connection.request(1, "echo", "x")
            self.assertEqual(connection.received(), [])
            self.assertEqual(self.calls, [])

    def test_oversizedBeforeAuth(self) -> None:
        """
        The size check comes first: an oversized frame before auth is
        refused as C{MessageTooLarge}, as it is after auth.
        """
        connection = self.authConnection()
        connection.sendBytes(b"\xff\xff\xff\xff")
        received = connection.received()
        self.assertEqual(received[0][2]["type"], "MessageTooLarge")
        self.assertEqual(received[1], [3, "goaway", None, "MessageTooLarge"])

    def test_nonStringToken(self) -> None:
        """
        A token that is neither str nor bin is refused.
        """
        connection = self.authConnection()
        connection.send([3, "auth", 12345])
        self.assertEqual(connection.received()[1][3], "Unauthorized")

    def test_emptyTokenRefused(self) -> None:
        """
        An empty server token is a configuration error.
        """
        self.assertRaises(ValueError, self.makeFactory, authToken=b"")


class SlowReaderIntegrationTests(SynchronousTestCase):
    """
    A real C{twistd agilerpc}: a client that sends requests and never reads
    the responses is throttled by the server (it stops reading that
    connection), the server's memory stays bounded, and other clients are
    answered meanwhile.
    """

    def test_clientThatNeverReads(self) -> None:
        """
        However much a non-reading client tries to send, the server takes
        only what its buffers hold, its RSS grows by a bounded amount, and a
        second client's call is answered.
        """
        server = ServerProcess.start(self)
        other = server.connect(self)
        other.receiveHello()
        self.assertEqual(other.call("echo", "warm")[3], "warm")
        before = rssKiB(server.pid) * 1024

        hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(hog.close)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(("127.0.0.1", server.port))
        hog.setblocking(False)
        request = b"".join(
            _wire.frame(_wire.encodeRequest(i, "echo", [b"x" * 4096]))
            for i in range(100)
        )
        offered = 0
        sent = 0
        stalled = 0.0
        deadline = time.monotonic() + 20
        # 200 MiB of requests, far more than any buffer: stop once the server
        # has taken nothing for a second.
        while offered < 200 * 1024 * 1024 and stalled < 1.0:
            self.assertLess(time.monotonic(), deadline)
            _, writable, _ = select.select([], [hog], [], 0.1)
            if not writable:
                stalled += 0.1
                continue
            try:
                n = hog.send(request)
            except BlockingIOError:
                n = 0
            offered += len(request)
            sent += n
            stalled = 0.0 if n else stalled + 0.1

        # The server stopped reading long before 200 MiB.
        self.assertLess(sent, 64 * 1024 * 1024)
        grown = rssKiB(server.pid) * 1024 - before
        self.assertLess(grown, 32 * 1024 * 1024, f"server RSS grew by {grown} bytes")
        # Everyone else is still served, promptly.
        started = time.monotonic()
        self.assertEqual(other.call("echo", "still here")[3], "still here")
        self.assertLess(time.monotonic() - started, 2.0)
