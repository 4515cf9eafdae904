"""
Metadata: a map of str keys to str or bytes values that travels with a
call, next to its arguments, for the handler to read with currentCall().
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from agilerpc import MetadataTooLarge, RpcClient, TcpRpcClient, currentCall, rpc


@rpc
def whoami() -> dict[str, Any]:
    """
    What the server knows of this call: its method, tenant and request id.
    """
    call = currentCall()
    return {
        "method": call.method,
        "tenant": call.metadata.get("tenant", "default"),
        "request-id": call.metadata.get("request-id"),
    }


async def main(reactor: Any, host: str = "127.0.0.1", port: int = 9988) -> list[Any]:
    client = RpcClient(reactor, host, port, timeout=10)
    caller = client.withCallOptions(metadata={"tenant": "acme", "request-id": "r-17"})
    answers = [await caller.callRemote("whoami")]
    answers.append(await client.callRemote("whoami"))  # no metadata
    try:
        # 8 KiB at most (the server's --max-metadata-size, in its hello)
        await client.withCallOptions(metadata={"blob": "x" * 10_000}).callRemote(
            "whoami"
        )
    except MetadataTooLarge as e:
        answers.append(e.type)  # refused here, never sent
    await client.close()
    return answers


def blocking(host: str = "127.0.0.1", port: int = 9988) -> Any:
    with TcpRpcClient(host, port, timeout=2) as cli:
        return cli.call(func="whoami", metadata={"tenant": "acme"})


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
