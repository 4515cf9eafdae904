"""
The Twisted client's Python cost per call, in process: no sockets, no
reactor, no server.

    python -m bench.clientloop [--calls N] [--passes P] [--metadata]

Makes C{N} sequential C{add(i, 1)} calls with an L{agilerpc.RpcClient}
whose one connection runs over a L{StringTransport}, and answers each
before the next with a response frame prepared in advance, so only the
client's work is timed: C{callRemote} to the request frame written, then the
response bytes to the Deferred fired.  Prints the microseconds per call
(best of C{P} passes).  With C{--metadata}, each call carries two small
metadata entries (L{METADATA}), through L{agilerpc.RpcClient.withCallOptions}.  This is the figure the client hot-path commits quote
(as instructions per call, from C{valgrind --tool=callgrind} at two values
of C{N}); C{python -m bench} measures real connections.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import msgpack
from twisted.internet.testing import MemoryReactorClock, StringTransport

from agilerpc import RpcClient, _wire

_HEADER = _wire.HEADER

#: What C{--metadata} sends with each call: a request id and a tenant.
METADATA: dict[str, str | bytes] = {"request-id": "r-0123456789", "tenant": "acme"}


def connectedClient() -> tuple[RpcClient, Any, StringTransport]:
    """
    An L{RpcClient} with one connection, ready (its hello received), over a
    L{StringTransport}: the client, its protocol and the transport.
    """
    reactor = MemoryReactorClock()
    client = RpcClient(reactor, "127.0.0.1", 1)
    client.connect()
    factory = reactor.tcpClients[0][2]
    protocol: Any = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(
        _wire.frame(
            _wire.encodeHello(
                {"protocol": _wire.PROTOCOL_VERSION, "features": list(_wire.FEATURES)}
            )
        )
    )
    transport.clear()
    return client, protocol, transport


def responseFrames(calls: int) -> list[bytes]:
    """
    The response frames to C{calls} calls, in order, encoded with msgpack
    itself so that their cost does not change with agilerpc's encoder (an
    instruction count subtracts it).
    """
    return [_HEADER.pack(len(p)) + p for p in map(_response, range(calls))]


def _response(msgid: int) -> bytes:
    return msgpack.packb([_wire.RESPONSE, msgid, None, msgid + 1])  # type: ignore[no-any-return]


def run(calls: int, metadata: bool = False) -> float:
    """
    Make C{calls} calls on a fresh client, each answered before the next
    (with L{METADATA}, if C{metadata}); return the seconds they took.
    """
    client, protocol, transport = connectedClient()
    responses = responseFrames(calls)
    callRemote = (
        client.withCallOptions(metadata=METADATA).callRemote
        if metadata
        else client.callRemote
    )
    dataReceived = protocol.dataReceived
    clear = transport.clear
    results: list[Any] = []
    start = time.perf_counter()
    for i in range(calls):
        d = callRemote("add", i, 1)
        dataReceived(responses[i])
        clear()  # type: ignore[no-untyped-call]
        d.addCallback(results.append)
    elapsed = time.perf_counter() - start
    if results != [i + 1 for i in range(calls)]:
        raise AssertionError("a call was not answered with its result")
    return elapsed


def measure(calls: int, passes: int = 5, metadata: bool = False) -> float:
    """
    The best time per call over C{passes} runs, in microseconds.
    """
    return min(run(calls, metadata) for _ in range(passes)) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument(
        "--metadata", action="store_true", help="send two metadata entries per call"
    )
    options = parser.parse_args()
    perCall = measure(options.calls, options.passes, options.metadata)
    print(f"{perCall:.2f} us per call")


if __name__ == "__main__":
    main()
