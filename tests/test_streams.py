# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for server streams (PROTOCOL.md 4.5): L{agilerpc._streams} driven
through L{RpcServerProtocol} with a recording transport and a clock.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import AsyncGenerator, Generator
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from agilerpc import (
    CallLost,
    CallTimeout,
    InvalidParams,
    InvalidRequest,
    Registry,
    RemoteError,
    RpcClient,
    RpcError,
    Stream,
    StreamsNotSupported,
    TcpRpcClient,
    _cli,
    _streams,
    currentCall,
)
from agilerpc._clientstream import RpcStream
from agilerpc.metrics import ServerCollector, ServerMetrics
from agilerpc.testing import MemoryServer

from .clienthelpers import MemoryServer as ScriptedServer
from .clienthelpers import MemorySocket
from .serverhelpers import KEEPALIVE, Connection, ServerTestCase, encode
from .serverprocess import ServerProcess, rssKiB, scale


class StreamTestCase(ServerTestCase):
    """
    Connections to a server with streaming handlers.

    @ivar pulled: the items each generator produced, by name.
    @ivar closed: the generators whose C{finally} ran.
    """

    def setUp(self) -> None:
        super().setUp()
        self.pulled: list[Any] = []
        self.closed: list[str] = []
        self.waits: list[Deferred[None]] = []

        def count(n: int) -> Generator[int, None, str]:
            for i in range(n):
                self.pulled.append(i)
                yield i
            return "done"

        def forever(name: str) -> Generator[int, None, None]:
            try:
                i = 0
                while True:
                    self.pulled.append(i)
                    yield i
                    i += 1
            finally:
                self.closed.append(name)

        def failing(n: int) -> Generator[int, None, None]:
            yield from range(n)
            raise ValueError("failed after items")

        def badItem() -> Generator[object, None, None]:
            try:
                yield 1
                yield object()
                yield 2
            finally:
                self.closed.append("badItem")

        async def ticks(n: int) -> AsyncGenerator[int, None]:
            try:
                for i in range(n):
                    d: Deferred[None] = Deferred()
                    self.waits.append(d)
                    await d
                    yield i
            finally:
                self.closed.append("ticks")

        self.producers: list[RecordingProducer] = []
        self.streams: list[Stream] = []

        def pushed() -> Stream:
            stream = Stream(highWater=3)
            producer = RecordingProducer()
            stream.registerProducer(producer, True)
            self.producers.append(producer)
            self.streams.append(stream)
            return stream

        for f in (count, forever, failing, badItem, ticks, pushed):
            self.registry.register(f)

    def stream(
        self, connection: Connection, msgid: int, method: str, *args: Any, window: int
    ) -> None:
        connection.send([0, msgid, method, list(args), {}, {"stream": window}])

    def turn(self) -> None:
        """
        Let the pump run the turns scheduled so far.
        """
        self.reactor.advance(0)


