"""
An agileutil server script, running on agilerpc: only the import changed.

    python blocking_server.py [port [keepalive]]
"""

import sys

from agilerpc import TcpRpcServer  # was: from agileutil.rpc.server import TcpRpcServer


def sayHello(name: str) -> str:
    return "hello " + name


def main(port: int = 9988, keepalive: float = 10) -> None:
    s = TcpRpcServer("127.0.0.1", port)
    s.setKeepaliveTimeout(keepalive)
    s.regist(sayHello)
    s.serve()  # runs the reactor; SIGINT/SIGTERM stop it gracefully


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9988
    keepalive = float(sys.argv[2]) if len(sys.argv) > 2 else 10
    main(port, keepalive)
