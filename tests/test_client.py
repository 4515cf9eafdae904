"""
Tests for L{agilerpc.RpcClient}, deterministic: in-memory connections
(L{agilerpc.testing.MemoryServer}) and a fake clock.
"""

from __future__ import annotations

import builtins
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import (
    CallLost,
    CallTimeout,
    ClientClosed,
    InvalidResponse,
    MessageTooLarge,
    MethodNotFound,
    QueueFull,
    RemoteError,
    RpcClient,
    TLSRefused,
    Unauthorized,
    _wire,
)
from agilerpc._clientconnection import State
from agilerpc.testing import MemoryServer

from .clienthelpers import RETRY_GROWS_FIRST, Handlers, nextRetryWait
from .serverhelpers import DescriptorTransport, encode, parseFrames


class ClientTestMixin:
    """
    A L{MemoryServer} with L{Handlers}, and a client connected to it.
    """

    def setUp(self) -> None:
        self.handlers = Handlers()
        self.server = MemoryServer(
            self.handlers.registry(), keepalive=10, lingerTimeout=2
        )
        self.client = RpcClient(self.server.reactor, "server", 9988)
        self.client.factory.jitter = 0

    def results(self, *ds: Deferred[Any]) -> list[Any]:
        out: list[Any] = []
        for d in ds:
            d.addBoth(out.append)
        return out


class CallTests(ClientTestMixin, SynchronousTestCase):
    def test_callReturnsResult(self) -> None:
        """
        callRemote connects on first use and fires with the result.
        """
        d = self.client.callRemote("add", 2, 3)
        self.assertNoResult(d)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual(self.server.attempts, 1)
        self.assertTrue(self.client.connected)

    def test_keywordArguments(self) -> None:
        """
        Keyword arguments travel as the request's kwargs map.
        """
        d = self.client.callRemote("add", 2, b=40)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 42)

    def test_remoteError(self) -> None:
        """
        An error response fails the Deferred with the matching RemoteError
        subclass.
        """
        d = self.client.callRemote("nope", 1)
        self.server.flush()
        f = self.failureResultOf(d, MethodNotFound)
        self.assertEqual(f.value.type, "MethodNotFound")
        self.assertIsInstance(f.value, RemoteError)

    def test_queuedUntilHello(self) -> None:
        """
        Calls made before the hello are queued and sent in order once it
        arrives, all on one connection.
        """
        ds = [self.client.callRemote("run", i) for i in range(5)]
        self.assertEqual(self.client.queued, 5)
        self.server.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], list(range(5)))
        self.assertEqual(self.handlers.runs, list(range(5)))
        self.assertEqual(self.server.attempts, 1)
        self.assertEqual(self.client.queued, 0)

    def test_outOfOrderResponses(self) -> None:
        """
        Many calls are in flight on one connection, and answers are matched
        by msgid whatever their order.
        """
        ds = {t: self.client.callRemote("wait", t) for t in "abc"}
        self.server.flush()
        self.assertEqual(sorted(self.handlers.waiting), ["a", "b", "c"])
        self.handlers.answer("c")
        self.server.flush()
        self.assertEqual(self.successResultOf(ds["c"]), "c")
        self.assertNoResult(ds["a"])
        self.handlers.answer("a")
        self.handlers.answer("b")
        self.server.flush()
        self.assertEqual(self.successResultOf(ds["a"]), "a")
        self.assertEqual(self.successResultOf(ds["b"]), "b")

    def test_msgidsIncrease(self) -> None:
        """
        Each request on a connection gets the next msgid, from 0.
        """
        self.client.connect()
        self.server.flush()
        for i in range(3):
            self.client.callRemote("run", i)
        protocol = self.server.openConnections()[0].client
        self.assertEqual(sorted(protocol.core.calls), [0, 1, 2])

    def test_notify(self) -> None:
        """
        notify() runs the method on the server and answers nothing; queued
        like calls while not connected.
        """
        self.client.notify("run", "n1")
        d = self.client.callRemote("run", "c1")
        self.server.flush()
        self.assertEqual(self.handlers.runs, ["n1", "c1"])
        self.assertEqual(self.successResultOf(d), "c1")