class StreamTests(StreamTestCase):
    """
    Items, then the end, as credit allows.
    """

    def test_helloListsStreams(self) -> None:
        """
        The hello lists the C{stream} feature.
        """
        connection = self.connect()
        self.assertIn("stream", connection.hello[0][2]["features"])

    def test_itemsThenEnd(self) -> None:
        """
        Each item is its own message, in order; the end is the response,
        carrying the generator's return value.
        """
        connection = self.connect()
        self.stream(connection, 1, "count", 3, window=10)
        self.turn()
        self.assertEqual(
            connection.received(),
            [[4, 1, 0], [4, 1, 1], [4, 1, 2], [1, 1, None, "done"]],
        )
        self.assertEqual(connection.protocol.inFlight, 0)

    def test_windowBoundsPulling(self) -> None:
        """
        The server pulls no more items than the caller granted; a credit
        lets it pull that many more.
        """
        connection = self.connect()
        self.stream(connection, 1, "forever", "f", window=5)
        self.turn()
        self.assertEqual(len(connection.received()), 5)
        self.assertEqual(self.pulled, [0, 1, 2, 3, 4])
        self.turn()
        self.assertEqual(connection.received(), [])
        connection.send([3, "credit", 1, 3])
        self.turn()
        self.assertEqual(connection.received(), [[4, 1, 5], [4, 1, 6], [4, 1, 7]])
        self.assertEqual(len(self.pulled), 8)

    def test_creditIgnoredForOthers(self) -> None:
        """
        A credit for a msgid that is not outstanding, or for a plain call, is
        ignored; a malformed one is refused with a nil msgid.
        """
        connection = self.connect()
        connection.request(2, "later", "a")
        connection.send([3, "credit", 9, 1])
        connection.send([3, "credit", 2, 1])
        self.assertEqual(connection.received(), [])
        for bad in ([3, "credit", 2], [3, "credit", 2, 0], [3, "credit", -1, 1]):
            connection.send(bad)
            self.assertError(connection.received(), None, "InvalidRequest")

    def test_cancelClosesGenerator(self) -> None:
        """
        A cancel closes the generator (its C{finally} runs) and ends the
        stream with C{Cancelled}.
        """
        connection = self.connect()
        self.stream(connection, 1, "forever", "f", window=2)
        self.turn()
        connection.received()
        connection.send([3, "cancel", 1])
        self.assertEqual(self.closed, ["f"])
        self.assertError(connection.received(), 1, "Cancelled")
        connection.send([3, "credit", 1, 5])
        self.turn()
        self.assertEqual(connection.received(), [])

    def test_connectionLostClosesGenerator(self) -> None:
        """
        A stream whose connection is lost is closed at once.
        """
        connection = self.connect()
        self.stream(connection, 1, "forever", "f", window=2)
        self.turn()
        connection.lost()
        self.assertEqual(self.closed, ["f"])
        self.turn()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_errorAfterItems(self) -> None:
        """
        An error after some items ends the stream after them.
        """
        connection = self.connect()
        self.stream(connection, 1, "failing", 2, window=10)
        self.turn()
        frames = connection.received()
        self.assertEqual(frames[:2], [[4, 1, 0], [4, 1, 1]])
        self.assertError(frames[2:], 1, "ValueError", "failed after items")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_unencodableItem(self) -> None:
        """
        An item msgpack cannot encode ends the stream with C{InvalidResult}
        and closes the generator.
        """
        connection = self.connect()
        self.stream(connection, 1, "badItem", window=10)
        self.turn()
        frames = connection.received()
        self.assertEqual(frames[0], [4, 1, 1])
        self.assertError(frames[1:], 1, "InvalidResult")
        self.assertEqual(self.closed, ["badItem"])

    def test_itemTooLarge(self) -> None:
        """
        An item over the maximum message size ends the stream with
        C{MessageTooLarge} and closes the generator.
        """

        def big() -> Generator[bytes, None, None]:
            try:
                yield b"x" * 10
                yield b"x" * 2000
            finally:
                self.closed.append("big")

        self.registry.register(big)
        connection = self.connect()
        self.stream(connection, 1, "big", window=10)
        self.turn()
        frames = connection.received()
        self.assertEqual(frames[0], [4, 1, b"x" * 10])
        self.assertError(frames[1:], 1, "MessageTooLarge")
        self.assertEqual(self.closed, ["big"])

    def test_inFlightLimitCountsStreams(self) -> None:
        """
        An open stream counts against C{maxInFlight}: at the limit the
        server stops reading that connection.  A stream that has used its
        credit waits for the client, not the server, and stops counting, so
        that the client's credit can be read (else streams waiting for
        credit at the limit would wait for ever).
        """
        connection = self.connect(maxInFlight=1)
        self.stream(connection, 1, "count", 2, window=1)
        self.assertTrue(connection.protocol.paused)
        self.turn()
        self.assertEqual(connection.received(), [[4, 1, 0]])
        self.assertFalse(connection.protocol.paused)
        connection.send([3, "credit", 1, 5])
        self.assertTrue(connection.protocol.paused)
        self.turn()
        self.assertEqual(connection.received(), [[4, 1, 1], [1, 1, None, "done"]])
        self.assertFalse(connection.protocol.paused)
        self.assertEqual(connection.protocol.connection.awaitingCredit, 0)

    def test_asyncGenerator(self) -> None:
        """
        An async generator's items go out as it produces them.
        """
        connection = self.connect()
        self.stream(connection, 1, "ticks", 2, window=10)
        self.turn()
        self.assertEqual(connection.received(), [])
        self.waits[0].callback(None)
        self.assertEqual(connection.received(), [[4, 1, 0]])
        self.turn()
        self.waits[1].callback(None)
        self.turn()
        self.assertEqual(connection.received(), [[4, 1, 1], [1, 1, None, None]])
        self.assertEqual(self.closed, ["ticks"])

    def test_asyncCancelRunsFinally(self) -> None:
        """
        Cancelling an async generator waiting on a Deferred cancels that
        Deferred and runs its C{finally}.
        """
        connection = self.connect()
        self.stream(connection, 1, "ticks", 5, window=10)
        self.turn()
        connection.send([3, "cancel", 1])
        self.assertTrue(self.waits[0].called)
        self.assertEqual(self.closed, ["ticks"])
        self.assertError(connection.received(), 1, "Cancelled")

    def test_plainRequestForStream(self) -> None:
        """
        A plain request for a streaming method is refused with
        C{InvalidRequest}; its generator never runs.
        """
        connection = self.connect()
        self.assertError(connection.call(1, "count", 3), 1, "InvalidRequest")
        self.assertEqual(connection.call(2, "count", 3)[0][2]["type"], "InvalidRequest")
        self.assertEqual(self.pulled, [])

    def test_streamRequestForPlain(self) -> None:
        """
        A stream request for a method that does not stream is refused with
        C{InvalidRequest}, whatever it returned.
        """
        connection = self.connect()
        for msgid, method, args in ((1, "echo", [1]), (2, "later", ["a"])):
            connection.send([0, msgid, method, args, {}, {"stream": 4}])
            self.assertError(connection.received(), msgid, "InvalidRequest")
        self.assertTrue(self.pending["a"].called)
        self.assertEqual(connection.protocol.inFlight, 0)

    def test_turnsInterleave(self) -> None:
        """
        Two streams take turns, a batch of items each.
        """
        connection = self.connect()
        window = _streams.BATCH * 2
        self.stream(connection, 1, "count", window, window=window)
        self.stream(connection, 2, "count", window, window=window)
        self.turn()
        order = [m[1] for m in connection.received() if m[0] == 4]
        batch = _streams.BATCH
        self.assertEqual(order, [1] * batch + [2] * batch + [1] * batch + [2] * batch)

    def test_sendBufferPausesStreams(self) -> None:
        """
        While the transport's send buffer is full no item is pulled; when it
        drains the stream goes on.
        """
        connection = self.connect()
        connection.protocol.pauseProducing()
        self.stream(connection, 1, "forever", "f", window=3)
        self.turn()
        self.assertEqual(connection.received(), [])
        connection.protocol.resumeProducing()
        self.turn()
        self.assertEqual(len(connection.received()), 3)

    def test_keepaliveWaitsForStream(self) -> None:
        """
        An open stream is outstanding: the keepalive does not run.
        """
        connection = self.connect()
        self.stream(connection, 1, "forever", "f", window=1)
        self.turn()
        self.reactor.advance(KEEPALIVE * 3)
        self.assertEqual(connection.received(), [[4, 1, 0]])

    def test_goawayLetsStreamFinish(self) -> None:
        """
        After a goaway an open stream runs to its end; then the server
        half-closes.
        """
        connection = self.connect()
        self.stream(connection, 1, "count", 3, window=1)
        self.turn()
        self.factory.shutdown(100)
        self.assertEqual(
            connection.received(), [[4, 1, 0], [3, "goaway", 1, "shutdown"]]
        )
        connection.send([3, "credit", 1, 5])
        self.turn()
        self.assertEqual(
            connection.received(), [[4, 1, 1], [4, 1, 2], [1, 1, None, "done"]]
        )
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])

    def test_metrics(self) -> None:
        """
        The metrics count each item sent by method, the streams open, and a
        stream's outcome as its call's.
        """
        metrics = ServerMetrics()
        connection = self.connect(observers=[metrics])
        self.stream(connection, 1, "forever", "f", window=3)
        self.stream(connection, 2, "count", 2, window=5)
        self.assertEqual(metrics.openStreams(), 2)
        self.turn()
        self.assertEqual(metrics.streamItems, {"forever": 3, "count": 2})
        self.assertEqual(metrics.openStreams(), 1)
        connection.send([3, "cancel", 1])
        self.assertEqual(metrics.openStreams(), 0)
        self.assertEqual(
            metrics.calls, {("count", "ok"): 1, ("forever", "Cancelled"): 1}
        )
        text = exposition(metrics)
        self.assertIn("agilerpc_server_streams_open 0.0", text)
        self.assertIn('agilerpc_server_stream_items_total{method="forever"} 3.0', text)

    def test_pushedItems(self) -> None:
        """
        A handler that returns a L{Stream} writes items to it; they go out
        as credit allows, and L{Stream.finish}'s result ends the call.
        """
        connection = self.connect()
        self.stream(connection, 1, "pushed", window=10)
        stream = self.streams[0]
        stream.write("a")
        self.turn()
        stream.write("b")
        stream.finish({"rows": 2})
        self.turn()
        self.assertEqual(
            connection.received(),
            [[4, 1, "a"], [4, 1, "b"], [1, 1, None, {"rows": 2}]],
        )

    def test_pushedProducerPaused(self) -> None:
        """
        The producer is paused while the stream holds its high-water mark of
        items it cannot send (no credit), and resumed once they have gone.
        """
        connection = self.connect()
        self.stream(connection, 1, "pushed", window=1)
        stream, producer = self.streams[0], self.producers[0]
        for item in range(5):
            stream.write(item)
        self.turn()
        self.assertEqual(connection.received(), [[4, 1, 0]])
        self.assertEqual(producer.events, ["pause"])
        connection.send([3, "credit", 1, 10])
        self.turn()
        self.assertEqual([m[2] for m in connection.received()], [1, 2, 3, 4])
        self.assertEqual(producer.events, ["pause", "resume"])

    def test_pushedFailed(self) -> None:
        """
        L{Stream.fail} ends the stream with that error after its items.
        """
        connection = self.connect()
        self.stream(connection, 1, "pushed", window=10)
        stream = self.streams[0]
        stream.write(1)
        stream.fail(RpcError("Broken", "the source broke"))
        self.turn()
        frames = connection.received()
        self.assertEqual(frames[0], [4, 1, 1])
        self.assertError(frames[1:], 1, "Broken", "the source broke")

    def test_pushedCancelled(self) -> None:
        """
        A cancel stops the producer; later writes are dropped.
        """
        connection = self.connect()
        self.stream(connection, 1, "pushed", window=10)
        self.turn()
        connection.send([3, "cancel", 1])
        self.turn()
        stream, producer = self.streams[0], self.producers[0]
        self.assertTrue(stream.cancelled)
        self.assertEqual(producer.events, ["stop"])
        self.assertError(connection.received(), 1, "Cancelled")
        stream.write("late")
        stream.finish()
        self.turn()
        self.assertEqual(connection.received(), [])

    def test_streamOnlyPushProducers(self) -> None:
        """
        A L{Stream} takes push producers only.
        """
        self.assertRaises(
            ValueError, Stream().registerProducer, RecordingProducer(), False
        )
        self.assertRaises(ValueError, Stream, highWater=0)

    def test_sameFrameBytes(self) -> None:
        """
        The stream request of PROTOCOL.md's V31 is accepted as it is.
        """
        connection = self.connect()
        connection.sendBytes(encode([0, 12, "count", [1], {}, {"stream": 64}]))
        self.turn()
        self.assertEqual(connection.received(), [[4, 12, 0], [1, 12, None, "done"]])


