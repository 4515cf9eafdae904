"""
A TCP proxy that cuts connections at random points, for fault tests.

    proxy = ChaosProxy(reactor, "127.0.0.1", serverPort, random.Random(1))
    port = reactor.listenTCP(0, proxy, interface="127.0.0.1")

Each proxied connection gets a random byte budget (counting bytes relayed in
both directions): with probability C{earlyCut} a small one, up to
C{earlyBudget} bytes, which cuts the connection before or inside the
server's hello, else one between C{earlyBudget} and C{maxBudget}.  Once the budget is spent, the proxy
relays only the bytes up to it (so the cut falls anywhere, in the middle of
a frame too) and then ends both sides: with a RST (C{abortConnection}) or a
FIN (C{loseConnection}), chosen at random.
"""

from __future__ import annotations

import random
import struct
from typing import Any

from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure


class _ServerSide(Protocol):
    """
    The proxy's connection to the real server.
    """

    transport: Any

    def __init__(self, peer: ChaosConnection) -> None:
        self.peer = peer

    def connectionMade(self) -> None:
        self.peer.serverConnected(self)

    def dataReceived(self, data: bytes) -> None:
        self.peer.relay(data, toClient=True)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.peer.serverLost()


class _ServerSideFactory(ClientFactory):
    noisy = False

    def __init__(self, peer: ChaosConnection) -> None:
        self.peer = peer

    def buildProtocol(self, addr: Any) -> _ServerSide:
        return _ServerSide(self.peer)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.peer.serverLost()


class ChaosConnection(Protocol):
    """
    One client connection through the proxy.

    Bytes the client sends before the server side is connected are held and
    relayed once it is.
    """

    factory: ChaosProxy
    transport: Any

    def __init__(self, budget: int, abort: bool) -> None:
        self.budget = budget
        self.abort = abort
        self.server: _ServerSide | None = None
        self._held: list[bytes] = []
        self._toClient = b""
        self._cut = False
        self._closed = False
        self.relayedToClient = 0

    def connectionMade(self) -> None:
        self.factory.opened += 1
        self.factory.live.add(self)
        self.factory.reactor.connectTCP(
            self.factory.host, self.factory.port, _ServerSideFactory(self)
        )

    def serverConnected(self, server: _ServerSide) -> None:
        self.server = server
        if self._closed:
            server.transport.loseConnection()
            return
        held, self._held = self._held, []
        for data in held:
            self.relay(data, toClient=False)

    def dataReceived(self, data: bytes) -> None:
        if self.server is None:
            self._held.append(data)
        else:
            self.relay(data, toClient=False)

    def relay(self, data: bytes, toClient: bool) -> None:
        """
        Pass C{data} on, up to what is left of the budget; end both sides
        when it runs out.
        """
        if self._cut:
            return
        if len(data) >= self.budget:
            data = data[: self.budget]
            self._cut = True
        self.budget -= len(data)
        assert self.server is not None
        target = self.transport if toClient else self.server.transport
        if data:
            target.write(data)
            if toClient and len(self._toClient) < 4:
                self._toClient += data[:4]
            self.relayedToClient += len(data) if toClient else 0
        if self._cut:
            self.factory.cuts += 1
            if self._helloRelayed():
                self.factory.cutsAfterHello += 1
            self._end()

    def _helloRelayed(self) -> bool:
        """
        Did the client get the whole of the server's first frame (its hello)?
        """
        if len(self._toClient) < 4:
            return False
        length: int = struct.unpack(">I", self._toClient[:4])[0]
        return self.relayedToClient >= 4 + length

    def _end(self) -> None:
        sides = [self.transport]
        if self.server is not None:
            sides.append(self.server.transport)
        for transport in sides:
            if self.abort:
                transport.abortConnection()
            else:
                transport.loseConnection()

    def serverLost(self) -> None:
        if not self._closed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closed = True
        self.factory.live.discard(self)
        if self.server is not None:
            self.server.transport.loseConnection()


class ChaosProxy(Factory):
    """
    Accepts client connections and relays each to C{host}:C{port} until its
    random budget runs out.

    @ivar opened: how many client connections were accepted.
    @ivar cuts: how many of them the proxy cut.
    @ivar cutsAfterHello: how many of those it cut after relaying the whole
        hello (so that the client may have had calls in flight).
    @ivar live: the connections open now.
    """

    noisy = False

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        rng: random.Random,
        maxBudget: int = 6000,
        earlyBudget: int = 120,
        earlyCut: float = 0.2,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.rng = rng
        self.maxBudget = maxBudget
        self.earlyBudget = earlyBudget
        self.earlyCut = earlyCut
        self.opened = 0
        self.cuts = 0
        self.cutsAfterHello = 0
        self.live: set[ChaosConnection] = set()

    def buildProtocol(self, addr: Any) -> ChaosConnection:  # type: ignore[override]
        rng = self.rng
        if rng.random() < self.earlyCut:
            budget = rng.randint(1, self.earlyBudget)
        else:
            budget = rng.randint(self.earlyBudget, self.maxBudget)
        connection = ChaosConnection(budget, rng.random() < 0.5)
        connection.factory = self
        return connection