class GoawayTests(ClientTestMixin, SynchronousTestCase):
    def test_idleCloseThenCall(self) -> None:
        """
        After the server's idle goaway the client closes without
        reconnecting; the next call reconnects and succeeds.
        """
        self.successResultOf(self._call("add", 1, 1))
        self.server.advance(10)
        self.assertEqual(self.server.openConnections(), [])
        self.assertFalse(self.client.connected)
        # Lazy: no reconnect loop while idle.
        self.server.advance(60)
        self.assertEqual(self.server.attempts, 1)
        self.assertEqual(self.successResultOf(self._call("add", 2, 2)), 4)
        self.assertEqual(self.server.attempts, 2)

    def _call(self, method: str, *args: Any) -> Deferred[Any]:
        d = self.client.callRemote(method, *args)
        self.server.flush()
        return d

    def test_goawaySplitsInflight(self) -> None:
        """
        Requests up to the goaway's last msgid are answered on the old
        connection; those after it were not run and are resent on a new
        connection: each runs exactly once.
        """
        early = [self.client.callRemote("wait", t) for t in ("a", "b")]
        self.server.flush()
        old = self.server.openConnections()[0]
        # "c" is written but not yet delivered when the server goes away.
        late = self.client.callRemote("run", "c")
        old.server.goaway("shutdown")
        self.server.flush()
        self.assertEqual(self.handlers.runs, ["a", "b", "c"])
        self.assertEqual(self.successResultOf(late), "c")
        self.assertEqual(self.server.attempts, 2)
        self.handlers.answer("a")
        self.handlers.answer("b")
        self.server.flush()
        self.assertEqual([self.successResultOf(d) for d in early], ["a", "b"])
        self.assertEqual(self.handlers.runs, ["a", "b", "c"])
        self.assertFalse(old.open)

    def test_goawayWithNothingDispatched(self) -> None:
        """
        A goaway with a nil last msgid means nothing was run: every in-flight
        request is resent.
        """
        self.client.connect()
        self.server.flush()
        old = self.server.openConnections()[0]
        ds = [self.client.callRemote("run", t) for t in "xy"]
        old.server.goaway("shutdown")
        self.server.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], ["x", "y"])
        self.assertEqual(self.handlers.runs, ["x", "y"])

    def test_resentBeforeQueued(self) -> None:
        """
        Resent requests go out before calls that were queued after them.
        """
        self.client.connect()
        self.server.flush()
        old = self.server.openConnections()[0]
        first = self.client.callRemote("run", 1)
        old.server.goaway("shutdown")
        # Deliver the goaway (and 1, which the server discards).
        old.pump.pump()
        old.pump.pump()
        second = self.client.callRemote("run", 2)
        self.server.flush()
        self.assertEqual(self.handlers.runs, [1, 2])
        self.assertEqual(self.successResultOf(first), 1)
        self.assertEqual(self.successResultOf(second), 2)

    def test_callsDuringDrainUseNewConnection(self) -> None:
        """
        While the old connection waits for its last answers, new calls go to
        a new connection.
        """
        slow = self.client.callRemote("wait", "slow")
        self.server.flush()
        self.server.goaway("shutdown")
        fast = self.client.callRemote("run", "fast")
        self.server.flush()
        self.assertEqual(self.successResultOf(fast), "fast")
        self.assertNoResult(slow)
        self.handlers.answer("slow")
        self.server.flush()
        self.assertEqual(self.successResultOf(slow), "slow")
        self.assertEqual(len(self.server.openConnections()), 1)

    def test_goawayBeforeHelloRetriesWithBackoff(self) -> None:
        """
        A connection refused with a goaway before its hello is a failed
        attempt: calls stay queued and the client retries after a delay.
        """
        self.server.factory.hello = None  # type: ignore[assignment]
        d = self.client.callRemote("run", 1)
        busy = self.server.reactor.tcpClients
        self.assertEqual(len(busy), 1)
        protocol = self.client.factory.buildProtocol(None)
        transport = _RecordingTransport()
        protocol.makeConnection(transport)
        goaway = _wire.encodeGoaway(None, "ServerBusy")
        protocol.dataReceived(_wire.frame(goaway))
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(CallLost("closed")))
        self.assertNoResult(d)
        self.assertEqual(self.client.queued, 1)
        self.assertEqual(len(self.server.reactor.tcpClients), 1)
        self.server.reactor.advance(self.client.factory.delay)
        self.assertEqual(len(self.server.reactor.tcpClients), 2)


class _RecordingTransport:
    """
    Just enough of a transport for a protocol driven by hand.
    """

    disconnecting = False

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def loseConnection(self) -> None:
        self.disconnecting = True

    abortConnection = loseConnection

    def getPeer(self) -> None:
        return None