class ClientStreamTests(SynchronousTestCase):
    """
    L{RpcClient.callStream} against a server in memory.
    """

    def setUp(self) -> None:
        self.closed: list[str] = []
        registry = Registry()

        def count(n: int) -> Generator[int, None, str]:
            yield from range(n)
            return "done"

        def forever() -> Generator[int, None, None]:
            try:
                i = 0
                while True:
                    yield i
                    i += 1
            finally:
                self.closed.append("forever")

        def failing() -> Generator[int, None, None]:
            yield 1
            raise RpcError("Boom", "after one item")

        def closedInCall() -> Generator[int, None, None]:
            try:
                yield from range(100)
            finally:
                self.closed.append(currentCall().method)

        for f in (count, forever, failing, closedInCall):
            registry.register(f)
        registry.register(lambda: 1, name="plain")
        self.server = MemoryServer(registry)
        # A buffer of four small items keeps the window at 4.
        self.client = RpcClient(
            self.server.reactor, "server", 9988, streamWindow=4, streamBuffer=16
        )

    def pump(self) -> None:
        for _ in range(50):
            self.server.reactor.advance(0)
            self.server.flush()

    def take(self, stream: RpcStream, count: int) -> list[Any]:
        items = []
        for _ in range(count):
            d = stream.next()
            self.pump()
            items.append(self.successResultOf(d))
        return items

    def test_itemsThenEnd(self) -> None:
        """
        The items come in order; after the last, L{RpcStream.next} fails
        with L{StopAsyncIteration} and the result is the handler's.
        """
        stream = self.client.callStream("count", 10)
        self.assertEqual(self.take(stream, 10), list(range(10)))
        d = stream.next()
        self.pump()
        self.failureResultOf(d, StopAsyncIteration)
        self.assertEqual(stream.result, "done")

    def test_asyncFor(self) -> None:
        """
        An L{RpcStream} is an async iterator.
        """
        stream = self.client.callStream("count", 6)

        async def collect() -> list[int]:
            return [item async for item in stream]

        d = Deferred.fromCoroutine(collect())
        self.pump()
        self.assertEqual(self.successResultOf(d), list(range(6)))

    def test_windowBoundsServer(self) -> None:
        """
        A consumer that takes nothing holds the server at the window.
        """
        stream = self.client.callStream("forever")
        self.pump()
        self.assertEqual(len(stream._items), 4)
        self.take(stream, 3)
        self.pump()
        self.assertLessEqual(len(stream._items), 4)

    def test_cancel(self) -> None:
        """
        Cancelling a stream closes the handler's generator; its next fails
        with L{CancelledError}.
        """
        stream = self.client.callStream("forever")
        self.take(stream, 2)
        stream.cancel()
        self.pump()
        self.assertEqual(self.closed, ["forever"])
        self.failureResultOf(stream.next(), CancelledError)

    def test_cancelClosesInTheCall(self) -> None:
        """
        A cancelled stream's generator is closed in its call's context, as
        its items were made: its C{finally} blocks see L{currentCall}.
        """
        stream = self.client.callStream("closedInCall")
        self.take(stream, 2)
        stream.cancel()
        self.pump()
        self.assertEqual(self.closed, ["closedInCall"])

    def test_cancelWhileWaiting(self) -> None:
        """
        Cancelling a stream still queued fails the consumer's waiting next
        with L{CancelledError}; nothing ran.
        """
        stream = self.client.callStream("forever")
        d = stream.next()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.pump()
        self.assertEqual(self.closed, [])
        self.assertEqual(self.client.pending, 0)

    def test_errorAfterItems(self) -> None:
        """
        An error after items reaches the consumer after them.
        """
        stream = self.client.callStream("failing")
        self.pump()
        self.assertEqual(self.take(stream, 1), [1])
        failure = self.failureResultOf(stream.next(), RemoteError)
        self.assertEqual(failure.value.type, "Boom")

    def test_lostMidStream(self) -> None:
        """
        A connection lost in the middle of a stream fails it with
        L{CallLost} after the items received; it is not resent.
        """
        stream = self.client.callStream("forever")
        self.pump()
        self.server.drop()
        self.pump()
        self.assertEqual(self.take(stream, 4), [0, 1, 2, 3])
        self.failureResultOf(stream.next(), CallLost)

    def test_queuedUntilConnected(self) -> None:
        """
        A stream made before the connection is ready goes out once it is.
        """
        stream = self.client.callStream("count", 2)
        d = stream.next()
        self.pump()
        self.assertEqual(self.successResultOf(d), 0)

    def test_consume(self) -> None:
        """
        L{RpcStream.consume} hands each item to a function as it comes, and
        fires with the result.
        """
        got: list[int] = []
        d = self.client.callStream("count", 10).consume(got.append)
        self.pump()
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(got, list(range(10)))

    def test_consumePaused(self) -> None:
        """
        A paused consumer gets nothing, and the server stops at the window;
        resumed, it gets the rest.
        """
        got: list[int] = []
        stream = self.client.callStream("count", 20)
        stream.pauseProducing()
        d = stream.consume(got.append)
        self.pump()
        self.assertEqual(got, [])
        self.assertEqual(len(stream._items), 4)
        stream.resumeProducing()
        self.pump()
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(got, list(range(20)))

    def test_consumerRaises(self) -> None:
        """
        A consumer that raises cancels the stream (its generator closes) and
        fails the Deferred with its exception.
        """

        def consumer(item: int) -> None:
            if item == 2:
                raise KeyError(item)

        d = self.client.callStream("forever").consume(consumer)
        self.pump()
        self.failureResultOf(d, KeyError)
        self.assertEqual(self.closed, ["forever"])

    def test_notAStream(self) -> None:
        """
        Streaming a plain method fails with C{InvalidRequest}.
        """
        stream = self.client.callStream("plain")
        self.pump()
        self.failureResultOf(stream.next(), InvalidRequest)


