"""
The blocking client's errors, and its use as a context manager.
"""

from agilerpc import CallTimeout, MethodNotFound, RemoteError, TcpRpcClient


def main(host: str = "127.0.0.1", port: int = 9988) -> None:
    with TcpRpcClient(host, port, timeout=2) as cli:
        print(cli.call("add", (1, 2)))
        print(cli.call("add", kwargs={"a": "x", "b": "y"}))
        try:
            cli.call("nope")
        except MethodNotFound as e:
            print("MethodNotFound:", e.message)
        try:
            cli.call("add", (1, "x"))
        except RemoteError as e:
            print(e.type)  # the handler's exception, by class name
        try:
            cli.call("sleep", (5,), timeout=0.2)
        except CallTimeout:
            print("timed out; it may or may not have run")
