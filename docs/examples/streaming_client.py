"""
Taking a stream's items with the Twisted client.
"""

from __future__ import annotations

from typing import Any

from agilerpc import RpcClient


async def main(reactor: Any, host: str = "127.0.0.1", port: int = 9988) -> None:
    client = RpcClient(reactor, host, port, timeout=10)
    try:
        # One item at a time, as an async iterator; then the stream's result.
        stream = client.callStream("countdown", 3)
        async for item in stream:
            print("item", item)
        print("result", stream.result)

        # Every item handed to a function as it arrives (no Deferred per item).
        items: list[int] = []
        result = await client.callStream("countdown", 5).consume(items.append)
        print(items, result)

        # Stopping early: the server closes the handler's generator.
        ticks = client.callStream("ticks", 1000, 0.01)
        async for item in ticks:
            if item == 2:
                ticks.cancel()
                break
        print("stopped at", item)
    finally:
        await client.close()