class StreamIntegrationTests(SynchronousTestCase):
    """
    Streams against C{twistd agilerpc}, from the blocking client.
    """

    def test_blockingClient(self) -> None:
        """
        The blocking client iterates over a stream's items; the client is
        usable afterwards.
        """
        server = ServerProcess.start(self)
        client = TcpRpcClient("127.0.0.1", server.port, timeout=10)
        self.addCleanup(client.close)
        self.assertEqual(
            list(client.callStream("count", (1000,), window=16)), list(range(1000))
        )
        self.assertEqual(client.call("echo", ("after",)), "after")

    def test_blockingClientClosesEarly(self) -> None:
        """
        Leaving a stream early cancels it; the next call is answered on the
        same connection.
        """
        server = ServerProcess.start(self)
        client = TcpRpcClient("127.0.0.1", server.port, timeout=10)
        self.addCleanup(client.close)
        items = client.callStream("count", (10**6,), window=8)
        self.assertEqual([next(items) for _ in range(20)], list(range(20)))
        items.close()
        self.assertEqual(client.call("echo", ("after",)), "after")
        # Nothing left running: system.stats itself is answered at once.
        stats = client.call("system.stats")
        self.assertEqual((stats["in_flight"], stats["connections"]), (0, 1))

    def test_blockingStreamError(self) -> None:
        """
        A stream's error reaches the blocking caller after its items.
        """
        server = ServerProcess.start(self, module="agilerpc.examples.hello")
        client = TcpRpcClient("127.0.0.1", server.port, timeout=10)
        self.addCleanup(client.close)
        self.assertEqual(list(client.callStream("ticks", (3, 0))), [0, 1, 2])
        with self.assertRaises(InvalidParams):
            list(client.callStream("ticks", (-1, 0)))


