"""
The longest a single legal request can hold the reactor while it is decoded.

    python -m bench.stall [--passes N]

Builds requests of the largest size (8 MiB) and shape the default limits
allow (at most 65,536 arrays and maps: C{--max-containers}), each made of the
values that are slowest to build, and times L{agilerpc._wire.parseClientMessage}
on each (best and median of C{N} passes, in milliseconds), then one request
over the container limit, which is refused after building at most the limit.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator

from agilerpc import InvalidRequest, _wire

_SIZE = _wire.DEFAULT_MAX_MESSAGE_SIZE
_CONTAINERS = _wire.DEFAULT_MAX_CONTAINERS


def _request(elements: bytes, count: int) -> bytes:
    """
    The payload of C{echo(x)}, C{x} an array of C{count} values whose bytes
    are C{elements}.
    """
    return b"\x94\x00\x01\xa4echo\x91\xdd" + count.to_bytes(4, "big") + elements


def cases() -> Iterator[tuple[str, bytes]]:
    """
    The worst cases: C{(name, payload)}, each at most 8 MiB.
    """
    n = _SIZE - 20
    yield "8M nils", _request(b"\xc0" * n, n)
    yield "8M small integers", _request(b"\x05" * n, n)
    yield "8M empty strs", _request(b"\xa0" * n, n)
    arrays = _CONTAINERS - 3  # the message, args and x are arrays too
    yield (
        f"{arrays} empty arrays and nils",
        _request(b"\x90" * arrays + b"\xc0" * (n - arrays), n),
    )
    keys = (n // arrays - 3) // 4
    one = b"\xde" + keys.to_bytes(2, "big")
    one += b"".join(b"\xcd" + i.to_bytes(2, "big") + b"\xc0" for i in range(keys))
    yield f"{arrays} maps of {keys} integer keys", _request(one * arrays, arrays)
    yield "8M empty arrays (over the limit)", _request(b"\x90" * n, n)


def measure(payload: bytes, passes: int) -> tuple[float, float, str]:
    """
    The best and median time to parse C{payload}, in milliseconds, and what
    the parser made of it.
    """
    times = []
    outcome = "accepted"
    for _ in range(passes):
        start = time.perf_counter()
        try:
            _wire.parseClientMessage(payload)
        except InvalidRequest as e:
            outcome = f"refused: {e.message}"
        times.append(time.perf_counter() - start)
    return min(times) * 1e3, statistics.median(times) * 1e3, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--passes", type=int, default=3)
    options = parser.parse_args()
    for name, payload in cases():
        assert len(payload) <= _SIZE, name
        best, median, outcome = measure(payload, options.passes)
        print(f"{name}: best {best:.0f} ms, median {median:.0f} ms ({outcome})")


if __name__ == "__main__":
    main()