class LossTests(ClientTestMixin, SynchronousTestCase):
    def test_crashFailsInflightNeverResends(self) -> None:
        """
        A connection lost without a goaway fails in-flight calls with
        CallLost (they may have run) and never resends them.
        """
        d = self.client.callRemote("wait", "w")
        self.server.flush()
        self.server.drop()
        f = self.failureResultOf(d, CallLost)
        self.assertIn("may or may not have run", str(f.value))
        self.server.advance(100)
        self.assertEqual(self.handlers.runs, ["w"])
        self.assertEqual(self.server.attempts, 1)

    def test_queuedCallsSurviveFailedConnects(self) -> None:
        """
        While the server refuses connections, calls stay queued and the
        client retries with growing delays, capped; the first success sends
        them and resets the delay.
        """
        self.server.refusing = True
        factory = self.client.factory
        d = self.client.callRemote("run", 1)
        self.server.flush()
        delays = []
        for _ in range(8):
            self.assertNoResult(d)
            delays.append(factory.delay)
            self.server.reactor.advance(factory.delay)
            self.server.flush()
        self.assertEqual(self.server.attempts, 9)
        self.assertEqual(delays, sorted(delays))
        self.assertGreater(delays[1], delays[0])
        self.assertEqual(delays[-1], factory.maxDelay)
        self.server.refusing = False
        self.server.reactor.advance(factory.delay)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(factory.delay, factory.initialDelay)

    def test_firstRetryWaitsInitialDelay(self) -> None:
        """
        A client that has never connected retries its first failed attempt
        after C{initialDelay} (0.1 s; times the factor on a Twisted whose
        retry grows the delay first), not L{ReconnectingClientFactory}'s
        class default of 1 s.
        """
        self.server.refusing = True
        factory = self.client.factory
        d = self.client.callRemote("run", 1)
        self.server.flush()
        self.assertEqual(self.server.attempts, 1)
        expected = factory.initialDelay * (factory.factor if RETRY_GROWS_FIRST else 1)
        self.server.refusing = False
        self.server.reactor.advance(expected)
        self.server.flush()
        self.assertEqual(self.server.attempts, 2)
        self.assertEqual(self.successResultOf(d), 1)

    def test_callFromErrbackReconnects(self) -> None:
        """
        A call made from the errback of a call lost with its connection is
        sent on a new connection.
        """
        retried: list[Deferred[Any]] = []
        wait = nextRetryWait(self.client.factory)

        def retry(f: Failure) -> None:
            f.trap(CallLost)
            retried.append(self.client.callRemote("run", "again"))

        d = self.client.callRemote("wait", "w")
        d.addErrback(retry)
        self.server.flush()
        self.server.drop()
        self.server.flush()
        # The endpoint's connection was lost: it is dialled again after its
        # backoff delay.
        self.assertNoResult(retried[0])
        self.server.reactor.advance(wait)
        self.server.flush()
        self.assertEqual(self.successResultOf(retried[0]), "again")
        self.assertEqual(self.server.attempts, 2)
        self.assertEqual(self.handlers.runs, ["w", "again"])


