"""
The server as a Twisted service: listen on endpoints, stop gracefully.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint

from ._server import RpcServerFactory


class RpcService(MultiService):
    """
    Serve C{factory} on every endpoint in C{endpoints}.

    Stopping it (twistd does on SIGTERM or SIGINT) stops listening first,
    then sends a goaway to every connection and lets dispatched calls finish
    for up to C{shutdownGrace} seconds.
    """

    def __init__(
        self,
        factory: RpcServerFactory,
        endpoints: list[IStreamServerEndpoint],
        shutdownGrace: float = 10.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.factory = factory
        self.shutdownGrace = shutdownGrace
        for endpoint in endpoints:
            service = StreamServerEndpointService(endpoint, factory)
            # Fail startup loudly (e.g. port in use) instead of logging it.
            service._raiseSynchronously = True
            service.setServiceParent(self)

    def stopService(self) -> Deferred[Any]:
        d: Deferred[Any] = super().stopService()  # type: ignore[no-untyped-call]
        d.addCallback(lambda _: self.factory.shutdown(self.shutdownGrace))
        return d
