"""
The handlers the agilerpc server serves in the benchmark, loaded by
C{twistd -n agilerpc --module rpchandlers} with this directory on
C{PYTHONPATH}: the same C{echo} and C{add} the baselines answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import agilerpc


@agilerpc.rpc
def add(a: Any, b: Any) -> Any:
    """
    Return C{a + b}.
    """
    return a + b


@agilerpc.rpc
def echo(value: Any) -> Any:
    """
    Return C{value} unchanged.
    """
    return value


@agilerpc.rpc
def blobs(n: int, size: int) -> Iterator[bytes]:
    """
    A stream of C{n} items of C{size} bytes: what the streaming scenario's
    baselines send too.
    """
    item = b"x" * size
    for _ in range(n):
        yield item