class CancelAndTimeoutTests(ClientTestMixin, SynchronousTestCase):
    def test_cancelQueued(self) -> None:
        """
        Cancelling a queued call removes it: it is never sent.
        """
        d = self.client.callRemote("run", 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.server.flush()
        self.assertEqual(self.handlers.runs, [])
        self.assertEqual(self.client.queued, 0)

    def test_cancelInflight(self) -> None:
        """
        Cancelling an in-flight call fails it at once, sends a cancel, and
        the server cancels the handler; its late answer is dropped.
        """
        d = self.client.callRemote("wait", "w")
        self.server.flush()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.server.flush()
        self.assertEqual(self.handlers.cancelled, ["w"])
        # The connection is still good.
        self.assertEqual(self.successResultOf(self._call("add", 1, 2)), 3)

    def _call(self, method: str, *args: Any) -> Deferred[Any]:
        d = self.client.callRemote(method, *args)
        self.server.flush()
        return d

    def test_lateAnswerDropped(self) -> None:
        """
        An answer that arrives after its call was cancelled is not delivered
        to anything.
        """
        d = self.client.callRemote("wait", "w")
        self.server.flush()
        protocol = self.server.openConnections()[0].client
        d.cancel()
        self.failureResultOf(d, CancelledError)
        protocol.dataReceived(_wire.frame(_wire.encodeResult(0, "late")))
        self.assertEqual(protocol.inflight, 0)

    def test_timeoutCountsQueueTime(self) -> None:
        """
        The client's timeout runs from the call, including time spent
        queued; a timed-out queued call is never sent.
        """
        client = RpcClient(self.server.reactor, "server", 9988, timeout=5)
        self.server.refusing = True
        d = client.callRemote("run", 1)
        self.server.flush()
        self.server.reactor.advance(4.9)
        self.assertNoResult(d)
        self.server.reactor.advance(0.1)
        f = self.failureResultOf(d, CallTimeout)
        self.assertEqual(
            str(f.value), "run() timed out after 5 s while waiting for a connection"
        )
        self.assertEqual(client.queued, 0)
        self.server.refusing = False
        self.server.advance(60)
        self.assertEqual(self.handlers.runs, [])

    def test_addTimeoutInflight(self) -> None:
        """
        Twisted's own addTimeout works on an in-flight call: it fails with
        TimeoutError and the server is asked to cancel.
        """
        d = self.client.callRemote("wait", "w")
        d.addTimeout(3, self.server.reactor)
        self.server.flush()
        self.server.reactor.advance(3)
        self.failureResultOf(d, TimeoutError)
        self.server.flush()
        self.assertEqual(self.handlers.cancelled, ["w"])

    def test_noTimerWithoutTimeout(self) -> None:
        """
        Without a timeout no timer is scheduled per call.
        """
        self.client.connect()
        self.server.flush()
        before = len(self.server.reactor.getDelayedCalls())
        for i in range(10):
            self.client.callRemote("wait", i)
        self.assertEqual(len(self.server.reactor.getDelayedCalls()), before)


class LimitTests(ClientTestMixin, SynchronousTestCase):
    def test_queueFull(self) -> None:
        """
        Beyond maxPending unanswered calls, a new call fails at once with
        QueueFull; once some finish, calls are accepted again.
        """
        client = RpcClient(self.server.reactor, "server", 9988, maxPending=3)
        ds = [client.callRemote("run", i) for i in range(3)]
        self.failureResultOf(client.callRemote("run", 3), QueueFull)
        self.server.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 1, 2])
        d = client.callRemote("run", 4)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 4)

    def test_oversizedRequestFailsLocally(self) -> None:
        """
        A request larger than the server's max message size (from its hello)
        fails with MessageTooLarge and nothing is sent; the connection keeps
        working.
        """
        server = MemoryServer(self.handlers.registry(), maxMessageSize=100)
        client = RpcClient(server.reactor, "server", 9988)
        big = client.callRemote("run", "x" * 200)
        small = client.callRemote("run", "y")
        server.flush()
        self.failureResultOf(big, MessageTooLarge)
        self.assertEqual(self.successResultOf(small), "y")
        self.assertEqual(self.handlers.runs, ["y"])
        self.assertEqual(len(server.openConnections()), 1)

    def test_unencodableArguments(self) -> None:
        """
        Arguments msgpack cannot encode fail the call locally.
        """
        d = self.client.callRemote("run", object())
        self.server.flush()
        self.failureResultOf(d, TypeError)
        self.assertEqual(self.handlers.runs, [])

    def test_tcpNoDelay(self) -> None:
        """
        The client sets TCP_NODELAY on its connections.
        """
        calls: list[bool] = []
        protocol = self.client.factory.buildProtocol(None)
        transport = _RecordingTransport()
        transport.setTcpNoDelay = calls.append  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        self.assertEqual(calls, [True])


class CloseTests(ClientTestMixin, SynchronousTestCase):
    def test_closeFailsQueued(self) -> None:
        """
        close() fails queued calls with ClientClosed and later calls too.
        """
        self.server.refusing = True
        d = self.client.callRemote("run", 1)
        self.server.flush()
        closed = self.client.close()
        self.failureResultOf(d, ClientClosed)
        self.successResultOf(closed)
        self.failureResultOf(self.client.callRemote("run", 2), ClientClosed)
        self.server.refusing = False
        self.server.advance(60)
        self.assertEqual(self.handlers.runs, [])

    def test_closeWaitsForInflight(self) -> None:
        """
        close() lets in-flight calls finish, then disconnects.
        """
        d = self.client.callRemote("wait", "w")
        self.server.flush()
        closed = self.client.close()
        self.assertNoResult(closed)
        self.handlers.answer("w")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), "w")
        self.successResultOf(closed)
        self.assertEqual(self.server.openConnections(), [])

    def test_closeAbortsAfterGrace(self) -> None:
        """
        In-flight calls still unanswered after the grace fail, and the
        connection is closed.
        """
        d = self.client.callRemote("wait", "w")
        self.server.flush()
        closed = self.client.close(grace=5)
        self.server.reactor.advance(5)
        self.server.flush()
        self.failureResultOf(d, CallLost)
        self.successResultOf(closed)

    def test_closeTwice(self) -> None:
        """
        close() twice returns the same Deferred.
        """
        self.assertIs(self.client.close(), self.client.close())


