"""
Streaming: how fast a server's stream of items reaches a client.

    python -m bench.streams [--items N] [--size BYTES] [--repeats R] [--window W]

Three systems, each a server process and a client process on 127.0.0.1, in
interleaved repeats: agilerpc (C{twistd -n agilerpc}, a generator handler;
the Twisted client's L{RpcStream.consume}), a bare push loop (an
C{Int32StringReceiver} that writes the same C{[4, msgid, item]} frames as
fast as its transport takes them, pausing when the transport says so, and a
client that decodes and counts them: the ceiling, with no credit), and
grpcio's server streaming (its synchronous server with a thread pool, a
generic handler of msgpack-encoded bytes: no code generation).  Each client
times from its request to the last item.  Prints items/s and MiB/s, and
agilerpc's ratio to each in the same repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import msgpack

from . import procs

_HEADER_SIZE = 4


# -- the bare push loop ---------------------------------------------------------


def serveBare(port: int) -> None:
    """
    A server that answers C{[0, msgid, "blobs", [n, size]]} with C{n} frames
    C{[4, msgid, item]} then C{[1, msgid, None, None]}, as fast as its
    transport takes them.
    """
    from twisted.internet import reactor
    from twisted.internet.interfaces import IPushProducer
    from twisted.internet.protocol import ServerFactory
    from twisted.protocols.basic import Int32StringReceiver
    from zope.interface import implementer

    @implementer(IPushProducer)
    class Pusher(Int32StringReceiver):
        MAX_LENGTH = 32 * 1024 * 1024
        left = 0
        paused = False

        def connectionMade(self) -> None:
            self.transport.registerProducer(self, True)  # type: ignore[union-attr]
            self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

        def stringReceived(self, string: bytes) -> None:
            _, self.msgid, _, (n, size) = msgpack.unpackb(string)
            self.left = n
            self.item = b"x" * size
            reactor.callLater(0, self.push)

        def push(self) -> None:
            pack = msgpack.packb
            while self.left and not self.paused:
                payload = pack([4, self.msgid, self.item])
                self.sendString(payload)  # type: ignore[no-untyped-call]
                self.left -= 1
            if not self.left and not self.paused:
                self.sendString(msgpack.packb([1, self.msgid, None, None]))  # type: ignore[no-untyped-call]
                self.left = -1

        def pauseProducing(self) -> None:
            self.paused = True

        def resumeProducing(self) -> None:
            self.paused = False
            if self.left >= 0:
                reactor.callLater(0, self.push)

        def stopProducing(self) -> None:
            self.paused = True

    factory = ServerFactory()
    factory.protocol = Pusher
    listening = reactor.listenTCP(port, factory, interface="127.0.0.1")
    print(
        f"pushbare listening on {listening.getHost().port}",  # type: ignore[attr-defined]
        flush=True,
    )
    reactor.run()


def clientBare(port: int, items: int, size: int) -> float:
    """
    Ask the bare push loop for C{items} items of C{size} bytes; the seconds
    until the last came.
    """
    from twisted.internet import reactor
    from twisted.internet.protocol import ClientFactory
    from twisted.protocols.basic import Int32StringReceiver

    result: list[float] = []

    class Counter(Int32StringReceiver):
        MAX_LENGTH = 32 * 1024 * 1024
        count = 0

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
            self.started = time.perf_counter()
            self.sendString(msgpack.packb([0, 1, "blobs", [items, size]]))  # type: ignore[no-untyped-call]

        def stringReceived(self, string: bytes) -> None:
            message = msgpack.unpackb(string)
            if message[0] == 4:
                self.count += 1
            else:
                result.append(time.perf_counter() - self.started)
                assert self.count == items, (self.count, items)
                self.transport.loseConnection()  # type: ignore[union-attr]

        def connectionLost(self, reason: Any = None) -> None:
            reactor.stop()

    factory = ClientFactory()
    factory.protocol = Counter
    reactor.connectTCP("127.0.0.1", port, factory)
    reactor.run()
    return result[0]


# -- agilerpc ---------------------------------------------------------------------


def clientAgilerpc(port: int, items: int, size: int, window: int) -> float:
    """
    Stream C{items} items of C{size} bytes from C{twistd agilerpc}'s
    C{blobs} with L{RpcClient.callStream} and L{RpcStream.consume}.
    """
    from twisted.internet import defer, reactor

    from agilerpc import RpcClient

    result: list[float] = []

    async def run() -> None:
        client = RpcClient(reactor, "127.0.0.1", port, streamWindow=window)
        await client.callRemote("echo", 1)
        count = [0]

        def take(item: bytes) -> None:
            count[0] += 1

        started = time.perf_counter()
        await client.callStream("blobs", items, size).consume(take)
        result.append(time.perf_counter() - started)
        assert count[0] == items, (count[0], items)
        await client.close()

    def stop(outcome: Any) -> Any:
        reactor.stop()
        return outcome

    defer.ensureDeferred(run()).addBoth(stop)
    reactor.run()
    return result[0]


# -- grpcio -----------------------------------------------------------------------

_METHOD = "/bench.Streams/Blobs"


def serveGrpc(port: int) -> None:
    """
    grpcio's synchronous server, a generic unary-stream handler whose items
    are bytes (the request is msgpack-encoded C{[n, size]}).
    """
    from concurrent import futures

    import grpc  # type: ignore[import-untyped]

    def blobs(request: bytes, context: Any) -> Any:
        n, size = msgpack.unpackb(request)
        item = b"x" * size
        for _ in range(n):
            yield item

    handler = grpc.method_handlers_generic_handler(
        "bench.Streams",
        {"Blobs": grpc.unary_stream_rpc_method_handler(blobs)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"grpc listening on {bound}", flush=True)
    server.wait_for_termination()


def clientGrpc(port: int, items: int, size: int) -> float:
    """
    Stream C{items} items of C{size} bytes from grpcio's server.
    """
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        call = channel.unary_stream(_METHOD)
        started = time.perf_counter()
        count = 0
        for _ in call(msgpack.packb([items, size])):
            count += 1
        took = time.perf_counter() - started
    assert count == items, (count, items)
    return took


# -- the run ------------------------------------------------------------------------


def _client(kind: str, port: int, items: int, size: int, window: int) -> float:
    """
    Run one client in its own process; the seconds it took.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([procs.ROOT_DIR, procs.AGILERPC_PARENT])
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.streams",
            f"client-{kind}",
            str(port),
            str(items),
            str(size),
            str(window),
        ],
        env=env,
        capture_output=True,
        check=True,
        timeout=600,
    )
    return float(out.stdout.decode().split()[-1])


