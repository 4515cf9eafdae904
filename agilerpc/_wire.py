"""
The agilerpc wire format, version 1 (see docs/PROTOCOL.md).

Pure functions and small value types: nothing here knows about reactors,
transports or connections, so the format can be tested, and reused by the
blocking client, without Twisted's event loop.

A frame is a 4-byte unsigned big-endian length followed by that many bytes of
one msgpack array.  The encoders here return the msgpack payload; L{frame}
adds the length header.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Any

import msgpack

from ._errors import InvalidRequest, InvalidResponse

PROTOCOL_VERSION = 1

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2
CONTROL = 3

DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
MAX_MSGID = 2**32 - 1

HEADER = struct.Struct(">I")

_unpackb = msgpack.unpackb
_Packer = msgpack.Packer

# Creating a Packer costs more than packing a small message with it, and
# msgpack.packb creates one per call.  A Packer is not thread-safe (the
# blocking client packs from many threads): one per thread.
_perThread = threading.local()


def frame(payload: bytes) -> bytes:
    """
    Prefix C{payload} with its 4-byte big-endian length.
    """
    return HEADER.pack(len(payload)) + payload


def pack(message: list[Any]) -> bytes:
    """
    Encode one message.

    @raise TypeError: if something in C{message} cannot be encoded.
    @raise ValueError: if it nests too deeply.
    @raise OverflowError: if an integer is out of msgpack's range.
    """
    try:
        packer = _perThread.packer
    except AttributeError:
        packer = _perThread.packer = _Packer(use_bin_type=True)
    return packer.pack(message)  # type: ignore[no-any-return]


def unpack(payload: bytes) -> list[Any]:
    """
    Decode one message payload into its array.

    msgpack's own limits bound memory and recursion: no string, array or map
    can claim more elements than the payload has bytes, and nesting deeper
    than msgpack's stack is refused.  Map keys may be any hashable scalar
    (str, bin, integer, float, boolean, nil): Python data often has integer
    keys, and refusing them would make a whole message undecodable.

    @raise ValueError: if C{payload} is not exactly one msgpack array.
    """
    try:
        message = _unpackb(payload, strict_map_key=False)
    except Exception as e:
        # msgpack raises ValueError subclasses (ExtraData, FormatError,
        # StackError), but also TypeError (unhashable map key) and
        # UnicodeDecodeError: all mean the same thing to us.
        raise ValueError(f"not a msgpack message: {type(e).__name__}: {e}") from None
    if type(message) is not list:
        raise ValueError(f"message is a {type(message).__name__}, not an array")
    return message


def encodeRequest(
    msgid: int, method: str, args: Any, kwargs: dict[str, Any] | None = None
) -> bytes:
    """
    Encode a request; C{kwargs} is left off the wire when empty.
    """
    if kwargs:
        return pack([REQUEST, msgid, method, args, kwargs])
    return pack([REQUEST, msgid, method, args])


def encodeNotification(
    method: str, args: Any, kwargs: dict[str, Any] | None = None
) -> bytes:
    """
    Encode a notification: a call that is never answered.
    """
    if kwargs:
        return pack([NOTIFICATION, method, args, kwargs])
    return pack([NOTIFICATION, method, args])


def encodeResult(msgid: int, result: Any) -> bytes:
    """
    Encode a successful response.

    @raise TypeError: (or L{ValueError}) if msgpack cannot encode C{result}.
    """
    return pack([RESPONSE, msgid, None, result])


def encodeError(msgid: int | None, error: dict[str, Any]) -> bytes:
    """
    Encode an error response; C{error} is an error map (see
    L{agilerpc.RpcError.toWire}).
    """
    return pack([RESPONSE, msgid, error, None])


def encodeHello(info: dict[str, Any]) -> bytes:
    """
    Encode the server's hello.
    """
    return pack([CONTROL, "hello", info])


def encodeGoaway(lastMsgid: int | None, reason: str) -> bytes:
    """
    Encode a goaway: every request up to and including C{lastMsgid} (in
    arrival order) was dispatched and will be answered; none after it will be.
    """
    return pack([CONTROL, "goaway", lastMsgid, reason])


def encodeCancel(msgid: int) -> bytes:
    """
    Encode a client's request to cancel the call C{msgid}.
    """
    return pack([CONTROL, "cancel", msgid])


def isMsgid(value: object) -> bool:
    """
    Is C{value} a valid msgid: an unsigned integer below 2**32 (not a bool)?
    """
    return type(value) is int and 0 <= value <= MAX_MSGID


@dataclass(slots=True)
class Request:
    """
    A call that wants an answer.
    """

    msgid: int
    method: str
    args: list[Any]
    kwargs: dict[str, Any]


@dataclass(slots=True)
class Notification:
    """
    A call that is never answered.
    """

    method: str
    args: list[Any]
    kwargs: dict[str, Any]


@dataclass(slots=True)
class Response:
    """
    The answer to a request: C{error} is L{None} on success.
    """

    msgid: int | None
    error: dict[str, Any] | None
    result: Any


@dataclass(slots=True)
class Control:
    """
    A control message: C{kind} and the elements that follow it.
    """

    kind: str
    body: list[Any]


_EMPTY: dict[str, Any] = {}


def _parseCall(
    message: list[Any], offset: int
) -> tuple[str, list[Any], dict[str, Any]]:
    """
    Check the C{method, args[, kwargs]} part of a request or notification.

    @raise ValueError: if it has the wrong shape.
    """
    n = len(message) - offset
    if n != 2 and n != 3:
        raise ValueError(
            f"expected {offset + 2} or {offset + 3} elements, got {len(message)}"
        )
    method = message[offset]
    args = message[offset + 1]
    if type(method) is not str:
        raise ValueError("method must be a string")
    if type(args) is not list:
        raise ValueError("args must be an array")
    if n == 2:
        return method, args, _EMPTY
    kwargs = message[offset + 2]
    if type(kwargs) is not dict:
        raise ValueError("kwargs must be a map")
    for key in kwargs:
        if type(key) is not str:
            raise ValueError("kwargs keys must be strings")
    return method, args, kwargs


def parseClientMessage(payload: bytes) -> Request | Notification | Control:
    """
    Decode and check a message a client sent to a server.

    @raise InvalidRequest: if it is not a valid request, notification or
        control message.  Its C{data} is C{{"msgid": msgid}} when the message
        carried a valid msgid, so the error can be sent back for that call.
    """
    try:
        message = unpack(payload)
    except ValueError as e:
        raise InvalidRequest(str(e)) from None
    # The common shape first, checked inline: [0, msgid, method, args].
    if len(message) == 4:
        code, msgid, method, args = message
        if (
            code == REQUEST
            and type(code) is int
            and type(msgid) is int
            and 0 <= msgid <= MAX_MSGID
            and type(method) is str
            and type(args) is list
        ):
            return Request(msgid, method, args, _EMPTY)
    if not message:
        raise InvalidRequest("message is an empty array")
    code = message[0]
    try:
        if code == REQUEST and type(code) is int:
            if len(message) < 2 or not isMsgid(message[1]):
                raise ValueError(
                    "request msgid must be an unsigned integer below 2**32"
                )
            try:
                return Request(message[1], *_parseCall(message, 2))
            except ValueError as e:
                raise InvalidRequest(str(e), {"msgid": message[1]}) from None
        if code == NOTIFICATION and type(code) is int:
            return Notification(*_parseCall(message, 1))
        if code == CONTROL and type(code) is int:
            if len(message) < 2 or type(message[1]) is not str:
                raise ValueError("control kind must be a string")
            return Control(message[1], message[2:])
        raise ValueError(f"unexpected message type {code!r}")
    except ValueError as e:
        raise InvalidRequest(str(e)) from None


def parseServerMessage(payload: bytes) -> Response | Control:
    """
    Decode and check a message a server sent to a client.

    @raise InvalidResponse: if it is not a valid response or control message.
    """
    try:
        message = unpack(payload)
        # The common shape first: a successful response.
        if len(message) == 4:
            code, msgid, error, result = message
            if (
                code == RESPONSE
                and type(code) is int
                and error is None
                and type(msgid) is int
                and 0 <= msgid <= MAX_MSGID
            ):
                return Response(msgid, None, result)
        code = message[0] if message else None
        if code == RESPONSE and type(code) is int:
            if len(message) != 4:
                raise ValueError(f"response has {len(message)} elements, not 4")
            msgid, error, result = message[1], message[2], message[3]
            if msgid is not None and not isMsgid(msgid):
                raise ValueError("response msgid must be nil or an unsigned integer")
            if error is not None and type(error) is not dict:
                raise ValueError("response error must be nil or a map")
            return Response(msgid, error, result)
        if code == CONTROL and type(code) is int:
            if len(message) < 2 or type(message[1]) is not str:
                raise ValueError("control kind must be a string")
            return Control(message[1], message[2:])
        raise ValueError(f"unexpected message type {code!r}")
    except ValueError as e:
        raise InvalidResponse(str(e)) from None
