"""
Fakes shared by the server's tests: frames built and parsed by hand, a
transport that records how it was closed, a reactor whose thread pool runs
when told, a connection to a server protocol driven byte by byte, and a
memory reactor whose ports record when they stop listening.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from agilerpc import Registry, RpcError, RpcServerFactory

PEER = IPv4Address("TCP", "127.0.0.1", 40000)

KEEPALIVE = 8.0
MAX_SIZE = 1000
LINGER = 2.0


def encode(message: Any) -> bytes:
    """
    One frame holding C{message}, encoded the way the protocol says.
    """
    payload: bytes = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def rawFrame(payload: bytes) -> bytes:
    """
    One frame holding C{payload} as it is.
    """
    return struct.pack(">I", len(payload)) + payload


def parseFrames(data: bytes) -> list[Any]:
    """
    Decode every frame in C{data}, which must hold whole frames only.
    """
    messages = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise AssertionError(f"a partial header: {data[offset:]!r}")
        (length,) = struct.unpack_from(">I", data, offset)
        payload = data[offset + 4 : offset + 4 + length]
        if len(payload) != length:
            raise AssertionError(f"a partial frame: {data[offset:]!r}")
        messages.append(msgpack.unpackb(payload, raw=False, strict_map_key=False))
        offset += 4 + length
    return messages


class RecordingTransport(StringTransport):
    """
    A transport that records how the protocol closes it, and counts writes
    made after the protocol closed it (which would be lost).

    Nothing here calls the protocol back: tests call C{connectionLost}
    themselves when the connection would end.
    """

    def __init__(self) -> None:
        super().__init__()
        self.closes: list[str] = []
        self.noDelay: list[bool] = []
        self.writesAfterClose = 0

    def write(self, data: bytes) -> None:
        if self.closes:
            self.writesAfterClose += 1
        super().write(data)

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay.append(enabled)

    def loseWriteConnection(self) -> None:
        self.closes.append("loseWriteConnection")

    def loseConnection(self) -> None:
        self.closes.append("loseConnection")
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.closes.append("abortConnection")
        self.disconnecting = True
        self.disconnected = True


class BufferingTransport(RecordingTransport):
    """
    A transport with a send buffer that behaves like Twisted's: the write
    that takes what the client has not read past C{bufferSize} pauses the
    producer (inside that write), and L{drain} (the client reads it all)
    resumes it, as Twisted does once its buffer is empty.

    @ivar buffered: bytes written and not drained.
    """

    bufferSize = 64 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0
        self.producerPaused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.buffered += len(data)
        if (
            self.buffered > self.bufferSize
            and self.producer is not None
            and not self.producerPaused
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def drain(self) -> None:
        """
        The client read everything: empty the buffer and resume the producer.
        """
        self.buffered = 0
        if self.producerPaused and self.producer is not None:
            self.producerPaused = False
            self.producer.resumeProducing()


@implementer(ILogObserver)
class LogCollector:
    """
    A log observer that keeps every event.
    """

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)


class FakeThreadPool:
    """
    A thread pool that runs nothing until told to, then runs it in this
    thread, reporting results the way L{twisted.python.threadpool.ThreadPool}
    does.
    """

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[[bool, Any], None], Callable[[], Any]]] = []

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], None],
        func: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.queue.append((onResult, lambda: func(*args, **kwargs)))

    def runAll(self) -> None:
        queue, self.queue = self.queue, []
        for onResult, work in queue:
            try:
                result = work()
            except BaseException:
                onResult(False, Failure())
            else:
                onResult(True, result)


class FakeReactor(Clock):
    """
    A L{Clock} with a L{FakeThreadPool} and a C{callFromThread} that runs at
    once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool = FakeThreadPool()
        self.threadCalls = 0

    def getThreadPool(self) -> FakeThreadPool:
        return self.pool

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.threadCalls += 1
        f(*args, **kw)


