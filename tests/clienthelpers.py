"""
Fakes shared by the client tests: handlers that record each run, the
exactly-once check, the backoff of Twisted's L{ReconnectingClientFactory}
as the installed Twisted schedules it, an L{IClientEvents} recorder for the
sans-IO core, and in-memory sockets that connect L{agilerpc.TcpRpcClient} to
a scripted server with no thread and no network.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from agilerpc import CallLost, Registry, _wire, testing
from agilerpc._clientconnection import IClientEvents


class Handlers:
    """
    Handlers that record every execution, so tests can tell that each call
    ran exactly once.
    """

    def __init__(self) -> None:
        self.runs: list[Any] = []
        self.waiting: dict[Any, Deferred[Any]] = {}
        self.cancelled: list[Any] = []

    def registry(self) -> Registry:
        registry = Registry()
        registry.register(self.run)
        registry.register(self.wait)
        registry.register(self.add)
        return registry

    def run(self, token: Any) -> Any:
        self.runs.append(token)
        return token

    def add(self, a: int, b: int) -> int:
        return a + b

    def wait(self, token: Any) -> Deferred[Any]:
        """
        Run now, answer when the test says so.
        """
        self.runs.append(token)

        def cancel(d: Deferred[Any]) -> None:
            self.cancelled.append(token)

        d: Deferred[Any] = Deferred(cancel)
        self.waiting[token] = d
        return d

    def answer(self, token: Any) -> None:
        """
        Answer the call C{token}, unless the server cancelled it (its
        connection was lost).
        """
        d = self.waiting.pop(token)
        if not d.called:
            d.callback(token)


def assertExactlyOnce(
    testCase: SynchronousTestCase, outcomes: dict[int, list[Any]], ran: list[Any]
) -> None:
    """
    Each call (by token, in C{outcomes}: what its Deferred fired with) ended
    exactly once: answered with its token by exactly one run (C{ran} lists the
    tokens every handler run saw), or failed with L{CallLost} after at most
    one run.
    """
    runs: dict[int, int] = {}
    for token in ran:
        runs[token] = runs.get(token, 0) + 1
    for token, results in outcomes.items():
        testCase.assertEqual(
            len(results), 1, f"call {token} ended {len(results)} times"
        )
        result = results[0]
        testCase.assertLessEqual(runs.get(token, 0), 1, f"call {token} ran twice")
        if isinstance(result, Failure):
            testCase.assertTrue(result.check(CallLost), f"call {token}: {result}")
        else:
            testCase.assertEqual(result, token)
            testCase.assertEqual(
                runs.get(token), 1, f"call {token} answered without running"
            )


def _retryGrowsFirst() -> bool:
    factory = ReconnectingClientFactory()
    clock = Clock()
    # Twisted's annotations infer the clock's type from the global reactor.
    factory.clock = cast(Any, clock)
    factory.jitter = 0
    factory.delay = 1.0
    factory.factor = 2.0
    factory.retry(object())
    [call] = clock.getDelayedCalls()
    call.cancel()
    return bool(call.getTime() == 2.0)


#: Does this Twisted's L{ReconnectingClientFactory.retry} multiply the delay
#: by the factor before waiting it (Twisted before 26.4), rather than after?
#: Then a first retry waits C{initialDelay * factor}, not C{initialDelay}.
RETRY_GROWS_FIRST = _retryGrowsFirst()


def nextRetryWait(factory: ReconnectingClientFactory) -> float:
    """
    Seconds the next retry of C{factory} will wait (with C{jitter} 0).
    """
    if RETRY_GROWS_FIRST:
        return min(factory.delay * factory.factor, factory.maxDelay)
    return float(factory.delay)


def setNextRetryWait(factory: ReconnectingClientFactory, seconds: float) -> None:
    """
    Make the next retry of C{factory} wait C{seconds} (with C{jitter} 0),
    each later one C{factor} times the one before.
    """
    factory.delay = seconds / factory.factor if RETRY_GROWS_FIRST else seconds


@implementer(IClientEvents)
class RecordingEvents:
    """
    An L{IClientEvents} that records each event as a tuple, in order.
    """

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def connectionReady(self, info: dict[str, Any]) -> None:
        self.events.append(("ready", info))

    def callAnswered(self, call: Any, result: Any) -> None:
        self.events.append(("answered", call, result))

    def callFailed(self, call: Any, error: Any) -> None:
        self.events.append(("failed", call, error))

    def itemReceived(self, call: Any, item: Any) -> None:
        self.events.append(("item", call, item))

    def goawayReceived(self, reason: str | None, unrun: list[Any]) -> None:
        self.events.append(("goaway", reason, unrun))

    def connectionRefused(self, calls: list[Any], error: Any) -> None:
        self.events.append(("refused", calls, error))

    def connectionNotServed(self, reason: str | None) -> None:
        self.events.append(("notServed", reason))

    def protocolViolation(self, why: str, lost: list[Any]) -> None:
        self.events.append(("violation", why, lost))

    def serverError(self, error: Any) -> None:
        self.events.append(("serverError", error))

    def kinds(self) -> list[str]:
        """
        The kind of each event, in order.
        """
        return [event[0] for event in self.events]


def frame(message: Any) -> bytes:
    """
    C{message} encoded as one frame.
    """
    return _wire.frame(_wire.pack(message))


HELLO = [3, "hello", {"protocol": 1, "keepalive": 75, "max_message_size": 8 << 20}]


class MemorySocket:
    """
    One connection of a L{MemoryServer}, as the blocking client's socket:
    what the client sends is parsed into messages and handed to the server's
    script, which answers at once into what the client reads next.

    @ivar received: every message the client sent on it, in order.
    """

    def __init__(self, server: MemoryServer, index: int) -> None:
        self.server = server
        self.index = index
        self.received: list[Any] = []
        self.inbound = bytearray()
        self.eof = False
        self.closed = False
        self._partial = b""
        self._blocked = 0

    # What a script uses.

    def send_(self, message: Any) -> None:
        """
        Send C{message} to the client, as one frame.
        """
        self.inbound += frame(message)

    def sendRaw(self, data: bytes) -> None:
        """
        Send C{data} to the client as it is.
        """
        self.inbound += data

    def end(self) -> None:
        """
        Close the server's side: the client reads end-of-stream after what
        was sent.
        """
        self.eof = True

    # The socket methods the client uses.

    def settimeout(self, timeout: float | None) -> None:
        pass

    def setsockopt(self, *args: Any) -> None:
        pass

    def pending(self) -> int:
        # Always readable: a read either has bytes, reaches the end, or
        # fails the test (see recv).
        return 1

    def recv(self, size: int) -> bytes:
        if self.closed:
            raise OSError(9, "Bad file descriptor")
        if self.inbound:
            self._blocked = 0
            data = bytes(self.inbound[:size])
            del self.inbound[:size]
            return data
        if self.eof:
            return b""
        # Nothing to read yet, as a non-blocking socket says it; but the
        # script answers at once, so a client that keeps asking would wait
        # for ever.
        self._blocked += 1
        if self._blocked > 100:
            raise AssertionError(
                "the client waits for a server that has nothing more to say"
            )
        raise BlockingIOError(11, "Resource temporarily unavailable")

    def send(self, data: bytes) -> int:
        if self.closed or (self.eof and self.server.resetOnSendAfterEnd):
            raise ConnectionResetError(104, "Connection reset by peer")
        buffer = self._partial + data
        while len(buffer) >= 4:
            (length,) = _wire.HEADER.unpack_from(buffer)
            if len(buffer) < 4 + length:
                break
            message = _wire.unpack(buffer[4 : 4 + length])
            buffer = buffer[4 + length :]
            self.received.append(message)
            self.server.script(self, message)
        self._partial = buffer
        return len(data)

    def shutdown(self, how: int) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True


class MemoryServer:
    """
    A scripted server for L{agilerpc.TcpRpcClient}'s C{socketFactory}: each
    connection is a L{MemorySocket}; C{opened(sock)} says what the server
    sends when it opens (by default, its hello), and C{script(sock,
    message)} answers each message the client sends (by default, each
    request with its first argument).
    """

    def __init__(
        self,
        opened: Callable[[MemorySocket], None] | None = None,
        script: Callable[[MemorySocket, Any], None] | None = None,
    ) -> None:
        self.opened = opened or (lambda sock: sock.send_(HELLO))
        self.script = script or echo
        self.connections: list[MemorySocket] = []
        self.refusing = 0
        self.resetOnSendAfterEnd = False

    def __call__(
        self, address: tuple[str, int], timeout: float | None
    ) -> socket.socket:
        if self.refusing:
            self.refusing -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        sock = MemorySocket(self, len(self.connections))
        self.connections.append(sock)
        self.opened(sock)
        return sock  # type: ignore[return-value]


def echo(sock: MemorySocket, message: Any) -> None:
    """
    A script: answer each request with its first argument.
    """
    if message[0] == 0:
        sock.send_([1, message[1], None, message[3][0] if message[3] else None])


def serverStep(server: testing.MemoryServer, kind: str) -> bool:
    """
    Take the step C{kind} on C{server}, if it is one of those the property
    tests draw for a server: C{"goaway"} (every open connection sends one, as
    when it stops), C{"drop"} (its connections are lost), C{"refuse"} and
    C{"accept"} (new connections), C{"flush"} (move the bytes).  Whether it
    was.
    """
    if kind == "goaway":
        for connection in server.openConnections():
            connection.server.goaway("shutdown")
    elif kind == "drop":
        server.drop()
    elif kind == "refuse":
        server.refusing = True
    elif kind == "accept":
        server.refusing = False
    elif kind == "flush":
        server.flush()
    else:
        return False
    return True
