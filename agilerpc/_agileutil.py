"""
C{TcpRpcServer}: the server API of agileutil's TCP RPC, on Twisted::

    server = TcpRpcServer('0.0.0.0', 9988)
    server.setKeepaliveTimeout(10)
    server.regist(sayHello)
    server.serve()
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import globalLogBeginner, textFileLogObserver

from ._registry import Registry
from ._server import RpcServerFactory
from ._service import RpcService
from ._wire import DEFAULT_MAX_MESSAGE_SIZE


class TcpRpcServer:
    """
    A blocking, agileutil-compatible front to L{RpcService}.

    @param host: the address to listen on (C{"0.0.0.0"}: every IPv4
        interface; an address with a colon listens on IPv6).
    @param port: the TCP port.
    @param reactor: the reactor to run; the global one by default.
    """

    def __init__(
        self, host: str = "0.0.0.0", port: int = 9988, reactor: Any = None
    ) -> None:
        self.host = host
        self.port = port
        self.registry = Registry()
        self.keepalive = 75.0
        self.maxMessageSize = DEFAULT_MAX_MESSAGE_SIZE
        self.shutdownGrace = 10.0
        self._reactor = reactor
        self.service: RpcService | None = None

    def setKeepaliveTimeout(self, seconds: float) -> None:
        """
        Close connections idle for C{seconds} (default 75; 0 disables).
        """
        if seconds < 0:
            raise ValueError("the keepalive timeout must be >= 0")
        self.keepalive = float(seconds)

    def regist(
        self, func: Callable[..., Any], name: str | None = None, thread: bool = False
    ) -> None:
        """
        Serve C{func} as C{name} (default: its C{__name__}).
        """
        self.registry.register(func, name, thread)

    def _getReactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def start(self) -> RpcService:
        """
        Start listening without running the reactor; L{serve} does both.
        """
        reactor = self._getReactor()
        factory = RpcServerFactory(
            self.registry,
            reactor,
            keepalive=self.keepalive,
            maxMessageSize=self.maxMessageSize,
        )
        endpoint: IStreamServerEndpoint
        if ":" in self.host:
            endpoint = TCP6ServerEndpoint(reactor, self.port, interface=self.host)
        else:
            endpoint = TCP4ServerEndpoint(reactor, self.port, interface=self.host)
        self.service = RpcService(factory, [endpoint], self.shutdownGrace)
        self.service.startService()  # type: ignore[no-untyped-call]
        reactor.addSystemEventTrigger("before", "shutdown", self.service.stopService)
        return self.service

    def serve(self) -> None:
        """
        Listen and run the reactor until SIGINT or SIGTERM, then stop
        gracefully: a goaway to every client, dispatched calls finished.
        Logs go to standard error.
        """
        globalLogBeginner.beginLoggingTo(
            [textFileLogObserver(sys.stderr)], redirectStandardIO=False
        )
        self.start()
        self._getReactor().run()
