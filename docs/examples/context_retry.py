"""
Safe retries: a call lost with its connection may have run, so only
methods declared safe to run twice are sent again.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from agilerpc import NotIdempotent, RetryPolicy, RpcClient, rpc

USERS = {42: "zhangsan"}
BALANCE = {"total": 0}


@rpc(idempotent=True)
def getUser(uid: int) -> str:
    """
    The name of user uid: a read, safe to run twice.
    """
    return USERS[uid]


@rpc
def charge(amount: int) -> int:
    """
    Add amount to the balance: running it twice charges twice.
    """
    BALANCE["total"] += amount
    return BALANCE["total"]


async def main(reactor: Any, host: str = "127.0.0.1", port: int = 9988) -> list[Any]:
    client = RpcClient(
        reactor,
        host,
        port,
        timeout=5,
        idempotent={"getUser"},  # retried when lost in flight
        retryPolicy=RetryPolicy(maxAttempts=3, initialBackoff=0.05, maxBackoff=1.0),
    )
    answers = [await client.callRemote("getUser", 42)]
    answers.append(await client.callRemote("charge", 5))  # never retried
    await client.describe()  # learn which methods the server says are safe
    try:
        await client.withCallOptions(idempotent=True).callRemote("charge", 5)
    except NotIdempotent as e:
        answers.append(e.type)  # refused here, unsent: charge is not idempotent
    answers.append(client.stats.retries)
    await client.close()
    return answers


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
