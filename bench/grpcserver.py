"""
A grpcio server of C{add} and C{echo}, for the benchmark:

    python -m bench.grpcserver --port 0          # prints "grpcio listening on PORT"
    python -m bench.grpcserver --port 0 --aio    # grpc.aio instead

No code generation: a generic handler (C{grpc.method_handlers_generic_handler})
of two unary-unary methods, C{/bench.Rpc/Add} and C{/bench.Rpc/Echo}, whose
requests are the msgpack-encoded argument list and whose responses are the
msgpack-encoded result (grpcio calls C{msgpack.unpackb} and C{msgpack.packb}
as the method's deserializer and serializer).  By default grpcio's
synchronous server with a thread pool of L{WORKERS} threads; with C{--aio},
C{grpc.aio}'s server on one asyncio loop.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgpack

SERVICE = "bench.Rpc"
ADD = f"/{SERVICE}/Add"
ECHO = f"/{SERVICE}/Echo"

#: The synchronous server's thread pool.
WORKERS = 8

#: Enough for the largest echo the benchmark sends to grpcio (64 KiB), with
#: room; grpcio's default receive limit is 4 MiB.
MAX_MESSAGE = 32 * 1024 * 1024

OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


def add(request: list[Any], context: Any) -> Any:
    a, b = request
    return a + b


def echo(request: list[Any], context: Any) -> Any:
    (value,) = request
    return value


async def addAsync(request: list[Any], context: Any) -> Any:
    a, b = request
    return a + b


async def echoAsync(request: list[Any], context: Any) -> Any:
    (value,) = request
    return value


def handler(aio: bool) -> Any:
    """
    The generic handler of C{Add} and C{Echo}.
    """
    import grpc  # type: ignore[import-untyped]

    def unary(behaviour: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=msgpack.unpackb,
            response_serializer=msgpack.packb,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Add": unary(addAsync if aio else add),
            "Echo": unary(echoAsync if aio else echo),
        },
    )


def serveSync(port: int) -> None:
    from concurrent import futures

    import grpc

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKERS), options=OPTIONS
    )
    server.add_generic_rpc_handlers((handler(False),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"grpcio listening on {bound}", flush=True)
    server.wait_for_termination()


def serveAio(port: int) -> None:
    import asyncio

    import grpc

    async def serve() -> None:
        server = grpc.aio.server(options=OPTIONS)
        server.add_generic_rpc_handlers((handler(True),))
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"grpcio listening on {bound}", flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


def main(argv: list[str] | None = None) -> None:
    """
    Serve on 127.0.0.1 until killed.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--aio", action="store_true", help="grpc.aio's server")
    options = parser.parse_args(argv)
    (serveAio if options.aio else serveSync)(options.port)


if __name__ == "__main__":
    main(sys.argv[1:])
