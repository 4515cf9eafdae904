"""
How one call is made: L{CallOptions}, checked once for both clients and the
command line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from . import _wire


def checkTimeout(timeout: object, name: str = "timeout") -> float | None:
    """
    Check a call's timeout: L{None}, or seconds above 0 and at most a year
    (L{_wire.MAX_DEADLINE}).  Returns it.

    @raise ValueError: if it is not one.
    """
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or math.isnan(timeout)
        or not 0 < timeout <= _wire.MAX_DEADLINE
    ):
        raise ValueError(
            f"{name} must be None or seconds above 0 and at most "
            f"{_wire.MAX_DEADLINE:.0f}, not {timeout!r}"
        )
    return float(timeout)


class CallOptions:
    """
    The options of a call (see L{agilerpc.RpcClient.withCallOptions}).

    @ivar timeout: the seconds the call may take from when it is made, or
        L{None} for the client's default.  The server is told the time left
        when the request is sent, and cancels the call when it runs out.
    @ivar metadata: str keys to str or bytes values sent with the request,
        or L{None}.
    @ivar metadataSize: the size of C{metadata} as the server's limit counts
        it (L{_wire.metadataSize}), measured once here rather than per call.
    @ivar idempotent: whether the call may run twice: if its connection is
        lost while it is in flight, the client sends it again (within its
        deadline, a few times, with backoff) instead of failing it with
        L{CallLost}.  L{None} for the client's default.
    """

    __slots__ = ("idempotent", "metadata", "metadataSize", "timeout")

    def __init__(
        self,
        timeout: float | None = None,
        metadata: Mapping[str, str | bytes] | None = None,
        idempotent: bool | None = None,
    ) -> None:
        """
        @raise ValueError: if an option is invalid: a timeout that is not a
            number above 0, metadata that is not str keys to str or bytes
            values.
        @raise TypeError: if C{idempotent} is not a bool or L{None}.
        """
        self.timeout = checkTimeout(timeout)
        self.metadata = (
            None if metadata is None else _wire.checkMetadata(dict(metadata)) or None
        )
        self.metadataSize = (
            0 if self.metadata is None else _wire.metadataSize(self.metadata)
        )
        if idempotent is not None and type(idempotent) is not bool:
            raise TypeError(
                f"idempotent must be True, False or None, not {idempotent!r}"
            )
        self.idempotent = idempotent

    def merged(self, other: CallOptions) -> CallOptions:
        """
        These options with C{other}'s on top: its timeout and idempotent
        where set, and its metadata added to these (its values win).
        """
        metadata: dict[str, str | bytes] | None = self.metadata
        if other.metadata:
            metadata = {**(metadata or {}), **other.metadata}
        return CallOptions(
            self.timeout if other.timeout is None else other.timeout,
            metadata,
            self.idempotent if other.idempotent is None else other.idempotent,
        )

    def __repr__(self) -> str:
        return (
            f"CallOptions(timeout={self.timeout!r}, metadata={self.metadata!r}, "
            f"idempotent={self.idempotent!r})"
        )


def parseMetadataPair(text: str) -> tuple[str, str]:
    """
    One metadata entry from C{KEY=VALUE} (the command line's
    C{--metadata}); the value is a str.

    @raise ValueError: if it has no C{=} or an empty key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, not {text!r}")
    return key, value
