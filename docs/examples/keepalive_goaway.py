"""
A goaway crossing a request on the wire, replayed step by step in memory
(agilerpc.testing.MemoryServer): the request after last_msgid did not run,
so the client sends it again on a new connection, and it runs once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from agilerpc import Registry, RpcClient
from agilerpc.testing import MemoryServer


def demo() -> None:
    runs: list[str] = []
    slowAnswer: Deferred[str] = Deferred()

    def slow() -> Deferred[str]:
        runs.append("slow")
        return slowAnswer

    def record(name: str) -> str:
        runs.append(name)
        return name

    registry = Registry()
    registry.register(slow)
    registry.register(record)
    server = MemoryServer(registry, keepalive=75)
    client = RpcClient(server.reactor, "server", 9988)
    answers: list[Any] = []

    client.callRemote("slow").addBoth(answers.append)
    server.flush()  # connect, hello, "slow" (msgid 0) dispatched and running
    client.callRemote("record", "b").addBoth(answers.append)  # msgid 1, on its way
    server.goaway("shutdown")  # [3, "goaway", 0, "shutdown"] crosses msgid 1
    print("answers:", answers)
    print("runs:", runs)
    print("connections:", len(server.connections))

    slowAnswer.callback("done")  # the call up to last_msgid is answered...
    server.flush()  # ...on the old connection, which then closes
    print("answers:", answers)
    print("open connections:", len(server.openConnections()))
    print("resent:", client.stats.resent)


if __name__ == "__main__":
    demo()
