"""
Server addresses, as the command line and both clients take them: one
parser, L{parseAddress}.
"""

from __future__ import annotations

from typing import Any


def checkPort(port: Any) -> int:
    """
    C{port} if it is a TCP port number a client can connect to (1-65535).

    @raise ValueError: if it is not.
    """
    if type(port) is not int or not 0 < port < 65536:
        raise ValueError(f"a port is an integer from 1 to 65535, not {port!r}")
    return port


def parseAddress(address: str | tuple[Any, ...] | list[Any]) -> tuple[str, int]:
    """
    A C{(host, port)} pair from C{"host:port"} (C{"[address]:port"} for an
    IPv6 address) or from a C{(host, port)} pair.

    A bare IPv6 address with a port (C{"::1:9988"}) is refused: where the
    address ends is a guess.  In a pair, the host may be a bare IPv6
    address (C{("::1", 9988)}).

    @raise ValueError: if C{address} is neither, or the port is not 1-65535.
    """
    if isinstance(address, str):
        host, sep, digits = address.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            # A bare IPv6 address: where it ends is a guess.
            host = ""
        if not sep or not host or not digits.isdigit() or not 0 < int(digits) < 65536:
            raise ValueError(
                f"expected HOST:PORT, e.g. 127.0.0.1:9988, not {address!r} "
                "(an IPv6 address is written [ADDRESS]:PORT; a port is 1-65535)"
            )
        return host, int(digits)
    if len(address) != 2:
        raise ValueError(f"expected a (host, port) pair, not {address!r}")
    host, port = address
    if not isinstance(host, str) or not host:
        raise ValueError(f"a host is a non-empty string, not {host!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, checkPort(port)
