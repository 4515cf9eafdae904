"""
Deadlines: the caller's timeout travels with the call, the handler reads
the time it has left, and the server cancels the call when it runs out.

Serve the handlers with:

    twistd -n agilerpc --port 9988 --max-call-time 2 --module context_deadline
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from agilerpc import (
    CallTimeout,
    DeadlineExceeded,
    RpcClient,
    RpcError,
    currentCall,
    rpc,
)


def _reactor() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


@rpc
async def report(seconds: float) -> str:
    """
    Build a report that takes this many seconds, if there is time for it.
    """
    call = currentCall()
    if call.deadline is not None and call.deadline < seconds:
        # Refuse at once rather than be cancelled half way through.
        raise RpcError("TooLate", f"{seconds} s needed, {call.deadline:.1f} s left")
    await task.deferLater(_reactor(), seconds, lambda: None)
    return f"report of {seconds} s"


@rpc
async def wait(seconds: float) -> float:
    """
    Sleep, ignoring any deadline; the server cancels it when one passes.
    """
    await task.deferLater(_reactor(), seconds, lambda: None)
    return seconds


async def main(reactor: Any, host: str = "127.0.0.1", port: int = 9988) -> list[str]:
    outcomes = []
    client = RpcClient(reactor, host, port)  # no timeout for every call
    outcomes.append(await client.callRemote("report", 0.1))
    quick = client.withCallOptions(timeout=1.0)  # these calls: 1 s each
    try:
        await quick.callRemote("report", 5)
    except RpcError as e:
        outcomes.append(e.type)  # TooLate: the handler saw 1 s left
    try:
        await quick.callRemote("wait", 5)
    except CallTimeout:
        outcomes.append("CallTimeout")  # and the server cancelled the call
    try:
        await client.callRemote("wait", 60)  # the server's --max-call-time cuts it
    except DeadlineExceeded as e:
        outcomes.append(e.type)
    await client.close()
    return outcomes


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
