"""
Tests for L{agilerpc.testing}: the in-memory server works as its docstring
shows, on every supported Twisted.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import Registry, RpcClient
from agilerpc.testing import MemoryServer


def _adder() -> Registry:
    registry = Registry()
    registry.register(lambda a, b: a + b, name="add")
    return registry


class MemoryServerTests(SynchronousTestCase):
    """
    L{MemoryServer} answers a client's calls when flushed, and leaves time
    to the caller.
    """

    def test_docstringExample(self) -> None:
        """
        A client on the server's reactor gets its call answered by one
        L{MemoryServer.flush}.
        """
        server = MemoryServer(_adder())
        client = RpcClient(server.reactor, "server", 9988)
        d = client.callRemote("add", 1, 2)
        server.flush()
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual(len(server.openConnections()), 1)

    def test_flushLeavesTimeAlone(self) -> None:
        """
        L{MemoryServer.flush} neither advances the reactor's clock nor runs
        calls scheduled on it, even with no delay; L{MemoryServer.advance}
        does.
        """
        server = MemoryServer(_adder())
        client = RpcClient(server.reactor, "server", 9988)
        d = client.callRemote("add", 1, 2)
        ran: list[float] = []
        server.reactor.callLater(0, lambda: ran.append(server.reactor.seconds()))
        server.flush()
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual((ran, server.reactor.seconds()), ([], 0))
        server.advance(0)
        self.assertEqual(ran, [0])
