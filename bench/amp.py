"""
The AMP baseline: Twisted's Asynchronous Messaging Protocol with an C{Echo}
and an C{Add} command.

AMP caps every value at 65,535 bytes, so it cannot echo 64 KiB (65,536
bytes): the benchmark echoes 65,535 bytes through it instead, and it has no
1 MiB or 8 MiB figures at all.  Both sides set C{TCP_NODELAY}, as agilerpc
does.

    python -m bench.amp --port 0      # prints "amp listening on PORT"
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, ClassVar

from twisted.internet.protocol import Factory
from twisted.protocols import amp

# The largest value AMP can carry.
MAX_VALUE = 65535


class Echo(amp.Command):
    """
    Return C{value} unchanged.
    """

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"value", amp.String())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"value", amp.String())]


class Add(amp.Command):
    """
    Return C{a + b} as C{total}.
    """

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"a", amp.Integer()),
        (b"b", amp.Integer()),
    ]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"total", amp.Integer())]


class BenchAMP(amp.AMP):
    """
    An AMP connection with C{TCP_NODELAY}; it answers L{Echo} and L{Add}.
    """

    # Always connected to a stream transport while it runs.
    transport: Any

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:  # not on in-memory test transports
            setNoDelay(True)

    @Echo.responder
    def echo(self, value: bytes) -> dict[str, bytes]:
        return {"value": value}

    @Add.responder
    def add(self, a: int, b: int) -> dict[str, int]:
        return {"total": a + b}


class AmpServerFactory(Factory):
    """
    Builds L{BenchAMP} server connections.
    """

    protocol = BenchAMP
    noisy = False


def main(argv: list[str] | None = None) -> None:
    """
    Serve on 127.0.0.1 until killed; print the port once listening.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args(argv)
    from twisted.internet import reactor

    port = reactor.listenTCP(
        options.port,
        AmpServerFactory(),  # type: ignore[arg-type]
        backlog=1024,
        interface="127.0.0.1",
    )
    print(f"amp listening on {port.getHost().port}", flush=True)  # type: ignore[attr-defined]
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
