"""
One client, several servers; per-call options; a notification.
"""

from __future__ import annotations

from typing import Any

from agilerpc import CallTimeout, RpcClient


async def main(reactor: Any, endpoints: list[str]) -> None:
    client = RpcClient(reactor, endpoints=endpoints, timeout=10)
    try:
        # Calls go round-robin over the servers that are ready.
        answers = [await client.callRemote("sayHello", str(i)) for i in range(4)]
        print(answers)
        print(len(client.readyEndpoints), "servers ready")

        # A shorter deadline for some calls; the server is told it too.
        hurried = client.withCallOptions(timeout=0.2)
        try:
            await hurried.callRemote("sleep", 5)
        except CallTimeout as e:
            print("gave up:", e)

        # A notification: it runs on a server, and nothing answers.
        client.notify("echo", "fire and forget")
    finally:
        await client.close()