def measure(
    items: int, size: int, repeats: int, window: int, kinds: list[str]
) -> dict[str, Any]:
    """
    C{repeats} interleaved runs of each kind; per kind the seconds of each
    run, and agilerpc's ratios to the others within each repeat.
    """
    servers = {kind: procs.startServer(kind) for kind in kinds}
    try:
        seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(repeats):
            for kind in kinds:
                seconds[kind].append(
                    _client(kind, servers[kind].port, items, size, window)
                )
    finally:
        for server in servers.values():
            server.stop()
    report: dict[str, Any] = {"items": items, "size": size, "window": window}
    for kind in kinds:
        took = statistics.median(seconds[kind])
        report[kind] = {
            "seconds": seconds[kind],
            "items/s": items / took,
            "MiB/s": items * size / took / 2**20,
        }
    for kind in kinds:
        if kind != "agilerpc" and "agilerpc" in seconds:
            ratios = [
                other / mine
                for mine, other in zip(seconds["agilerpc"], seconds[kind], strict=True)
            ]
            report[f"agilerpc/{kind}"] = statistics.median(ratios)
    return report


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("serve-"):
        port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 0
        {"serve-bare": serveBare, "serve-grpc": serveGrpc}[argv[0]](port)
        return
    if argv and argv[0].startswith("client-"):
        port, items, size, window = (int(a) for a in argv[1:5])
        kind = argv[0][len("client-") :]
        if kind == "agilerpc":
            took = clientAgilerpc(port, items, size, window)
        elif kind == "pushbare":
            took = clientBare(port, items, size)
        else:
            took = clientGrpc(port, items, size)
        print(took)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument(
        "--kinds", default="agilerpc,pushbare,grpc", help="comma-separated"
    )
    options = parser.parse_args(argv)
    report = measure(
        options.items,
        options.size,
        options.repeats,
        options.window,
        options.kinds.split(","),
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
