"""
The Twisted client, against the example server:
twistd -n agilerpc --port 9988 --module agilerpc.examples.hello
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer, task

from agilerpc import MethodNotFound, RpcClient


async def main(reactor: Any, host: str = "127.0.0.1", port: int = 9988) -> None:
    client = RpcClient(reactor, host, port, timeout=10)
    try:
        greeting = await client.callRemote("sayHello", "zhangsan")
        print(greeting)

        # 100 calls in flight at once on one connection, answered in any order.
        sums = await defer.gatherResults(
            [client.callRemote("add", i, i) for i in range(100)]
        )
        print(sum(sums))

        try:
            await client.callRemote("nope")
        except MethodNotFound as e:
            print(e.type, e.message)
    finally:
        await client.close()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9988
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, port=port)))
