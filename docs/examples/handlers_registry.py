"""
A registry built by hand, served on an endpoint of your choosing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort

from agilerpc import Registry, RpcServerFactory, rpc


class Counter:
    """Methods of an object, served under a prefix."""

    def __init__(self) -> None:
        self.value = 0

    @rpc
    def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value

    @rpc(idempotent=True)
    def get(self) -> int:
        return self.value


def shout(text: str) -> str:
    return text.upper()


def makeRegistry() -> Registry:
    registry = Registry()
    registry.register(shout)  # served as "shout"
    registry.register(len, name="length")  # any callable, any name
    registry.registerObject(Counter(), "counter")  # "counter.incr", "counter.get"
    return registry


def listen(reactor: Any, port: int = 9988) -> Deferred[IListeningPort]:
    factory = RpcServerFactory(makeRegistry(), reactor, keepalive=75)
    endpoint = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
    listening: Deferred[IListeningPort] = endpoint.listen(factory)
    return listening
