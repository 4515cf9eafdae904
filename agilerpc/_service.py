"""
The server as a Twisted service: listen on endpoints, stop gracefully.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint

from ._server import RpcServerFactory


class RpcService(MultiService):
    """
    Serve C{factory} on every endpoint in C{endpoints}.

    Stopping it (twistd does on SIGTERM or SIGINT) stops listening first,
    then sends a goaway to every connection and lets dispatched calls finish
    for up to C{shutdownGrace} seconds.

    With C{tls} (server TLS options, such as a
    L{twisted.internet.ssl.CertificateOptions}), every endpoint serves TLS:
    the factory is wrapped in a
    L{TLSMemoryBIOFactory <twisted.protocols.tls.TLSMemoryBIOFactory>}.
    (Endpoints that do TLS themselves, like strports' C{ssl:}, need no
    C{tls}.)

    @ivar listeningFactory: the factory the endpoints listen with: C{factory}
        itself, or its TLS wrapper.
    """

    def __init__(
        self,
        factory: RpcServerFactory,
        endpoints: list[IStreamServerEndpoint],
        shutdownGrace: float = 10.0,
        tls: Any = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.factory = factory
        self.shutdownGrace = shutdownGrace
        self.listeningFactory: IProtocolFactory = factory
        if tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            self.listeningFactory = TLSMemoryBIOFactory(tls, False, factory)
        for endpoint in endpoints:
            service = StreamServerEndpointService(endpoint, self.listeningFactory)
            # Fail startup loudly (e.g. port in use) instead of logging it.
            service._raiseSynchronously = True
            service.setServiceParent(self)

    def stopService(self) -> Deferred[Any]:
        d: Deferred[Any] = super().stopService()  # type: ignore[no-untyped-call]
        d.addCallback(lambda _: self.factory.shutdown(self.shutdownGrace))
        return d
