"""
The example handlers: serve them with
C{twistd -n agilerpc --module agilerpc.examples.hello}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from agilerpc import rpc


@rpc
def sayHello(name: str) -> str:
    """
    Greet C{name}.
    """
    return "hello " + name


@rpc
def add(a: Any, b: Any) -> Any:
    """
    Return C{a + b}.
    """
    return a + b


@rpc
def echo(x: Any) -> Any:
    """
    Return C{x} unchanged.
    """
    return x


def _reactor() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


@rpc
def sleep(seconds: float) -> Deferred[float]:
    """
    Wait C{seconds} without blocking the server, then return C{seconds}.
    """
    from twisted.internet.task import deferLater

    return deferLater(_reactor(), seconds, lambda: seconds)
