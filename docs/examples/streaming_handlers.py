"""
Streaming handlers: a generator and an async generator.  Serve them with
twistd -n agilerpc --module streaming_handlers
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from agilerpc import rpc

log = Logger()


def _reactor() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


@rpc
def countdown(n: int) -> Generator[int, None, str]:
    """Each value yielded is one item; what the generator returns is the result."""
    yield from range(n, 0, -1)
    return "liftoff"


@rpc
async def ticks(n: int, every: float) -> AsyncGenerator[int, None]:
    """An async generator may await between items."""
    sent = 0
    try:
        for i in range(n):
            await deferLater(_reactor(), every, lambda: None)
            yield i
            sent += 1
    finally:
        # Runs at the end, and also when the caller cancels or goes away.
        log.info("ticks stopped after {sent} of {n} items", sent=sent, n=n)
