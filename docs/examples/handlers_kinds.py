"""
Every kind of handler, and the errors a handler sends.  Serve it with
twistd -n agilerpc --module handlers_kinds
"""

from __future__ import annotations

import hashlib

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from agilerpc import InvalidParams, RpcError, rpc


def _reactor() -> IReactorTime:
    # The reactor twistd runs, looked up when a call needs it, not at import.
    from twisted.internet import reactor

    return reactor


@rpc
def add(a: int, b: int) -> int:
    """A plain value: the answer is sent at once."""
    return a + b


@rpc
def later(seconds: float, value: str) -> Deferred[str]:
    """A Deferred: the answer is sent when it fires."""
    return deferLater(_reactor(), seconds, lambda: value)


@rpc
async def twice(seconds: float, value: str) -> list[str]:
    """A coroutine: it may await Deferreds (and other coroutines)."""
    first = await later(seconds, value)
    second = await later(seconds, value)
    return [first, second]


@rpc(thread=True)
def digest(data: bytes, rounds: int) -> str:
    """Blocking work: it runs in the reactor's thread pool."""
    for _ in range(rounds):
        data = hashlib.sha256(data).digest()
    return data.hex()


# Errors: what the caller sees.


@rpc
def withdraw(balance: int, amount: int) -> int:
    """Errors: RpcError chooses what the caller sees."""
    if amount <= 0:
        raise InvalidParams(f"amount must be positive, not {amount}")
    if amount > balance:
        raise RpcError(
            "InsufficientFunds", "not enough money", {"short": amount - balance}
        )
    return balance - amount


@rpc
def divide(a: float, b: float) -> float:
    """Any other exception reaches the caller as its class name and message."""
    return a / b
