"""
The example handlers: serve them with
C{twistd -n agilerpc --module agilerpc.examples.hello}.

Their docstrings are written as plain text, without epytext markup: a
server sends them to callers as they are (C{system.describe}).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from agilerpc import InvalidParams, rpc


@rpc
def sayHello(name: str) -> str:
    """
    Return a greeting for name: "hello " followed by it.
    """
    return "hello " + name


@rpc
def add(a: Any, b: Any) -> Any:
    """
    Return a + b (numbers add, strings and arrays concatenate).
    """
    return a + b


@rpc
def echo(x: Any) -> Any:
    """
    Return x unchanged.
    """
    return x


def _reactor() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


@rpc
def sleep(seconds: float) -> Deferred[float]:
    """
    Wait this many seconds (a number from 0 to 86400) without blocking the
    server, then return them.
    """
    from twisted.internet.task import deferLater

    # bool is an int, and NaN compares false with everything: both would
    # reach callLater, which asserts on them.
    if type(seconds) not in (int, float) or not 0 <= seconds <= _LONGEST_SLEEP:
        raise InvalidParams(
            f"sleep: seconds must be a number from 0 to {_LONGEST_SLEEP}, "
            f"not {seconds!r}"
        )
    return deferLater(_reactor(), seconds, lambda: seconds)


_LONGEST_SLEEP = 86400


@rpc
async def ticks(n: int, every: float) -> AsyncGenerator[int, None]:
    """
    A stream: the numbers 0 to n - 1 (at most 1000000), one every this many
    seconds (from 0 to 60).  Call it as a stream (agilerpc call --stream).
    """
    from twisted.internet.task import deferLater

    if type(n) is not int or not 0 <= n <= _MOST_TICKS:
        raise InvalidParams(f"ticks: n must be an integer from 0 to {_MOST_TICKS}")
    if type(every) not in (int, float) or not 0 <= every <= 60:
        raise InvalidParams("ticks: every must be a number from 0 to 60")
    for i in range(n):
        if every:
            await deferLater(_reactor(), every, lambda: None)
        yield i


_MOST_TICKS = 1000000