class HelloTests(SynchronousTestCase):
    def _protocol(self) -> tuple[Any, _RecordingTransport, RpcClient]:
        client = RpcClient(MemoryReactorClock(), "h", 1)
        protocol = client.factory.buildProtocol(None)
        transport = _RecordingTransport()
        protocol.makeConnection(transport)
        return protocol, transport, client

    def test_wrongProtocolVersion(self) -> None:
        """
        A hello with another protocol version closes the connection.
        """
        protocol, transport, _ = self._protocol()
        protocol.dataReceived(_wire.frame(_wire.encodeHello({"protocol": 2})))
        self.assertTrue(transport.disconnecting)
        self.flushLoggedErrors()

    def test_responseBeforeHello(self) -> None:
        """
        A response before the hello is a protocol error.
        """
        protocol, transport, _ = self._protocol()
        protocol.dataReceived(_wire.frame(_wire.encodeResult(0, 1)))
        self.assertTrue(transport.disconnecting)

    def test_garbage(self) -> None:
        """
        A frame that is not a valid server message closes the connection.
        """
        protocol, transport, _ = self._protocol()
        protocol.dataReceived(_wire.frame(b"\xc1"))
        self.assertTrue(transport.disconnecting)

    def test_goawayWithInvalidLastMsgid(self) -> None:
        """
        A goaway whose last msgid is not a msgid proves nothing: the
        connection is treated as lost and in-flight calls fail rather than
        being resent.
        """
        protocol, transport, client = self._protocol()
        protocol.dataReceived(_wire.frame(_wire.encodeHello({"protocol": 1})))
        d = client.callRemote("x")
        protocol.dataReceived(_wire.frame(_wire.pack([3, "goaway", "7", "idle"])))
        self.assertTrue(transport.disconnecting)
        self.assertIs(protocol.core.state, State.BROKEN)
        self.failureResultOf(d, CallLost)
        protocol.connectionLost(Failure(CallLost("aborted")))
        self.assertEqual(client.queued, 0)
        self.flushLoggedErrors()

    def test_maxMessageSizeFromHello(self) -> None:
        """
        The hello's max_message_size becomes the limit of what the client
        sends, and of what it receives when it is lower than the client's
        own.
        """
        protocol, _, _ = self._protocol()
        hello = {"protocol": 1, "keepalive": 0, "max_message_size": 1234}
        protocol.dataReceived(_wire.frame(_wire.encodeHello(hello)))
        self.assertEqual(protocol.core.maxSendSize, 1234)
        self.assertEqual(protocol.core.MAX_LENGTH, 1234)

    def test_oversizedFrameFromServer(self) -> None:
        """
        A frame larger than the limit closes the connection.
        """
        protocol, transport, _ = self._protocol()
        protocol.dataReceived(_wire.HEADER.pack(2**31))
        self.assertTrue(transport.disconnecting)


