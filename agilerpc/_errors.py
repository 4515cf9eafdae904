"""
The exceptions agilerpc raises and sends.

One root, L{RpcError}, with two branches, as C{amp} has C{AmpError} and
C{RemoteAmpError}:

 - L{RemoteError} (and its standard subclasses such as L{MethodNotFound}):
   what the server sent.  Every error that crosses the wire is a map with a
   C{"type"} and a C{"message"} (and sometimes C{"data"}).
 - L{LocalError}: what the client decided by itself, without the server
   saying so: the call was too large to send (L{RequestTooLarge}), the
   queue is full, the client is closed, the connection was lost
   (L{CallLost}), the server broke the protocol (L{InvalidResponse}), or the
   call timed out (L{CallTimeout}).

A handler raises L{RpcError} itself to choose the type a caller sees.
L{MessageTooLarge} is caught either way: the server's (a L{RemoteError})
and the client's own L{RequestTooLarge} (a L{LocalError}) both derive from
it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RpcError(Exception):
    """
    An error with a wire type, a human-readable message and optional data:
    the root of every error agilerpc raises.

    Raise it from a handler to send exactly this C{type}, C{message} and
    C{data} to the caller; any other exception is sent as its class name and
    C{str(exc)}.

    @ivar type: the error's type name, e.g. C{"MethodNotFound"}.
    @ivar message: what went wrong, for people.
    @ivar data: anything msgpack can encode, or L{None}.
    """

    def __init__(self, type: str, message: str, data: Any = None) -> None:
        # Exception's, not super(): a subclass that is also an OSError (see
        # CallTimeout) must not have these taken for an errno and strerror.
        Exception.__init__(self, type, message, data)
        self.type = type
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"

    def toWire(self) -> dict[str, Any]:
        """
        The error map this error is sent as.
        """
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class RemoteError(RpcError):
    """
    A call failed with an error the server sent (or, for the standard types,
    the error the server would have sent).

    L{fromWire} picks the standard subclass for the standard types, so
    C{except MethodNotFound:} works, and plain L{RemoteError} for the rest.
    """

    @classmethod
    def fromWire(cls, error: object) -> RpcError:
        """
        Build the exception for an error map received from the wire: a
        L{RemoteError}, or an L{InvalidResponse} if C{error} is not a map.
        """
        if not isinstance(error, dict):
            return InvalidResponse(f"error is not a map: {error!r}")
        type_ = error.get("type")
        message = error.get("message")
        if not isinstance(type_, str):
            type_ = "RemoteError"
        if not isinstance(message, str):
            message = repr(message)
        data = error.get("data")
        standard = _STANDARD.get(type_)
        if standard is not None:
            return standard(message, data)
        return RemoteError(type_, message, data)


class LocalError(RpcError):
    """
    A call failed for a reason the client found by itself: nothing the
    server sent says so.  Its type is its class name; it never crosses the
    wire.
    """

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(type(self).__name__, message, data)

    def __str__(self) -> str:
        # The class name already says what happened, in a traceback.
        return self.message


class _StandardError(RemoteError):
    """
    A standard error type: its wire type is its class name.
    """

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(type(self).__name__, message, data)


class MethodNotFound(_StandardError):
    """
    No method of that name is registered.
    """


class InvalidParams(_StandardError):
    """
    The arguments do not bind to the handler's signature.
    """


class InvalidRequest(_StandardError):
    """
    A well-framed message that is not a valid message of the protocol.
    """


class MessageTooLarge(RpcError):
    """
    A message is larger than the receiver's maximum message size.

    C{except MessageTooLarge} catches both sides: L{RemoteMessageTooLarge},
    the server's error, and L{RequestTooLarge}, the client's refusal to send
    a request the server's hello says it would refuse.  A server raises this
    class itself to send the error.
    """

    def __init__(self, message: str, data: Any = None) -> None:
        RpcError.__init__(self, "MessageTooLarge", message, data)


class RemoteMessageTooLarge(MessageTooLarge, RemoteError):
    """
    The server's C{MessageTooLarge} error: it refused a message, or could
    not send an answer, because of its maximum message size.
    """


class RequestTooLarge(MessageTooLarge, LocalError):
    """
    The request is larger than the server's maximum message size (from its
    hello): it was not sent, so it did not run.
    """

    def __init__(self, message: str, data: Any = None) -> None:
        MessageTooLarge.__init__(self, message, data)


class Cancelled(_StandardError):
    """
    The call was cancelled before it finished.
    """


class ServerBusy(_StandardError):
    """
    The server refused the connection or call because it is at a limit.
    """


class Unauthorized(_StandardError):
    """
    The connection has not authenticated.
    """


class InvalidResult(_StandardError):
    """
    The handler returned a result that msgpack cannot encode.
    """


class DeadlineExceeded(_StandardError, TimeoutError):
    """
    The call's deadline passed on the server before it finished: the server
    cancelled it (a thread handler's result is dropped).  Its deadline is
    the time its caller gave it, or the server's C{--max-call-time}.

    It is also the standard library's L{TimeoutError} (with no errno), as
    L{CallTimeout}, the client's own deadline, is.
    """


_STANDARD: dict[str, Callable[[str, Any], RemoteError]] = {
    c.__name__: c
    for c in (
        MethodNotFound,
        InvalidParams,
        InvalidRequest,
        Cancelled,
        ServerBusy,
        Unauthorized,
        InvalidResult,
        DeadlineExceeded,
    )
}
_STANDARD["MessageTooLarge"] = RemoteMessageTooLarge


class InvalidResponse(LocalError):
    """
    The server sent something that is not a valid message of the protocol.

    Before the hello, the connection attempt fails with it.  For a response
    that cannot be decoded but names a call in flight, that one call fails
    with it (it may have run) and the connection goes on.
    """


class CallLost(LocalError):
    """
    The connection closed (or broke the protocol and was closed) while the
    call was in flight, without the server saying whether it ran.

    The call may or may not have run on the server, so it is not resent: doing
    so could run it twice.  Retry it yourself only if it is safe to repeat.
    """


class NotIdempotent(LocalError):
    """
    The call asked to be retried after a loss (C{idempotent}), but the
    server's C{system.describe}, which the client read, says its method is
    not idempotent: it was not sent.
    """


class ClientClosed(LocalError):
    """
    The client was closed before the call could be sent or answered.
    """


class FeatureNotSupported(LocalError):
    """
    A call needs a feature (PROTOCOL.md 4.4, C{features}) that the server's
    hello does not list: it was not sent.
    """


class StreamsNotSupported(FeatureNotSupported):
    """
    A stream was asked of a server whose hello does not list the C{stream}
    feature: it was not sent.
    """


class MetadataTooLarge(LocalError):
    """
    A call's metadata is larger than the server's C{max_metadata_size} (from
    its hello): it was not sent.
    """


class QueueFull(LocalError):
    """
    The client's queue of calls waiting for a connection is full.  The call
    was not sent.
    """


class TLSRefused(LocalError):
    """
    The TLS handshake with the server failed (a certificate that does not
    verify, or a server that refuses the client's): the calls waiting for a
    connection fail with it at once, since retrying would fail the same way.
    Nothing was sent.
    """


class NotServed(LocalError, ConnectionRefusedError):
    """
    The server did not serve the connection: it sent a goaway before its
    hello (C{ServerBusy}, say), so nothing sent on it ran.  The blocking
    client counts it as a failed connection attempt and retries it like a
    refused connect; it raises it when it runs out of retries.

    It is also the standard library's L{ConnectionRefusedError} (with no
    errno).
    """


class CallTimeout(LocalError, TimeoutError):
    """
    The call did not finish within its time limit.  If it was sent it may or
    may not have run (the server was asked to cancel it); its message says
    which call, which limit, and its msgid if it was sent.

    It is also the standard library's L{TimeoutError} (with no errno).
    """
