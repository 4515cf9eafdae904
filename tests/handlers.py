"""
Handlers served by the test suite's subprocess servers.

Loaded by C{twistd agilerpc --module handlers} with C{PYTHONPATH} set to the
C{tests} directory, so it imports C{agilerpc} from the installed package and
nothing from the C{tests} package.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from twisted.internet.defer import Deferred

import agilerpc

_incrCount = 0


@agilerpc.rpc
def sayHello(name: str) -> str:
    """
    Greet C{name}.
    """
    return "hello " + name


@agilerpc.rpc(idempotent=True)
def echo(x: Any) -> Any:
    """
    Return C{x} unchanged (idempotent: running it twice does no harm).
    """
    return x


@agilerpc.rpc
def add(a: Any, b: Any) -> Any:
    """
    Return C{a + b}.
    """
    return a + b


@agilerpc.rpc
def sleep(seconds: float) -> Deferred[float]:
    """
    Wait C{seconds} without blocking the reactor, then return C{seconds}.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: seconds)


@agilerpc.rpc
def blobLater(size: int, delay: float) -> Deferred[bytes]:
    """
    Wait C{delay} seconds without blocking the reactor, then return C{size}
    bytes: a response produced after its request was read.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    return deferLater(reactor, delay, lambda: b"x" * size)


@agilerpc.rpc
def pid() -> int:
    """
    The server process's id.
    """
    return os.getpid()


@agilerpc.rpc
def incr(token: str) -> int:
    """
    Append C{token} and a newline to the file named by
    C{$AGILERPC_TEST_LEDGER}, and return how many times this process has run
    C{incr}: tests count executions across restarts by reading the ledger.
    """
    global _incrCount
    ledger = os.environ.get("AGILERPC_TEST_LEDGER")
    if ledger:
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
    _incrCount += 1
    return _incrCount


@agilerpc.rpc
def fail(message: str) -> None:
    """
    Raise C{ValueError(message)}.
    """
    raise ValueError(message)


@agilerpc.rpc
def nested(depth: int) -> list[Any]:
    """
    An empty list nested C{depth} lists deep.
    """
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@agilerpc.rpc
def count(n: int) -> Iterator[int]:
    """
    A stream of the integers 0 to C{n} - 1.
    """
    yield from range(n)


@agilerpc.rpc
def blobs(n: int, size: int) -> Iterator[bytes]:
    """
    A stream of C{n} items of C{size} bytes each.
    """
    item = b"x" * size
    for _ in range(n):
        yield item


_openStreams: list[int] = [0]


@agilerpc.rpc
def forever() -> Iterator[int]:
    """
    An endless stream of integers; L{openStreams} counts those running.
    """
    _openStreams[0] += 1
    try:
        i = 0
        while True:
            yield i
            i += 1
    finally:
        _openStreams[0] -= 1


@agilerpc.rpc
def openStreams() -> int:
    """
    How many L{forever} streams are running.
    """
    return _openStreams[0]


@agilerpc.rpc
async def slowCount(n: int, every: float) -> AsyncIterator[int]:
    """
    The integers 0 to C{n} - 1, one every C{every} seconds.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for i in range(n):
        await deferLater(reactor, every, lambda: None)
        yield i


# What waitToBeCancelled saw of each call, by tag.
_waits: dict[str, dict[str, Any]] = {}


@agilerpc.rpc
def waitToBeCancelled(tag: str, seconds: float) -> Deferred[str]:
    """
    Wait C{seconds}, then return C{tag}; record under C{tag} the call's
    deadline as the handler read it, and how long after it started it was
    cancelled, if it was (see L{waitRecord}).
    """
    from twisted.internet import reactor
    from twisted.internet.defer import CancelledError
    from twisted.internet.task import deferLater
    from twisted.python.failure import Failure

    started = time.monotonic()
    record = _waits[tag] = {"deadline": agilerpc.currentCall().deadline}

    def cancelled(failure: Failure) -> Failure:
        if failure.check(CancelledError):
            record["cancelledAfter"] = time.monotonic() - started
        return failure

    d = deferLater(reactor, seconds, lambda: tag)
    d.addErrback(cancelled)
    return d


@agilerpc.rpc
def waitRecord(tag: str) -> dict[str, Any] | None:
    """
    What L{waitToBeCancelled} recorded under C{tag}, or None before it ran.
    """
    return _waits.get(tag)
