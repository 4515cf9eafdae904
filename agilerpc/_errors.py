"""
The exceptions agilerpc raises and sends.

Every error that crosses the wire is a map with a C{"type"} and a
C{"message"} (and sometimes C{"data"}); L{RpcError} is its Python shape.  A
handler raises L{RpcError} to choose the type a caller sees, and a client
raises L{RemoteError} (or one of the standard subclasses below) when a call
fails on the server.
"""

from __future__ import annotations

from typing import Any


class RpcError(Exception):
    """
    An error with a wire type, a human-readable message and optional data.

    Raise it from a handler to send exactly this C{type}, C{message} and
    C{data} to the caller; any other exception is sent as its class name and
    C{str(exc)}.

    @ivar type: the error's type name, e.g. C{"MethodNotFound"}.
    @ivar message: what went wrong, for people.
    @ivar data: anything msgpack can encode, or L{None}.
    """

    def __init__(self, type: str, message: str, data: Any = None) -> None:
        super().__init__(type, message, data)
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
    def fromWire(cls, error: object) -> RemoteError:
        """
        Build the exception for an error map received from the wire.
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


class MessageTooLarge(_StandardError):
    """
    A message is larger than the receiver's maximum message size.
    """


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


class InvalidResponse(_StandardError):
    """
    The server sent a message this client cannot understand.
    """


_STANDARD: dict[str, type[_StandardError]] = {
    c.__name__: c
    for c in (
        MethodNotFound,
        InvalidParams,
        InvalidRequest,
        MessageTooLarge,
        Cancelled,
        ServerBusy,
        Unauthorized,
        InvalidResult,
        InvalidResponse,
    )
}


class ConnectionLost(Exception):
    """
    The connection closed while the call was in flight, without the server
    saying whether it ran.

    The call may or may not have run on the server, so it is not resent: doing
    so could run it twice.  Retry it yourself only if it is safe to repeat.
    """


class ClientClosed(Exception):
    """
    The client was closed before the call could be sent or answered.
    """


class QueueFull(Exception):
    """
    The client's queue of calls waiting for a connection is full.
    """
