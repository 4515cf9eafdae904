"""
Testing code that uses RpcClient, with agilerpc.testing.MemoryServer: no
network, no real time.  Run it with trial (trial testing_greeter).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import CallLost, CallTimeout, Registry, RpcClient
from agilerpc.testing import MemoryServer


class Greeter:
    """The code under test: it greets people through a server."""

    def __init__(self, client: RpcClient) -> None:
        self.client = client

    async def greetAll(self, names: list[str]) -> list[str]:
        return [await self.client.callRemote("sayHello", name) for name in names]


def sayHello(name: str) -> str:
    return "hello " + name


class GreeterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pending: Deferred[str] = Deferred()  # answers "wait", when we say
        registry = Registry()
        registry.register(sayHello)
        registry.register(lambda: self.pending, name="wait")
        self.server = MemoryServer(registry, keepalive=10)
        # server.reactor is a MemoryReactorClock: the client connects
        # through it, and its callLater runs on its clock.
        self.client = RpcClient(self.server.reactor, "server", 9988, timeout=5)

    def test_greetAll(self) -> None:
        """greetAll returns the greetings in order."""
        d = ensureDeferred(Greeter(self.client).greetAll(["a", "b"]))
        self.server.flush()  # connect, hello, both calls, both answers
        self.assertEqual(self.successResultOf(d), ["hello a", "hello b"])

    def test_idleClose(self) -> None:
        """After the keepalive closed it, the next call reconnects."""
        self.client.callRemote("sayHello", "a")
        self.server.advance(10)  # ten idle seconds: goaway, half-close
        self.assertEqual(self.server.openConnections(), [])
        d = self.client.callRemote("sayHello", "b")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), "hello b")
        self.assertEqual(len(self.server.connections), 2)

    def test_timeout(self) -> None:
        """A call not answered within the client's timeout fails."""
        d = self.client.callRemote("wait")
        self.server.advance(4.9)
        self.assertNoResult(d)
        self.server.advance(0.1)
        self.failureResultOf(d, CallTimeout)

    def test_connectionDropped(self) -> None:
        """A call in flight when the connection breaks is lost, not resent."""
        d = self.client.callRemote("wait")
        self.server.flush()
        self.server.drop()  # no goaway: as a crash or a network failure
        self.failureResultOf(d, CallLost)

    def test_serverDown(self) -> None:
        """A call made while the server refuses connections waits for it."""
        self.server.refusing = True  # the next connection attempts fail
        d = self.client.callRemote("sayHello", "c")
        self.server.flush()
        self.assertNoResult(d)  # queued, waiting for the backoff
        self.server.refusing = False
        self.server.advance(4)  # the backoff delay passes: the client dials again
        self.assertEqual(self.successResultOf(d), "hello c")
