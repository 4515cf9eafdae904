"""
The bare baseline: the smallest C{Int32StringReceiver} + msgpack server and
pipelining Deferred client that speak agilerpc's request/response shape
(C{[0, msgid, method, args]} answered by C{[1, msgid, error, result]}), with
no hello, no keepalive and no limits beyond a raised C{MAX_LENGTH}: the
design's ceiling.

Both sides set C{TCP_NODELAY}, as agilerpc does, so that the comparison is
about the code, not Nagle's algorithm.

    python -m bench.bare --port 0     # prints "bare listening on PORT"
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver

# Large enough for the 8 MiB echo (Int32StringReceiver's default is 99,999).
MAX_LENGTH = 32 * 1024 * 1024

_HEADER = struct.Struct(">I")


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


HANDLERS: dict[str, Callable[..., Any]] = {"add": add, "echo": echo}


class BareServerProtocol(Int32StringReceiver):
    """
    Answer each request frame with the result of its handler, or with an
    error map naming the exception.
    """

    MAX_LENGTH = MAX_LENGTH
    # Always connected to a stream transport while it runs.
    transport: Any

    def connectionMade(self) -> None:
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:  # not on in-memory test transports
            setNoDelay(True)

    def stringReceived(self, string: bytes) -> None:
        _, msgid, method, args = msgpack.unpackb(string)
        try:
            result = HANDLERS[method](*args)
        except Exception as e:
            response = [1, msgid, {"type": type(e).__name__, "message": str(e)}, None]
        else:
            response = [1, msgid, None, result]
        self.sendString(msgpack.packb(response))  # type: ignore[no-untyped-call]


class BareServerFactory(Factory):
    """
    Builds L{BareServerProtocol}s.
    """

    protocol = BareServerProtocol
    noisy = False


class BareError(Exception):
    """
    A bare server's error response.
    """


class BareClientProtocol(Int32StringReceiver):
    """
    A pipelining Deferred client: any number of calls in flight, matched to
    their responses by msgid.
    """

    MAX_LENGTH = MAX_LENGTH
    # Always connected to a stream transport while it runs.
    transport: Any

    def __init__(self) -> None:
        self._pending: dict[int, Deferred[Any]] = {}
        self._nextMsgid = 0

    def connectionMade(self) -> None:
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:  # not on in-memory test transports
            setNoDelay(True)

    def callRemote(self, method: str, *args: Any) -> Deferred[Any]:
        """
        Call C{method(*args)}; a Deferred that fires with its result or fails
        with L{BareError}.
        """
        msgid = self._nextMsgid
        self._nextMsgid = msgid + 1
        d: Deferred[Any] = Deferred()
        self._pending[msgid] = d
        self.sendString(  # type: ignore[no-untyped-call]
            msgpack.packb([0, msgid, method, list(args)])
        )
        return d

    def stringReceived(self, string: bytes) -> None:
        _, msgid, error, result = msgpack.unpackb(string)
        d = self._pending.pop(msgid)
        if error is None:
            d.callback(result)
        else:
            d.errback(BareError(error))


class BareBlockingClient:
    """
    A blocking bare client on a plain socket: one call at a time.
    """

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self._sock = socket.create_connection((host, port), timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._nextMsgid = 0

    def call(self, method: str, args: tuple[Any, ...] = ()) -> Any:
        """
        Call C{method(*args)} and return its result.

        @raise BareError: if the server answered with an error.
        @raise EOFError: if the server closed the connection.
        """
        msgid = self._nextMsgid
        self._nextMsgid = msgid + 1
        payload = msgpack.packb([0, msgid, method, list(args)])
        self._sock.sendall(_HEADER.pack(len(payload)) + payload)
        buffer = self._buffer
        while True:
            if len(buffer) >= 4:
                (length,) = _HEADER.unpack_from(buffer)
                if len(buffer) >= 4 + length:
                    response = msgpack.unpackb(buffer[4 : 4 + length])
                    del buffer[: 4 + length]
                    break
            chunk = self._sock.recv(262144)
            if not chunk:
                raise EOFError("the bare server closed the connection")
            buffer += chunk
        _, answered, error, result = response
        assert answered == msgid, (answered, msgid)
        if error is not None:
            raise BareError(error)
        return result

    def close(self) -> None:
        """
        Close the socket.
        """
        self._sock.close()


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
        BareServerFactory(),  # type: ignore[arg-type]
        backlog=1024,
        interface="127.0.0.1",
    )
    print(f"bare listening on {port.getHost().port}", flush=True)  # type: ignore[attr-defined]
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