class Connection:
    """
    One server connection under test: send messages in, read frames out.

    @ivar hello: the frames the server wrote when the connection was made.
    """

    def __init__(
        self, factory: RpcServerFactory, transport: RecordingTransport | None = None
    ) -> None:
        self.transport = RecordingTransport() if transport is None else transport
        self.protocol = factory.buildProtocol(PEER)
        self.protocol.makeConnection(self.transport)
        self._read = 0
        self.hello = self.received()

    def sendBytes(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def send(self, message: Any) -> None:
        self.sendBytes(encode(message))

    def request(self, msgid: int, method: str, *args: Any, **kwargs: Any) -> None:
        message: list[Any] = [0, msgid, method, list(args)]
        if kwargs:
            message.append(kwargs)
        self.send(message)

    def call(self, msgid: int, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """
        Send a request and return the frames written in response to it.
        """
        self.request(msgid, method, *args, **kwargs)
        return self.received()

    def received(self) -> list[Any]:
        """
        The frames written since the last call.
        """
        data = self.transport.value()
        new, self._read = data[self._read :], len(data)
        return parseFrames(new)

    def clientCloses(self) -> None:
        """
        The client shut down its write side (end of stream).
        """
        self.protocol.readConnectionLost()

    def lost(self) -> None:
        """
        The connection is gone.
        """
        self.protocol.connectionLost(Failure(ConnectionDone()))


class DescriptorTransport(FileDescriptor):
    """
    A reactor's kind of transport (a L{FileDescriptor}) whose socket takes
    everything at once: C{sent} holds each chunk its C{doWrite} sent, and
    its reactor (a L{MemoryReactorClock}) whether it waits to write.  With
    C{failure} set, a send fails with it, as after the peer's reset; its
    C{connectionLost} tells C{protocol}, as a TCP connection's does.
    """

    def __init__(self) -> None:
        self.memoryReactor = MemoryReactorClock()
        FileDescriptor.__init__(self, self.memoryReactor)
        self.connected = 1
        self.sent: list[bytes] = []
        self.failure: BaseException | None = None
        self.protocol: Any = None
        self.lost: list[Failure] = []

    def writeSomeData(self, data: bytes) -> int | BaseException:
        if self.failure is not None:
            return self.failure
        self.sent.append(bytes(data))
        return len(data)

    def connectionLost(self, reason: Failure) -> None:
        FileDescriptor.connectionLost(self, reason)
        self.lost.append(reason)
        if self.protocol is not None:
            self.protocol.connectionLost(reason)

    def waitsToWrite(self) -> bool:
        return self in self.memoryReactor.getWriters()

    def getPeer(self) -> IPv4Address:
        return PEER

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 9988)


class RecordingPort:
    """
    A listening port that records when it stops, and what the connections
    had been sent by then.
    """

    def __init__(self, reactor: ListeningReactor, port: int, interface: str) -> None:
        self.reactor = reactor
        self.address = IPv4Address("TCP", interface or "0.0.0.0", port)

    def getHost(self) -> IPv4Address:
        return self.address

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        self.reactor.events.append("stopListening")


class ListeningReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose ports record L{stopListening}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> RecordingPort:
        self.tcpServers.append((port, factory, backlog, interface))
        return RecordingPort(self, port, interface)


class ServerTestCase(SynchronousTestCase):
    """
    Connections to a server with a set of test handlers.

    @ivar pending: Deferreds returned by the C{later} handler, by key.
    @ivar calls: what the recording handlers were called with.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.pending: dict[str, Deferred[Any]] = {}
        self.calls: list[Any] = []
        self.registry = Registry()
        self._registerHandlers()
        self._factory: RpcServerFactory | None = None

    def _registerHandlers(self) -> None:
        registry = self.registry

        def echo(x: Any) -> Any:
            self.calls.append(x)
            return x

        def add(a: Any, b: Any) -> Any:
            return a + b

        def greet(name: str, greeting: str = "hello") -> str:
            return f"{greeting} {name}"

        def later(key: str) -> Deferred[Any]:
            self.calls.append(key)
            d: Deferred[Any] = Deferred()
            self.pending[key] = d
            return d

        def stubborn(key: str) -> Deferred[Any]:
            # A canceller that wins the race with a result.
            d: Deferred[Any] = Deferred(lambda d: d.callback("won anyway"))
            self.pending[key] = d
            return d

        async def coro(key: str) -> str:
            d: Deferred[Any] = Deferred()
            self.pending[key] = d
            value = await d
            return f"coro {value}"

        async def coroFail() -> None:
            raise KeyError("coroutine failed")

        def threaded(x: int) -> int:
            self.calls.append(("thread", x))
            return x * 2

        def threadFail() -> None:
            raise ZeroDivisionError("in a thread")

        def fail(message: str) -> None:
            raise ValueError(message)

        def custom() -> None:
            raise RpcError("Custom", "msg", {"x": 1})

        def unencodable() -> object:
            return object()

        def blob(n: int) -> bytes:
            return b"x" * n

        def gather() -> Deferred[list[int]]:
            return gatherResults([succeed(1), succeed(2)])

        def fired() -> Deferred[str]:
            return succeed("already")

        handlers: list[Callable[..., Any]] = [echo, add, greet, later, stubborn]
        handlers += [coro, coroFail, fail, custom, unencodable, blob, gather, fired]
        for f in handlers:
            registry.register(f)
        registry.register(threaded, thread=True)
        registry.register(threadFail, thread=True)

    def makeFactory(self, **kwargs: Any) -> RpcServerFactory:
        options: dict[str, Any] = {
            "keepalive": KEEPALIVE,
            "maxMessageSize": MAX_SIZE,
            "lingerTimeout": LINGER,
        }
        options.update(kwargs)
        self._factory = RpcServerFactory(self.registry, self.reactor, **options)
        return self._factory

    @property
    def factory(self) -> RpcServerFactory:
        if self._factory is None:
            return self.makeFactory()
        return self._factory

    def connect(self, **kwargs: Any) -> Connection:
        """
        A new connection; C{kwargs} (if any) configure a new factory.
        """
        factory = self.makeFactory(**kwargs) if kwargs else self.factory
        connection = Connection(factory)
        self.addCleanup(self._checkWrites, connection)
        return connection

    def _checkWrites(self, connection: Connection) -> None:
        self.assertEqual(
            connection.transport.writesAfterClose,
            0,
            "the server wrote after closing the connection",
        )

    def captureLogs(self) -> list[LogEvent]:
        """
        Collect the log events emitted during the test.
        """
        observer = LogCollector()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return observer.events

    def assertError(
        self,
        frames: list[Any],
        msgid: int | None,
        type: str,
        message: str | None = None,
    ) -> dict[str, Any]:
        """
        C{frames} is exactly one error response for C{msgid} of type C{type}
        (with C{message}, if given); return its error map.
        """
        self.assertEqual(len(frames), 1, frames)
        [response] = frames
        self.assertEqual(len(response), 4, response)
        self.assertEqual(response[0], 1, response)
        self.assertEqual(response[1], msgid, response)
        self.assertIsNone(response[3], response)
        error = response[2]
        self.assertIsInstance(error, dict)
        self.assertEqual(error["type"], type, error)
        self.assertIsInstance(error["message"], str)
        if message is not None:
            self.assertEqual(error["message"], message)
        return error  # type: ignore[no-any-return]

    def assertUsable(self, connection: Connection, msgid: int = 99) -> None:
        """
        The connection still answers a valid request.
        """
        self.assertEqual(connection.call(msgid, "add", 40, 2), [[1, msgid, None, 42]])
        self.assertEqual(connection.transport.closes, [])
