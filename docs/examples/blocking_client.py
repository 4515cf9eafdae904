"""
An agileutil client script, running on agilerpc: only the import changed.
No reactor: plain sockets, for scripts, threads and WSGI applications.
"""

import time

from agilerpc import TcpRpcClient  # was: from agileutil.rpc.client import TcpRpcClient


def main(host: str = "127.0.0.1", port: int = 9988, pause: float = 15) -> None:
    cli = TcpRpcClient(host, port, timeout=2)
    resp = cli.call(func="sayHello", args=("zhangsan",))
    print("resp", resp)
    time.sleep(pause)  # longer than the server's keepalive: it closes the connection
    resp = cli.call(func="sayHello", args=("zhangsan",))  # reconnects transparently
    print("resp", resp)
    cli.close()


if __name__ == "__main__":
    main()
