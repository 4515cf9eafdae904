"""
An idle connection closed by the server's keepalive, invisibly to the caller.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater

from agilerpc import RpcClient


async def main(reactor: Any, host: str, port: int, idle: float) -> None:
    client = RpcClient(reactor, host, port, timeout=10)
    try:
        print(await client.callRemote("sayHello", "before"))
        await deferLater(reactor, idle, lambda: None)  # longer than --keepalive
        print("connected after the pause:", client.connected)
        print(await client.callRemote("sayHello", "after"))  # a new connection
        print("connections made:", client.stats.connects)
    finally:
        await client.close()