class _CountingServer:
    """
    A scripted server (for L{clienthelpers.MemoryServer}) that streams
    C{count(n)} with credit, and echoes plain requests.

    @ivar sent: the items sent, by msgid.
    @ivar cancelled: the msgids cancelled.
    """

    def __init__(self) -> None:
        self.streams: dict[int, list[int]] = {}
        self.sent: dict[int, int] = {}
        self.cancelled: list[int] = []
        self.credits: list[int] = []

    def opened(self, sock: MemorySocket) -> None:
        info: dict[str, Any] = {"protocol": 1, "keepalive": 75, "features": ["stream"]}
        sock.send_([3, "hello", info])

    def script(self, sock: MemorySocket, message: Any) -> None:
        if message[0] == 0 and len(message) == 6:
            msgid, n = message[1], message[3][0]
            # [next item, last item, credit]
            self.streams[msgid] = [0, n, message[5]["stream"]]
            self.sent[msgid] = 0
            self._push(sock, msgid)
        elif message[0] == 0:
            sock.send_([1, message[1], None, message[3][0]])
        elif message[:2] == [3, "credit"]:
            self.credits.append(message[3])
            if message[2] in self.streams:
                self.streams[message[2]][2] += message[3]
                self._push(sock, message[2])
        elif message[:2] == [3, "cancel"]:
            self.cancelled.append(message[2])
            if self.streams.pop(message[2], None) is not None:
                sock.send_([1, message[2], {"type": "Cancelled", "message": ""}, None])

    def _push(self, sock: MemorySocket, msgid: int) -> None:
        state = self.streams.get(msgid)
        if state is None:
            return
        while state[2] and state[0] < state[1]:
            sock.send_([4, msgid, state[0]])
            self.sent[msgid] += 1
            state[0] += 1
            state[2] -= 1
        if state[0] == state[1]:
            del self.streams[msgid]
            sock.send_([1, msgid, None, "end"])