class TokenTests(SynchronousTestCase):
    """
    L{RpcClient} with C{token} against a server that requires one.
    """

    def setUp(self) -> None:
        self.handlers = Handlers()
        self.server = MemoryServer(
            self.handlers.registry(), authToken=b"s3cret", keepalive=10
        )

    def client(self, token: str | bytes | None) -> RpcClient:
        client = RpcClient(self.server.reactor, "server", 9988, token=token)
        client.factory.jitter = 0
        return client

    def test_rightToken(self) -> None:
        """
        With the right token (as str or bytes) calls run; the auth frame is
        the first thing the client sends.
        """
        for token in ("s3cret", b"s3cret"):
            client = self.client(token)
            ds = [client.callRemote("run", i) for i in range(3)]
            self.server.flush()
            self.assertEqual([self.successResultOf(d) for d in ds], [0, 1, 2])
        self.assertEqual(self.handlers.runs, [0, 1, 2, 0, 1, 2])
        self.assertEqual(self.server.attempts, 2)

    def test_authFrameFirst(self) -> None:
        """
        The first frame on the wire is C{[3, "auth", token]}, written when
        the connection is made, before the hello arrives.
        """
        client = self.client("s3cret")
        protocol = client.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        auth = _wire.pack([3, "auth", b"s3cret"])
        self.assertEqual(transport.value(), _wire.frame(auth))

    def test_wrongTokenFailsEveryCallOnce(self) -> None:
        """
        A wrong token fails every call in flight and every queued call once,
        with L{Unauthorized}; nothing runs, and the client does not
        reconnect until the next call.
        """
        client = self.client("wrong")
        ds = [client.callRemote("run", i) for i in range(3)]
        results = [self._collect(d) for d in ds]
        self.server.flush()
        for result in results:
            self.assertEqual(len(result), 1)
            self.assertIsInstance(result[0].value, Unauthorized)
        self.assertEqual(self.handlers.runs, [])
        self.assertEqual(self.server.openConnections(), [])
        self.assertFalse(client.connected)
        self.assertEqual(client.queued, 0)
        self.server.advance(60)
        self.server.advance(600)
        self.assertEqual(self.server.attempts, 1)
        # The next call tries again (and is refused again).
        d = client.callRemote("run", "x")
        self.server.flush()
        self.failureResultOf(d, Unauthorized)
        self.assertEqual(self.server.attempts, 2)
        self.assertEqual(self.handlers.runs, [])

    def test_noToken(self) -> None:
        """
        Without a token, a server that requires one refuses the first
        request with L{Unauthorized}, and nothing runs.
        """
        client = self.client(None)
        d1 = client.callRemote("run", 1)
        d2 = client.callRemote("run", 2)
        self.server.flush()
        f = self.failureResultOf(d1, Unauthorized)
        self.assertIn("run()", str(f.value))
        self.failureResultOf(d2, Unauthorized)
        self.assertEqual(self.handlers.runs, [])
        self.server.advance(60)
        self.assertEqual(self.server.attempts, 1)

    def test_unauthorizedGoawayAlone(self) -> None:
        """
        A goaway whose reason is C{"Unauthorized"}, with no error before it,
        fails the calls in flight with L{Unauthorized} instead of resending
        them.
        """
        client = self.client(None)
        client.connect()
        self.server.flush()
        protocol = self.server.openConnections()[0].client
        protocol.transport = StringTransport()
        d = client.callRemote("run", 1)
        protocol.dataReceived(_wire.frame(_wire.encodeGoaway(None, "Unauthorized")))
        self.failureResultOf(d, Unauthorized)
        self.assertTrue(protocol.transport.disconnecting)
        self.assertEqual(client.queued, 0)

    def _collect(self, d: Deferred[Any]) -> list[Any]:
        out: list[Any] = []
        d.addBoth(out.append)
        return out


