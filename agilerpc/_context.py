"""
The call a handler is answering: L{currentCall} and its L{CallContext}.

The server sets L{current} (a L{contextvars.ContextVar}) while it runs a
handler, to C{(request, protocol, expires)}, a tuple that costs less to make
than an object; L{currentCall} wraps it in a L{CallContext} when a handler
asks.  Python carries a context variable into the coroutines and
C{inlineCallbacks} generators a handler starts, and the server carries it
into thread handlers and stream generators; callbacks added to a plain
L{Deferred} run in whatever context fires them, so a handler that needs its
call there reads it first (C{call = currentCall()}) and closes over it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

#: While a handler runs: C{(request, protocol, expires)}, where C{request}
#: is the L{agilerpc._wire.Request} (or notification) being answered,
#: C{protocol} has the C{peer} and the C{clock} (its factory's reactor), and
#: C{expires} is when the call's deadline passes on that clock, or L{None}.
current: ContextVar[tuple[Any, Any, float | None] | None] = ContextVar(
    "agilerpc.currentCall", default=None
)

_NO_METADATA: Mapping[str, str | bytes] = MappingProxyType({})


class CallContext:
    """
    What a handler knows of the call it is answering.

    @ivar method: the method's name, as the caller sent it.
    @ivar peer: the caller's address (an L{twisted.internet.interfaces.IAddress}),
        or L{None} when the server does not know it.
    @ivar metadata: the call's metadata: str keys, str or bytes values (empty
        when the caller sent none).  Read only: do not change it.
    """

    __slots__ = ("_clock", "_expires", "metadata", "method", "peer")

    def __init__(
        self,
        method: str,
        peer: Any,
        metadata: Mapping[str, str | bytes],
        expires: float | None,
        clock: Any,
    ) -> None:
        self.method = method
        self.peer = peer
        self.metadata = metadata
        self._expires = expires
        self._clock = clock

    @property
    def deadline(self) -> float | None:
        """
        The seconds left before the call's deadline (0 once it has passed),
        or L{None} when it has none: neither its caller nor the server's
        C{--max-call-time} set one.  When it passes, the server cancels the
        call and answers C{DeadlineExceeded}.
        """
        if self._expires is None:
            return None
        left: float = self._expires - self._clock.seconds()
        return max(0.0, left)

    def __repr__(self) -> str:
        return (
            f"<CallContext {self.method} from {self.peer}, deadline "
            f"{self.deadline}, {len(self.metadata)} metadata>"
        )


def currentCall() -> CallContext:
    """
    The call the running handler is answering: its method, peer, metadata
    and deadline.

    It is there in the handler's body, in the coroutines and
    C{inlineCallbacks} generators it runs (across every C{await} and
    C{yield}), in a thread handler's thread, and in a stream's generator.
    A callback added to a plain
    L{Deferred <twisted.internet.defer.Deferred>} runs when that Deferred
    fires, outside the handler: read C{currentCall()} in the handler and use
    what it returned there.

    @raise LookupError: outside a handler.
    """
    running = current.get()
    if running is None:
        raise LookupError(
            "currentCall() is only available while an agilerpc handler runs "
            "(in a Deferred callback, use the CallContext the handler read)"
        )
    request, protocol, expires = running
    metadata = getattr(request, "metadata", None)
    return CallContext(
        request.method,
        protocol.peer,
        _NO_METADATA if metadata is None else metadata,
        expires,
        protocol.factory.reactor,
    )
