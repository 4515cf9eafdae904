"""
agileutil's own RPC server, as its users run it, for the benchmark:

    python -m bench.agileutilserver --port 0   # prints "agileutil listening on PORT"

agileutil 0.0.26 (C{pip install agileutil==0.0.26}): its asyncio
C{TcpRpcServer} with C{add} and C{echo} registered with C{regist}, started
with C{serve()}.  Its C{serve()} passes C{loop=} to C{asyncio.start_server},
an argument Python 3.10 removed; L{shim} drops that argument (and prints the
port the server was given, which C{serve()} does not), and changes nothing
else.  bench/README.md says why.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def add(a: Any, b: Any) -> Any:
    """
    Return C{a + b}.
    """
    return a + b


def echo(value: Any) -> Any:
    """
    Return C{value} unchanged.
    """
    return value


def shim() -> None:
    """
    Let agileutil 0.0.26's C{TcpRpcServer.serve} run on Python 3.10 to
    3.13: C{asyncio.start_server} no longer takes C{loop=}, so drop it
    (C{serve()} passes the loop it runs, the current one, which is what
    C{start_server} uses without it), and print the bound port once
    listening.
    """
    original = asyncio.start_server

    async def startServer(*args: Any, loop: Any = None, **kwargs: Any) -> Any:
        server = await original(*args, **kwargs)
        port = server.sockets[0].getsockname()[1]
        print(f"agileutil listening on {port}", flush=True)
        return server

    asyncio.start_server = startServer  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    """
    Serve on 127.0.0.1 until killed.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args(argv)
    shim()
    from agileutil.rpc.server import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        TcpRpcServer,
    )

    # serve() calls asyncio.get_event_loop() outside a running loop, which
    # warns from Python 3.12 on when no loop was set: set one, as a script
    # written for 3.12 would.
    asyncio.set_event_loop(asyncio.new_event_loop())
    server = TcpRpcServer("127.0.0.1", options.port)
    server.regist(add)
    server.regist(echo)
    server.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