class BlockingStreamTests(SynchronousTestCase):
    """
    L{TcpRpcClient.callStream} against a scripted server.
    """

    def setUp(self) -> None:
        self.server = _CountingServer()
        self.memory = ScriptedServer(self.server.opened, self.server.script)
        self.client = TcpRpcClient(
            "memory.invalid",
            9988,
            timeout=5,
            socketFactory=self.memory,
            streamBuffer=16,
        )
        self.addCleanup(self.client.close)

    def test_items(self) -> None:
        """
        Every item comes, in order, granted half a window at a time.
        """
        self.assertEqual(
            list(self.client.callStream("count", (10,), window=4)), list(range(10))
        )
        credits = [
            m for m in self.memory.connections[0].received if m[:2] == [3, "credit"]
        ]
        self.assertEqual([m[3] for m in credits], [2, 2, 2, 2])

    def test_closedEarly(self) -> None:
        """
        Closing the generator early cancels the stream; the next call is
        answered on the same connection.
        """
        items = self.client.callStream("count", (100,), window=4)
        self.assertEqual([next(items), next(items)], [0, 1])
        items.close()
        self.assertEqual(self.server.cancelled, [0])
        self.assertEqual(self.client.call("echo", ("x",)), "x")
        self.assertEqual(len(self.memory.connections), 1)

    def test_badWindow(self) -> None:
        """
        A window outside 1 to 2**32 - 1 is refused before anything is sent.
        """
        self.assertRaises(ValueError, self.client.callStream, "count", (1,), window=0)
        self.assertEqual(self.memory.connections, [])

    def test_lostMidStream(self) -> None:
        """
        A connection that ends in the middle of a stream raises L{CallLost}
        after the items received.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            if len(message) == 6:
                sock.send_([4, message[1], "a"])
                sock.end()

        memory = ScriptedServer(self.server.opened, script)
        client = TcpRpcClient("memory.invalid", 9988, timeout=5, socketFactory=memory)
        self.addCleanup(client.close)
        items = client.callStream("count", (3,))
        self.assertEqual(next(items), "a")
        self.assertRaises(CallLost, next, items)

    def test_notAnnounced(self) -> None:
        """
        A server whose hello does not list streams is not asked for one.
        """
        memory = ScriptedServer()
        client = TcpRpcClient("memory.invalid", 9988, timeout=5, socketFactory=memory)
        self.addCleanup(client.close)
        with self.assertRaises(StreamsNotSupported):
            list(client.callStream("count", (3,)))
        self.assertEqual(client.call("echo", ("x",)), "x")


class CommandLineStreamTests(SynchronousTestCase):
    """
    C{agilerpc call --stream} against C{twistd agilerpc}.
    """

    def test_blockingTimeoutCancels(self) -> None:
        """
        An item that takes longer than the blocking client's timeout raises
        L{CallTimeout} and cancels the stream; the client goes on.
        """
        server = ServerProcess.start(self)
        client = TcpRpcClient("127.0.0.1", server.port, timeout=0.3)
        self.addCleanup(client.close)
        items = client.callStream("slowCount", (5, 2.0))
        self.assertRaises(CallTimeout, next, items)
        self.assertEqual(client.call("echo", ("after",)), "after")

    def test_commandLine(self) -> None:
        """
        C{agilerpc call --stream} prints one JSON line per item.
        """
        server = ServerProcess.start(self, module="agilerpc.examples.hello")
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = _cli.main(
                ["call", "--stream", f"127.0.0.1:{server.port}", "ticks", "3", "0.01"]
            )
        self.assertEqual((status, out.getvalue(), err.getvalue()), (0, "0\n1\n2\n", ""))


class StreamProofTests(TestCase):
    """
    Issue 14's proofs against C{twistd agilerpc}, with the Twisted client;
    full size under C{AGILERPC_STRESS=1}.
    """

    def client(self, server: ServerProcess, **options: Any) -> RpcClient:
        from twisted.internet import reactor

        client = RpcClient(reactor, "127.0.0.1", server.port, **options)
        self.addCleanup(client.close)
        return client

    async def test_millionItems(self) -> None:
        """
        A long stream consumed at full speed arrives whole and in order.
        """
        n = scale(50_000, 1_000_000)
        server = ServerProcess.start(self)
        client = self.client(server)
        started = time.monotonic()
        expected = 0
        async for item in client.callStream("count", n):
            self.assertEqual(item, expected)
            expected += 1
        took = time.monotonic() - started
        self.assertEqual(expected, n)
        print(f"{n} items in {took:.2f}s: {n / took:,.0f} items/s")

    async def test_pausingConsumerHoldsServerAtWindow(self) -> None:
        """
        A consumer that pauses now and then holds the server's memory at its
        window: the RSS stays within a few MiB of where it started.
        """
        n = scale(30_000, 1_000_000)
        every = scale(10_000, 100_000)
        pause = scale(1, 5)
        server = ServerProcess.start(self)
        client = self.client(server)
        stream = client.callStream("blobs", n, 1000)
        start = None
        peaks = []
        taken = 0
        async for _ in stream:
            taken += 1
            if taken == 1000:
                start = rssKiB(server.pid)
            if taken % every == 0:
                await deferLater(_reactor(), pause, lambda: None)
                peaks.append(rssKiB(server.pid))
        assert start is not None
        self.assertEqual(taken, n)
        print(f"RSS at item 1000: {start} KiB; during each pause: {peaks}")
        self.assertLess(max(peaks) - start, 4096)

    async def test_hundredStreamsInterleave(self) -> None:
        """
        100 streams on one connection progress together: when the first
        ends, every other has received most of its items.  (A small stream
        buffer keeps each window at about 200 of these items, so that every
        stream needs credit ten times.)
        """
        server = ServerProcess.start(self)
        client = self.client(server, streamBuffer=1024)
        n = 2000
        progress = [0] * 100
        firstDone: list[list[int]] = []

        async def consume(index: int) -> None:
            async for _ in client.callStream("count", n):
                progress[index] += 1
            if not firstDone:
                firstDone.append(list(progress))

        await gatherResults([Deferred.fromCoroutine(consume(i)) for i in range(100)])
        self.assertEqual(progress, [n] * 100)
        snapshot = firstDone[0]
        print(f"when the first stream ended, the slowest had {min(snapshot)} of {n}")
        self.assertGreater(min(snapshot), n // 2)

    async def test_cancelledStreamCloses(self) -> None:
        """
        A stream cancelled after 10 items leaves no generator running.
        """
        server = ServerProcess.start(self)
        client = self.client(server)
        stream = client.callStream("forever")
        items = [await stream.next() for _ in range(10)]
        self.assertEqual(items, list(range(10)))
        self.assertEqual(await client.callRemote("openStreams"), 1)
        stream.cancel()
        for _ in range(100):
            if await client.callRemote("openStreams") == 0:
                break
            await deferLater(_reactor(), 0.01, lambda: None)
        self.assertEqual(await client.callRemote("openStreams"), 0)

    async def test_sigtermLetsStreamsFinish(self) -> None:
        """
        On SIGTERM, open streams run to their end within the shutdown grace:
        none is cut, none is resent.
        """
        server = ServerProcess.start(self)
        client = self.client(server)
        streams = [client.callStream("slowCount", 10, 0.1) for _ in range(5)]
        first = [await s.next() for s in streams]
        self.assertEqual(first, [0] * 5)
        os.kill(server.pid, signal.SIGTERM)
        rest = []
        for s in streams:
            rest.append([item async for item in s])
        self.assertEqual(rest, [list(range(1, 10))] * 5)
        self.assertEqual(client.stats.resent, 0)
        # twistd kills itself with the signal once it has shut down cleanly.
        self.assertEqual(server.wait(10), -signal.SIGTERM)
        self.assertIn("Server Shut Down.", server.output())


@implementer(IPushProducer)
class RecordingProducer:
    """
    An L{IPushProducer} that records what it is told.
    """

    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


def exposition(metrics: ServerMetrics) -> str:
    """
    The Prometheus text of C{metrics}.
    """
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(ServerCollector(metrics))
    return generate_latest(registry).decode("utf-8")


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class RpcStreamUnitTests(SynchronousTestCase):
    """
    L{RpcStream} alone, fed by hand as the connection would.
    """

    def setUp(self) -> None:
        self.taken = 0
        self.cancels = 0
        self.stream = RpcStream("m", self._take, self._cancel)

    def _take(self) -> None:
        self.taken += 1

    def _cancel(self) -> None:
        self.cancels += 1
        self.stream.failed(Failure(CancelledError()))

    def test_repr(self) -> None:
        """
        The repr says the method, whether it ended and what waits.
        """
        self.stream.itemReceived(1)
        self.assertEqual(repr(self.stream), "<RpcStream m open, 1 items waiting>")

    def test_oneNextAtATime(self) -> None:
        """
        A second L{RpcStream.next} while one waits, or any while the stream
        is consumed, is a programming error; so is consuming twice.
        """
        self.stream.next()
        self.assertRaises(RuntimeError, self.stream.next)
        self.assertRaises(RuntimeError, self.stream.consume, print)
        other = RpcStream("m", self._take, self._cancel)
        other.consume(lambda item: None)
        self.assertRaises(RuntimeError, other.next)
        self.assertRaises(RuntimeError, other.consume, print)

    def test_consumeAfterEnd(self) -> None:
        """
        Consuming a stream that has ended hands over what came, then fires
        with the result.
        """
        self.stream.itemReceived("a")
        self.stream.endReceived("r")
        got: list[str] = []
        d = self.stream.consume(got.append)
        self.assertEqual((got, self.successResultOf(d)), (["a"], "r"))
        self.assertEqual(self.taken, 1)

    def test_stopProducingCancels(self) -> None:
        """
        As an L{IPushProducer}, stopping it cancels the stream, once.
        """
        d = self.stream.consume(lambda item: None)
        self.stream.stopProducing()
        self.stream.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.cancels, 1)

    def test_consumerRaisesOnBufferedItem(self) -> None:
        """
        A consumer raising on an item that was waiting cancels the stream
        and fails the Deferred with its exception.
        """
        self.stream.itemReceived(1)

        def consumer(item: int) -> None:
            raise ValueError(item)

        d = self.stream.consume(consumer)
        self.failureResultOf(d, ValueError)
        self.assertEqual(self.cancels, 1)


class PushStreamUnitTests(SynchronousTestCase):
    """
    L{Stream} alone: its producer, its async iteration, its end.
    """

    def test_oneProducer(self) -> None:
        """
        A second producer is refused; one registered after a cancel is
        stopped at once; one registered when the stream is full is paused.
        """
        stream = Stream(highWater=1)
        stream.registerProducer(RecordingProducer(), True)
        self.assertRaises(
            RuntimeError, stream.registerProducer, RecordingProducer(), True
        )
        stream.unregisterProducer()
        stream.write(1)
        late = RecordingProducer()
        stream.registerProducer(late, True)
        self.assertEqual(late.events, ["pause"])
        cancelled = Stream()
        Deferred.fromCoroutine(cancelled.aclose())
        producer = RecordingProducer()
        cancelled.registerProducer(producer, True)
        self.assertEqual(producer.events, ["stop"])

    def test_asyncIteration(self) -> None:
        """
        Iterated, a L{Stream} gives what was written, waits for what is not
        yet, and ends with L{StopAsyncIteration} after L{Stream.finish} (or
        the error given to L{Stream.fail}).
        """
        stream = Stream()
        self.assertIs(stream.__aiter__(), stream)
        stream.write(1)
        self.assertEqual(self.successResultOf(stream.__anext__()), 1)
        waiting = stream.__anext__()
        stream.write(2)
        self.assertEqual(self.successResultOf(waiting), 2)
        waiting = stream.__anext__()
        stream.finish("r")
        self.failureResultOf(waiting, StopAsyncIteration)
        self.failureResultOf(stream.__anext__(), StopAsyncIteration)
        stream.fail(ValueError("late"))
        failed = Stream()
        failed.fail(ValueError("x"))
        self.failureResultOf(failed.__anext__(), ValueError)

    def test_cancelWaiting(self) -> None:
        """
        Cancelling a waiting L{Stream.__anext__} forgets it: a later write
        is kept for the next one.
        """
        stream = Stream()
        waiting = stream.__anext__()
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        stream.write(1)
        self.assertEqual(self.successResultOf(stream.__anext__()), 1)

    def test_closeGeneratorThatRaises(self) -> None:
        """
        A generator whose C{finally} raises is closed all the same, and the
        error logged.
        """

        def stubborn() -> Generator[int, None, None]:
            try:
                yield 1
            finally:
                raise KeyError("in finally")

        source = stubborn()
        next(source)
        self.assertIsNone(_streams.closeStream(source))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