class HostileServerTests(SynchronousTestCase):
    """
    L{RpcClient} against a server that misbehaves: every waiting Deferred
    still fires, with an error that says what happened.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.client = RpcClient(self.reactor, "h", 1, timeout=3)
        self.client.factory.jitter = 0

    def _open(self) -> tuple[Any, _RecordingTransport]:
        """
        Dial (if not yet) and connect the latest attempt by hand.
        """
        self.client.connect()
        protocol: Any = self.reactor.tcpClients[-1][2].buildProtocol(None)
        transport = _RecordingTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_closeWithoutHello(self) -> None:
        """
        C{close(grace)} fires after the grace period when a connection
        opened but its hello never came.
        """
        protocol, transport = self._open()
        closed = self.client.close(grace=1)
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(closed)
        self.reactor.advance(1)
        protocol.connectionLost(Failure(CallLost("aborted")))
        self.successResultOf(closed)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_closeAfterGoawayBeforeHello(self) -> None:
        """
        C{close()} fires once a connection that got a goaway before its
        hello is closed.
        """
        protocol, transport = self._open()
        protocol.dataReceived(_wire.frame(_wire.encodeGoaway(None, "ServerBusy")))
        self.assertTrue(transport.disconnecting)
        closed = self.client.close(grace=1)
        protocol.connectionLost(Failure(CallLost("closed")))
        self.successResultOf(closed)

    def test_helloCannotRaiseReceiveLimit(self) -> None:
        """
        A hello announcing 2**40 bytes does not raise the client's receive
        limit: a 4 GiB frame header aborts the connection at once, and the
        call in flight fails with L{CallLost}.
        """
        d = self.client.callRemote("x")
        protocol, transport = self._open()
        hello = {"protocol": 1, "max_message_size": 2**40}
        protocol.dataReceived(_wire.frame(_wire.encodeHello(hello)))
        protocol.dataReceived(_wire.HEADER.pack(2**32 - 1) + b"x" * 1000)
        self.assertTrue(transport.disconnecting)
        f = self.failureResultOf(d, CallLost)
        self.assertIn("4294967295 bytes", str(f.value))
        self.flushLoggedErrors()

    def test_timeoutSaysWhichCall(self) -> None:
        """
        A call that times out in flight says which call (method and msgid)
        and which limit.
        """
        d = self.client.callRemote("sayHello", "x")
        protocol, transport = self._open()
        protocol.dataReceived(_wire.frame(_wire.encodeHello({"protocol": 1})))
        self.reactor.advance(3)
        f = self.failureResultOf(d, CallTimeout)
        self.assertEqual(
            str(f.value),
            "sayHello() timed out after 3 s (msgid 0; the server was asked to "
            "cancel it, it may or may not have run)",
        )
        self.assertIsInstance(f.value, builtins.TimeoutError)
        self.assertEqual(transport.written[-1], _wire.frame(_wire.encodeCancel(0)))

    def test_resultNestedTooDeep(self) -> None:
        """
        A response too deep to decode fails its call alone with
        L{InvalidResponse}; the connection carries on.
        """
        d1 = self.client.callRemote("deep")
        d2 = self.client.callRemote("x")
        protocol, transport = self._open()
        protocol.dataReceived(_wire.frame(_wire.encodeHello({"protocol": 1})))
        nested: list[Any] = []
        for _ in range(1023):
            nested = [nested]
        protocol.dataReceived(_wire.frame(_wire.encodeResult(0, nested)))
        protocol.dataReceived(_wire.frame(_wire.encodeResult(1, "ok")))
        self.failureResultOf(d1, InvalidResponse)
        self.assertEqual(self.successResultOf(d2), "ok")
        self.assertFalse(transport.disconnecting)

    def test_requestFromServer(self) -> None:
        """
        A request sent by the server is a protocol violation: the
        connection is aborted and the call in flight fails with L{CallLost};
        a call made then waits for the next connection.
        """
        d = self.client.callRemote("x")
        protocol, transport = self._open()
        protocol.dataReceived(_wire.frame(_wire.encodeHello({"protocol": 1})))
        retried: list[Deferred[Any]] = []

        def retry(f: Failure) -> None:
            f.trap(CallLost)
            retried.append(self.client.callRemote("again"))

        d.addErrback(retry)
        protocol.dataReceived(_wire.frame(_wire.pack([0, 1, "evil", []])))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(retried), 1)
        # The call made from the errback waits for the next connection.
        self.assertEqual(self.client.queued, 1)
        self.assertEqual(protocol.core.calls, {})
        self.flushLoggedErrors()


class TLSRefusalTests(SynchronousTestCase):
    """
    A TLS handshake that fails, driven by hand: the connection ends before
    its hello with an OpenSSL error.
    """

    def _lose(self, reactor: MemoryReactorClock, index: int) -> None:
        from OpenSSL.SSL import Error

        protocol: Any = reactor.tcpClients[index][2].buildProtocol(None)
        protocol.makeConnection(_RecordingTransport())
        protocol.connectionLost(Failure(Error([("SSL routines", "", "handshake")])))

    def test_failsQueuedCallsAtOnce(self) -> None:
        """
        The first refused handshake fails the queued calls with
        L{TLSRefused}; the endpoint is not dialled again until the next
        call.
        """
        reactor = MemoryReactorClock()
        client = RpcClient(reactor, "h", 1, timeout=30)
        d = client.callRemote("x")
        self._lose(reactor, 0)
        f = self.failureResultOf(d, TLSRefused)
        self.assertIn("TLS handshake with h:1 failed", str(f.value))
        reactor.advance(60)
        self.assertEqual(len(reactor.tcpClients), 1)
        self.flushLoggedErrors()

    def test_otherEndpointMayStillServe(self) -> None:
        """
        With another endpoint still connecting, the queued calls wait for
        it.
        """
        reactor = MemoryReactorClock()
        client = RpcClient(reactor, endpoints=[("a", 1), ("b", 2)])
        d = client.callRemote("x")
        self._lose(reactor, 0)
        self.assertNoResult(d)
        self.assertEqual(client.queued, 1)
        self.flushLoggedErrors()


class SendNowTests(SynchronousTestCase):
    """
    Over a reactor's transport (a L{FileDescriptor}), the calls that the
    callbacks of a chunk's answers make are sent before C{dataReceived}
    returns, not on the reactor's next pass.
    """

    def setUp(self) -> None:
        reactor = MemoryReactorClock()
        self.client = RpcClient(reactor, "127.0.0.1", 1)
        self.client.connect()
        factory = reactor.tcpClients[0][2]
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        self.rpcProtocol: Any = protocol
        self.transport = DescriptorTransport()
        self.rpcProtocol.makeConnection(self.transport)
        self.rpcProtocol.dataReceived(
            _wire.frame(
                _wire.encodeHello(
                    {
                        "protocol": _wire.PROTOCOL_VERSION,
                        "features": list(_wire.FEATURES),
                    }
                )
            )
        )

    def test_callFromCallbackSentAtOnce(self) -> None:
        """
        A call made by the callback of an answer goes out within the
        C{dataReceived} that delivered the answer, and the transport no
        longer waits to write.
        """
        first = self.client.callRemote("add", 1, 2)
        # The reactor's pass sends what callRemote buffered.
        self.transport.doWrite()
        [sentFirst] = self.transport.sent
        self.assertEqual(parseFrames(sentFirst)[-1][:3], [0, 0, "add"])
        second: list[Deferred[Any]] = []
        first.addCallback(lambda _: second.append(self.client.callRemote("echo", 4)))
        self.rpcProtocol.dataReceived(encode([1, 0, None, 3]))
        self.assertEqual(len(second), 1)
        self.assertEqual(len(self.transport.sent), 2)
        self.assertEqual(parseFrames(self.transport.sent[1]), [[0, 1, "echo", [4]]])
        self.assertFalse(self.transport.waitsToWrite())

    def test_callWithOptionsFromCallbackSentAtOnce(self) -> None:
        """
        So does a call with options (metadata), and a notification.
        """
        caller = self.client.withCallOptions(metadata={"tenant": "a"})
        first = self.client.callRemote("add", 1, 2)
        self.transport.doWrite()
        later: list[Deferred[Any]] = []

        def callAndNotify(_: object) -> None:
            later.append(caller.callRemote("echo", 4))
            self.client.notify("log", "x")

        first.addCallback(callAndNotify)
        self.rpcProtocol.dataReceived(_wire.frame(_wire.pack([1, 0, None, 3])))
        self.assertEqual(len(self.transport.sent), 2)
        call, notification = parseFrames(self.transport.sent[1])
        self.assertEqual(call[:4], [0, 1, "echo", [4]])
        self.assertEqual(call[5], {"metadata": {"tenant": "a"}})
        self.assertEqual(notification[:3], [2, "log", ["x"]])
        self.assertFalse(self.transport.waitsToWrite())

    def test_nothingCalledNothingSent(self) -> None:
        """
        An answer whose callbacks call nothing sends nothing within
        C{dataReceived}, even after a call made outside it.
        """
        self.client.callRemote("add", 1, 2)
        self.transport.doWrite()
        self.client.callRemote("add", 3, 4)
        self.rpcProtocol.dataReceived(encode([1, 0, None, 3]))
        self.assertEqual(len(self.transport.sent), 1)
        self.assertTrue(self.transport.waitsToWrite())


class NotificationTests(SynchronousTestCase):
    """
    Notifications the core refuses to send.
    """

    def test_refusedNotificationsLogged(self) -> None:
        """
        A notification too large for the server, or that cannot be encoded,
        is logged and not sent; the connection carries on.
        """
        reactor = MemoryReactorClock()
        client = RpcClient(reactor, "h", 1)
        client.connect()
        protocol: Any = reactor.tcpClients[0][2].buildProtocol(None)
        transport = _RecordingTransport()
        protocol.makeConnection(transport)
        hello = {"protocol": 1, "max_message_size": 50}
        protocol.dataReceived(_wire.frame(_wire.encodeHello(hello)))
        client.notify("m", "x" * 100)
        client.notify("m", object())
        self.assertEqual(transport.written, [])
        self.assertEqual(len(self.flushLoggedErrors()), 1)
        client.notify("m", 1)
        self.assertEqual(
            transport.written, [_wire.frame(_wire.encodeNotification("m", [1]))]
        )


class LargeRequestTests(SynchronousTestCase):
    """
    A request of 64 KiB or more is written as its header and its payload,
    not one joined copy.
    """

    def test_headerThenPayload(self) -> None:
        """
        A large call's frame is written with C{writeSequence}, and the bytes
        are the header then the payload.
        """
        reactor = MemoryReactorClock()
        client = RpcClient(reactor, "127.0.0.1", 1)
        client.connect()
        protocol: Any = reactor.tcpClients[0][2].buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(
            _wire.frame(_wire.encodeHello({"protocol": _wire.PROTOCOL_VERSION}))
        )
        sequences: list[Any] = []
        write = transport.writeSequence

        def writeSequence(data: Any) -> None:
            sequences.append(list(data))
            write(data)

        transport.writeSequence = writeSequence  # type: ignore[method-assign]
        transport.clear()
        client.callRemote("echo", b"x" * 70_000)
        payload = _wire.encodeRequest(0, "echo", [b"x" * 70_000])
        self.assertEqual(sequences, [[_wire.HEADER.pack(len(payload)), payload]])
        self.assertEqual(transport.value(), _wire.frame(payload))
