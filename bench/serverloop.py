"""
The server's Python cost per request, in process: no sockets, no reactor.

    python -m bench.serverloop [--requests N] [--per-chunk K] [--metadata]

Feeds C{N} C{add(i, 1)} requests, C{K} frames per C{dataReceived} call, to an
L{agilerpc.RpcServerProtocol} over a L{StringTransport} and prints the
microseconds per request (best of 5 passes); with C{--metadata}, each request
carries two small metadata entries.  This is the figure the hot-path
commits quote; it leaves out everything a real connection adds (system calls,
the reactor), which C{python -m bench} measures.
"""

from __future__ import annotations

import argparse
import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from agilerpc import Registry, RpcServerFactory, _wire

#: What C{--metadata} sends with each request: a request id and a tenant.
METADATA: dict[str, str | bytes] = {"request-id": "r-0123456789", "tenant": "acme"}


def measure(
    requests: int, perChunk: int, passes: int = 5, metadata: bool = False
) -> float:
    """
    The best time per request over C{passes} passes, in microseconds.
    """
    registry = Registry()
    registry.register(lambda a, b: a + b, name="add")
    factory = RpcServerFactory(registry, Clock())
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)  # type: ignore[no-untyped-call]
    frames = [
        _wire.frame(
            _wire.encodeRequest(
                i, "add", [i, 1], metadata=METADATA if metadata else None
            )
        )
        for i in range(requests)
    ]
    chunks = [b"".join(frames[i : i + perChunk]) for i in range(0, requests, perChunk)]
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for chunk in chunks:
            protocol.dataReceived(chunk)
            transport.clear()
        best = min(best, time.perf_counter() - start)
    return best / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--per-chunk", type=int, default=1)
    parser.add_argument(
        "--metadata", action="store_true", help="send two metadata entries per request"
    )
    options = parser.parse_args()
    perRequest = measure(options.requests, options.per_chunk, metadata=options.metadata)
    print(f"{perRequest:.2f} us per request ({options.per_chunk} per chunk)")


if __name__ == "__main__":
    main()
