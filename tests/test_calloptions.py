"""
Tests for the clients' side of per-call context: L{CallOptions},
L{RpcClient.withCallOptions} and L{TcpRpcClient.call}'s options, sending a
deadline and metadata as the server's hello allows, and the command line's
C{--metadata}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import (
    CallOptions,
    CallTimeout,
    DeadlineExceeded,
    FeatureNotSupported,
    MetadataTooLarge,
    Registry,
    RpcClient,
    TcpRpcClient,
    currentCall,
)
from agilerpc._calloptions import parseMetadataPair
from agilerpc._clientconnection import ClientConnection
from agilerpc.testing import MemoryServer

from .clienthelpers import HELLO, MemorySocket, RecordingEvents
from .clienthelpers import MemoryServer as ScriptedServer
from .serverhelpers import LogCollector


class CallOptionsTests(SynchronousTestCase):
    """
    L{CallOptions} checks its options once, for every client.
    """

    def test_valid(self) -> None:
        """
        A timeout, metadata and idempotent are kept (the timeout as a
        float, the metadata as a dict of its own).
        """
        metadata = {"a": "b"}
        options = CallOptions(2, metadata, True)
        self.assertEqual(options.timeout, 2.0)
        self.assertEqual(options.metadata, {"a": "b"})
        self.assertIsNot(options.metadata, metadata)
        self.assertTrue(options.idempotent)

    def test_invalidTimeouts(self) -> None:
        """
        A timeout must be a number of seconds above 0, at most a year.
        """
        for timeout in (0, -1, float("nan"), float("inf"), "1", True, 10**9):
            self.assertRaises(ValueError, CallOptions, timeout)

    def test_invalidMetadata(self) -> None:
        """
        Metadata must map str keys to str or bytes values.
        """
        for metadata in ({1: "a"}, {"a": 1}, {"a": None}, {"\udc80": "x"}):
            self.assertRaises(ValueError, CallOptions, None, metadata)

    def test_invalidIdempotent(self) -> None:
        """
        idempotent is True, False or None.
        """
        self.assertRaises(TypeError, CallOptions, None, None, 1)

    def test_emptyMetadataIsNone(self) -> None:
        """
        Empty metadata is no metadata.
        """
        self.assertIsNone(CallOptions(metadata={}).metadata)

    def test_merged(self) -> None:
        """
        Options merged on top of others win where they are set; their
        metadata is added to the others'.
        """
        base = CallOptions(1, {"a": "1", "b": "1"}, True)
        merged = base.merged(CallOptions(None, {"b": "2"}))
        self.assertEqual(merged.timeout, 1.0)
        self.assertEqual(merged.metadata, {"a": "1", "b": "2"})
        self.assertTrue(merged.idempotent)
        self.assertEqual(base.merged(CallOptions(3, None, False)).timeout, 3.0)
        self.assertIn("timeout=1.0", repr(base))

    def test_parseMetadataPair(self) -> None:
        """
        The command line's C{KEY=VALUE} keeps everything after the first
        C{=}; no C{=} or an empty key is an error.
        """
        self.assertEqual(parseMetadataPair("a=b=c"), ("a", "b=c"))
        self.assertEqual(parseMetadataPair("a="), ("a", ""))
        self.assertRaises(ValueError, parseMetadataPair, "a")
        self.assertRaises(ValueError, parseMetadataPair, "=b")


class CoreOptionsTests(SynchronousTestCase):
    """
    L{ClientConnection.options}: what a call's options map holds, by what
    the server's hello says.
    """

    def core(self, **hello: Any) -> ClientConnection:
        core = ClientConnection(RecordingEvents())
        info = {"protocol": 1, "keepalive": 75, "max_message_size": 1 << 20}
        info.update(hello)
        core.dataReceived(_frame([3, "hello", info]))
        return core

    def test_everything(self) -> None:
        """
        To a server with both features, the deadline and the metadata go.
        """
        core = self.core(features=["deadline", "metadata"])
        self.assertEqual(
            core.options("m", 1.5, {"a": "b"}),
            {"deadline": 1.5, "metadata": {"a": "b"}},
        )

    def test_nothing(self) -> None:
        """
        Without options, there is no options map.
        """
        self.assertIsNone(self.core(features=["deadline"]).options("m"))

    def test_deadlineOnlyWhereAnnounced(self) -> None:
        """
        A server that does not list C{deadline} gets none (the client still
        keeps its own).
        """
        self.assertIsNone(self.core().options("m", 1.5))
        self.assertIsNone(self.core(features=["stream"]).options("m", 1.5))

    def test_shortestDeadline(self) -> None:
        """
        A deadline (about) used up when the call goes is sent as 1 ms, never
        as 0 or less, which the server would refuse.
        """
        core = self.core(features=["deadline"])
        self.assertEqual(core.options("m", -3), {"deadline": 0.001})

    def test_metadataNotSupported(self) -> None:
        """
        Metadata for a server that does not list C{metadata} fails the call
        locally, saying so.
        """
        core = self.core(features=["deadline"])
        e = self.assertRaises(FeatureNotSupported, core.options, "m", None, {"a": "b"})
        self.assertIn("m(): the server does not announce metadata", str(e))

    def test_optionalMetadataDropped(self) -> None:
        """
        Optional metadata (a trace context) is left off for a server that
        takes none, and merged under the call's own where it does.
        """
        self.assertIsNone(self.core().options("m", None, None, {"t": "1"}))
        core = self.core(features=["metadata"])
        self.assertEqual(
            core.options("m", None, {"a": "1", "t": "2"}, {"t": "1", "u": "1"}),
            {"metadata": {"t": "2", "u": "1", "a": "1"}},
        )

    def test_metadataLimit(self) -> None:
        """
        Metadata over the hello's C{max_metadata_size} fails locally with
        L{MetadataTooLarge}; at the limit it goes.
        """
        core = self.core(features=["metadata"], max_metadata_size=4)
        self.assertEqual(
            core.options("m", None, {"ab": "cd"}), {"metadata": {"ab": "cd"}}
        )
        e = self.assertRaises(MetadataTooLarge, core.options, "m", None, {"ab": "cde"})
        self.assertIn("5 bytes", str(e))

    def test_defaultLimit(self) -> None:
        """
        A hello without C{max_metadata_size} leaves the protocol's default,
        8192 bytes.
        """
        core = self.core(features=["metadata"])
        core.options("m", None, {"k": "x" * 8191})
        self.assertRaises(MetadataTooLarge, core.options, "m", None, {"k": "x" * 8192})


def pump(server: MemoryServer) -> None:
    """
    Run the server's stream pump and move the bytes, until both are idle.
    """
    for _ in range(20):
        server.reactor.advance(0)
        server.flush()


def _frame(message: Any) -> bytes:
    from agilerpc import _wire

    return _wire.frame(_wire.pack(message))


class TwistedClientTests(SynchronousTestCase):
    """
    L{RpcClient.withCallOptions} against a server in memory.
    """

    def setUp(self) -> None:
        self.seen: list[Any] = []
        self.waiting: dict[str, Deferred[Any]] = {}
        registry = Registry()

        def context() -> list[Any]:
            call = currentCall()
            self.seen.append(call)
            return [dict(call.metadata), call.deadline]

        def wait(key: str) -> Deferred[Any]:
            self.seen.append(currentCall())
            d: Deferred[Any] = Deferred()
            self.waiting[key] = d
            return d

        def items(n: int) -> Any:
            call = currentCall()
            for i in range(n):
                yield [i, dict(call.metadata)]

        def told() -> None:
            self.seen.append(currentCall())

        for f in (context, wait, items, told):
            registry.register(f)
        self.server = MemoryServer(registry, keepalive=100)
        self.client = RpcClient(self.server.reactor, "server", 9988)

    def test_metadataAndDeadline(self) -> None:
        """
        A call through C{withCallOptions} carries its metadata, and the
        time left of its timeout when it is sent: the client waited half a
        second for its connection here.
        """
        caller = self.client.withCallOptions(timeout=2, metadata={"tenant": "a"})
        d = caller.callRemote("context")
        self.server.reactor.advance(0.5)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), [{"tenant": "a"}, 1.5])

    def test_keywordArgumentsStayTheMethods(self) -> None:
        """
        C{callRemote}'s keyword arguments go to the method, even one named
        C{timeout}.
        """
        registry = Registry()
        registry.register(lambda timeout: timeout, name="echoTimeout")
        server = MemoryServer(registry)
        client = RpcClient(server.reactor, "server", 9988)
        d = client.withCallOptions(timeout=5).callRemote("echoTimeout", timeout=7)
        server.flush()
        self.assertEqual(self.successResultOf(d), 7)

    def test_defaultTimeoutSent(self) -> None:
        """
        The client's own C{timeout} is sent as every call's deadline.
        """
        client = RpcClient(self.server.reactor, "server", 9988, timeout=3)
        d = client.callRemote("context")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), [{}, 3.0])

    def test_withoutOptionsNothingSent(self) -> None:
        """
        A plain call sends no options: the handler sees no deadline and no
        metadata.
        """
        d = self.client.callRemote("context")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), [{}, None])

    def test_timeoutEndsTheCallOnBothSides(self) -> None:
        """
        When the timeout runs out the caller gets L{CallTimeout} and the
        server cancels the handler (by its deadline, or the cancel the
        client sends, whichever comes first).
        """
        d = self.client.withCallOptions(timeout=1).callRemote("wait", "a")
        self.server.flush()
        self.server.reactor.advance(1)
        self.server.flush()
        self.failureResultOf(d, CallTimeout)
        self.assertTrue(self.waiting["a"].called)

    def test_layeredCallers(self) -> None:
        """
        A caller's C{withCallOptions} adds to its options.
        """
        caller = self.client.withCallOptions(metadata={"a": "1"}).withCallOptions(
            timeout=4, metadata={"b": "2"}
        )
        d = caller.callRemote("context")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), [{"a": "1", "b": "2"}, 4.0])
        self.assertIn("RpcCaller", repr(caller))

    def test_notify(self) -> None:
        """
        A caller's notification carries its metadata.
        """
        self.client.withCallOptions(metadata={"n": "1"}).notify("told")
        self.server.flush()
        [call] = self.seen
        self.assertEqual(dict(call.metadata), {"n": "1"})

    def test_stream(self) -> None:
        """
        A caller's stream carries its metadata; its timeout is the whole
        stream's, sent as its deadline.
        """
        stream = self.client.withCallOptions(timeout=9, metadata={"s": "x"}).callStream(
            "items", 2
        )
        got: list[Any] = []
        d = stream.consume(got.append)
        pump(self.server)
        self.successResultOf(d)
        self.assertEqual(got, [[0, {"s": "x"}], [1, {"s": "x"}]])

    def test_streamTimeout(self) -> None:
        """
        A stream made with a timeout fails with L{CallTimeout} when it runs
        out.
        """
        registry = Registry()

        async def slow() -> Any:
            yield 1
            await Deferred()

        registry.register(slow)
        server = MemoryServer(registry)
        client = RpcClient(server.reactor, "server", 9988)
        stream = client.withCallOptions(timeout=2).callStream("slow")
        first = stream.next()
        pump(server)
        self.assertEqual(self.successResultOf(first), 1)
        second = stream.next()
        server.reactor.advance(2)
        pump(server)
        self.failureResultOf(second, CallTimeout)

    def test_serverDeadlineExceeded(self) -> None:
        """
        A server's C{--max-call-time} reaches a caller that set no timeout as
        L{DeadlineExceeded}, also a L{TimeoutError}.
        """
        registry = Registry()
        registry.register(lambda: Deferred(), name="never")
        server = MemoryServer(registry, maxCallTime=1)
        client = RpcClient(server.reactor, "server", 9988)
        d = client.callRemote("never")
        server.flush()
        server.reactor.advance(1)
        server.flush()
        failure = self.failureResultOf(d, DeadlineExceeded)
        self.assertIsInstance(failure.value, TimeoutError)

    def test_metadataTooLarge(self) -> None:
        """
        Metadata over the server's limit fails the call locally with
        L{MetadataTooLarge}.
        """
        registry = Registry()
        registry.register(lambda: 1, name="one")
        server = MemoryServer(registry, maxMetadataSize=3)
        client = RpcClient(server.reactor, "server", 9988)
        d = client.withCallOptions(metadata={"ab": "cd"}).callRemote("one")
        server.flush()
        self.failureResultOf(d, MetadataTooLarge)

    def test_invalidOptionsAtOnce(self) -> None:
        """
        Invalid options are refused when the caller is made.
        """
        self.assertRaises(ValueError, self.client.withCallOptions, timeout=-1)
        self.assertRaises(ValueError, self.client.withCallOptions, metadata={"a": 1})


class OldServerTests(SynchronousTestCase):
    """
    A server whose hello lists no features (an agilerpc before them).
    """

    def setUp(self) -> None:
        registry = Registry()
        registry.register(lambda: 1, name="one")
        self.server = MemoryServer(registry)
        self.server.factory.hello = {
            "protocol": 1,
            "keepalive": 75.0,
            "max_message_size": 8 << 20,
        }
        self.client = RpcClient(self.server.reactor, "server", 9988)

    def test_deadlineKeptLocally(self) -> None:
        """
        It gets a 4-element request (no deadline), and the call keeps its
        timeout on the client.
        """
        d = self.client.withCallOptions(timeout=2).callRemote("one")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 1)

    def test_metadataNotSent(self) -> None:
        """
        A call with metadata fails with L{FeatureNotSupported}; the
        connection goes on.
        """
        d = self.client.withCallOptions(metadata={"a": "b"}).callRemote("one")
        self.server.flush()
        self.failureResultOf(d, FeatureNotSupported)
        d = self.client.callRemote("one")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 1)

    def test_notificationNotSent(self) -> None:
        """
        A notification with metadata is not sent, and the log says why.
        """
        events = LogCollector()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        self.client.withCallOptions(metadata={"a": "b"}).notify("one")
        self.server.flush()
        texts = [formatEvent(e) for e in events.events]
        self.assertIn(
            "the notification one was not sent: one(): the "
            "server does not announce metadata; the call was not sent",
            texts,
        )


class BlockingClientTests(SynchronousTestCase):
    """
    L{TcpRpcClient.call} and C{callStream} with a timeout and metadata.
    """

    def client(self, hello: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        info = {
            "protocol": 1,
            "keepalive": 75,
            "max_message_size": 8 << 20,
            "features": ["stream", "deadline", "metadata"],
        }
        if hello is not None:
            info = hello

        def opened(sock: MemorySocket) -> None:
            sock.send_([3, "hello", info])

        def script(sock: MemorySocket, message: Any) -> None:
            if message[0] == 0:
                sock.send_([1, message[1], None, message[5:]])

        server = ScriptedServer(opened, script)
        return server, TcpRpcClient("h", 1, socketFactory=server, **kwargs)

    def test_options(self) -> None:
        """
        C{call(timeout=..., metadata=...)} sends the time left and the
        metadata in the request's options map.
        """
        _server, client = self.client()
        [options] = client.call("m", (), timeout=5, metadata={"k": b"\x01"})
        self.assertEqual(options["metadata"], {"k": b"\x01"})
        self.assertTrue(4 < options["deadline"] <= 5)

    def test_clientTimeout(self) -> None:
        """
        The client's own timeout is sent when the call sets none.
        """
        _server, client = self.client(timeout=3)
        [options] = client.call("m")
        self.assertTrue(2 < options["deadline"] <= 3)

    def test_none(self) -> None:
        """
        Without a timeout or metadata the request has no options map.
        """
        server, client = self.client()
        self.assertEqual(client.call("m"), [])
        self.assertEqual(len(server.connections[0].received[0]), 4)

    def test_oldServer(self) -> None:
        """
        To a server without the features, the deadline is not sent, and
        metadata raises L{FeatureNotSupported} without sending anything.
        """
        hello = HELLO[2]
        assert isinstance(hello, dict)
        server, client = self.client(hello)
        self.assertEqual(client.call("m", (), timeout=5), [])
        self.assertRaises(
            FeatureNotSupported, client.call, "m", (), metadata={"a": "b"}
        )
        self.assertEqual(len(server.connections[0].received), 1)

    def test_streamOptions(self) -> None:
        """
        C{callStream(timeout=..., metadata=...)} sends both with the stream
        request.
        """
        server, client = self.client()
        items = client.callStream("m", (), timeout=5, metadata={"a": "b"})
        self.assertEqual(list(items), [])
        [request] = server.connections[0].received
        self.assertEqual(request[5]["metadata"], {"a": "b"})
        self.assertEqual(request[5]["stream"], 16)
        self.assertTrue(4 < request[5]["deadline"] <= 5)
