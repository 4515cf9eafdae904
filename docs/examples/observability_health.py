"""
A health check in a script: system.ping answers "pong" and system.stats
says what the process that answered is doing.
"""

from __future__ import annotations

import sys
from typing import Any

from agilerpc import TcpRpcClient


def check(host: str = "127.0.0.1", port: int = 9988) -> dict[str, Any]:
    with TcpRpcClient(host, port, timeout=2) as cli:
        if cli.call("system.ping") != "pong":
            raise RuntimeError(f"{host}:{port} does not answer system.ping")
        stats: dict[str, Any] = cli.call("system.stats")
    return stats


if __name__ == "__main__":
    stats = check()
    print(
        f"pid {stats['pid']}: {stats['connections']} connections, "
        f"{stats['in_flight']} calls in flight, up {stats['uptime']:.0f} s"
    )
    sys.exit(0)
