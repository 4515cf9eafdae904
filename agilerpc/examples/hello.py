"""
The example handlers: serve them with
C{twistd -n agilerpc --module agilerpc.examples.hello}.

Their docstrings are written as plain text, without epytext markup: a
server sends them to callers as they are (C{system.describe}).
"""

from __future__ import annotations

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
