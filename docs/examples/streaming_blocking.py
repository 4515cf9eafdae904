"""
Streams with the blocking client.
"""

from agilerpc import TcpRpcClient


def main(host: str = "127.0.0.1", port: int = 9988) -> None:
    with TcpRpcClient(host, port, timeout=5) as cli:
        for item in cli.callStream(func="countdown", args=(3,)):
            print("item", item)

        for item in cli.callStream("ticks", (1000, 0.01)):
            if item == 2:
                break  # leaving the loop early cancels the stream
        print("stopped at", item)
