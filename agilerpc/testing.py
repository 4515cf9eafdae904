"""
Test helpers: an agilerpc server in memory, for testing code that uses
L{agilerpc.RpcClient} without a network or real time::

    from agilerpc import Registry, RpcClient
    from agilerpc.testing import MemoryServer

    registry = Registry()
    registry.register(lambda a, b: a + b, name="add")
    server = MemoryServer(registry)
    client = RpcClient(server.reactor, "server", 9988)
    d = client.callRemote("add", 1, 2)
    server.flush()
    assert self.successResultOf(d) == 3

C{server.reactor} is a L{MemoryReactorClock}: give it to the client, advance
time with C{server.reactor.advance(seconds)}, then L{MemoryServer.flush}.

Several servers, for a client with several endpoints, share one reactor and
each takes the connections made to its own port::

    one = MemoryServer(registry, port=9001)
    two = MemoryServer(registry, one.reactor, port=9002)
    client = RpcClient(one.reactor, endpoints=[("one", 9001), ("two", 9002)])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import ClientFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump

from ._registry import Registry
from ._server import RpcServerFactory, RpcServerProtocol

__all__ = ["MemoryConnection", "MemoryServer"]


@dataclass
class MemoryConnection:
    """
    A client connection to a L{MemoryServer}.

    @ivar server: the server's protocol for this connection.
    @ivar client: the client's protocol.
    """

    server: RpcServerProtocol
    client: Any
    pump: IOPump
    factory: ClientFactory
    connector: Any
    reported: bool = False

    @property
    def open(self) -> bool:
        """
        Neither side has seen the connection close yet.
        """
        return not (self.pump.clientIO.disconnected or self.pump.serverIO.disconnected)


class MemoryServer:
    """
    Accepts the connections that clients make through C{reactor} and moves
    bytes between them when L{flush}ed.

    @ivar reactor: the reactor (and clock) clients and the server share.
    @ivar factory: the L{RpcServerFactory}; C{factoryOptions} are passed to it.
    @ivar connections: every connection accepted, oldest first.
    @ivar refusing: while true, connection attempts are refused.
    @ivar port: the port whose connections this server takes; L{None}: all.
    """

    def __init__(
        self,
        registry: Registry,
        reactor: MemoryReactorClock | None = None,
        *,
        port: int | None = None,
        **factoryOptions: Any,
    ) -> None:
        self.reactor = reactor if reactor is not None else MemoryReactorClock()
        self.port = port
        self.factory = RpcServerFactory(registry, self.reactor, **factoryOptions)
        self.connections: list[MemoryConnection] = []
        self.refusing = False
        self._seen = 0

    @property
    def attempts(self) -> int:
        """
        How many connection attempts clients have made (to this server's
        port, if it has one).
        """
        if self.port is None:
            return len(self.reactor.tcpClients)
        return sum(1 for c in self.reactor.tcpClients if c[1] == self.port)

    def openConnections(self) -> list[MemoryConnection]:
        """
        The connections that are still open.
        """
        return [c for c in self.connections if c.open]

    def flush(self) -> None:
        """
        Accept (or refuse) new connection attempts and move bytes both ways
        until nothing moves.  Time does not advance.
        """
        for _ in range(10000):
            moved = self._accept()
            for connection in self.connections:
                if connection.pump.pump():
                    moved = True
                self._reportLost(connection)
            if not moved:
                return
        raise RuntimeError("MemoryServer.flush: the connections never went quiet")

    def advance(self, seconds: float) -> None:
        """
        Flush, advance the clock by C{seconds}, flush again.
        """
        self.flush()
        self.reactor.advance(seconds)
        self.flush()

    def _accept(self) -> bool:
        moved = False
        while self._seen < len(self.reactor.tcpClients):
            _host, port, factory, _, _ = self.reactor.tcpClients[self._seen]
            connector = self.reactor.connectors[self._seen]
            self._seen += 1
            if self.port is not None and port != self.port:
                continue
            moved = True
            if self.refusing:
                factory.clientConnectionFailed(
                    connector,
                    Failure(ConnectionRefusedError("MemoryServer is refusing")),
                )
                continue
            address = IPv4Address("TCP", "127.0.0.1", port)
            clientProtocol: Any = factory.buildProtocol(address)
            serverProtocol = self.factory.buildProtocol(address)
            serverTransport = FakeTransport(serverProtocol, isServer=True)
            clientTransport = FakeTransport(clientProtocol, isServer=False)
            serverProtocol.makeConnection(serverTransport)  # type: ignore[no-untyped-call]
            clientProtocol.makeConnection(clientTransport)
            # No clock: IOPump takes one only from Twisted 23.10.  Without
            # it, pump() advances a clock of its own that nothing here uses,
            # so time moves only when the caller advances self.reactor.
            pump = IOPump(
                clientProtocol, serverProtocol, clientTransport, serverTransport, False
            )
            self.connections.append(
                MemoryConnection(
                    serverProtocol, clientProtocol, pump, factory, connector
                )
            )
        return moved

    def _reportLost(self, connection: MemoryConnection) -> None:
        # IOPump tells both protocols; the client factory learns it here, as a
        # real connector would tell it.
        if connection.pump.clientIO.disconnected and not connection.reported:
            connection.reported = True
            connection.factory.clientConnectionLost(
                connection.connector, Failure(connection.pump.clientIO.disconnectReason)
            )

    def drop(self, connection: MemoryConnection | None = None) -> None:
        """
        Break connections (the newest open one, or C{connection}) without a
        goaway, as a crash or a network failure would, then flush.
        """
        targets = (
            [connection] if connection is not None else self.openConnections()[-1:]
        )
        for target in targets:
            reason = ConnectionLost("MemoryServer dropped the connection")
            target.pump.clientIO.disconnectReason = reason
            target.pump.serverIO.disconnectReason = reason
            target.pump.serverIO.disconnecting = True
        self.flush()

    def goaway(self, reason: str = "idle") -> None:
        """
        Send every open connection a goaway (as the keepalive would), then
        flush.
        """
        for connection in self.openConnections():
            connection.server.goaway(reason)
        self.flush()
