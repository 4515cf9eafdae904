"""
The same client in the inlineCallbacks style.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from agilerpc import RpcClient


@inlineCallbacks
def greet(
    reactor: Any, host: str, port: int, names: list[str]
) -> Generator[Deferred[Any], Any, list[str]]:
    client = RpcClient(reactor, host, port, timeout=10)
    try:
        greetings = []
        for name in names:
            greeting = yield client.callRemote("sayHello", name)
            greetings.append(greeting)
        return greetings
    finally:
        yield client.close()
