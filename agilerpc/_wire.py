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
from typing import Any, TypeGuard

import msgpack

from ._errors import InvalidRequest, InvalidResponse

PROTOCOL_VERSION = 1

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2
CONTROL = 3
ITEM = 4

#: What this implementation supports beyond the base protocol, as its hello
#: lists them (PROTOCOL.md 4.4, C{features}); each is also the key of the
#: request option it defines (4.1).
STREAM = "stream"
DEADLINE = "deadline"
METADATA = "metadata"
FEATURES = (STREAM, DEADLINE, METADATA)

#: The bytes of keys and values one request's metadata may hold (gRPC's
#: default limit on a call's headers).
DEFAULT_MAX_METADATA_SIZE = 8192
#: The longest deadline a request may carry, in seconds: a year.
MAX_DEADLINE = 365 * 24 * 3600.0

DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
#: The arrays and maps one request may hold, the message's own included.
DEFAULT_MAX_CONTAINERS = 65536
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
        packer = threadPacker()
    return packer.pack(message)  # type: ignore[no-any-return]


def threadPacker() -> Any:
    """
    This thread's packer, the one L{pack} uses: made on first use, then kept
    in C{_perThread.packer}, where a hot path may read it directly.
    """
    try:
        return _perThread.packer
    except AttributeError:
        packer = _perThread.packer = _Packer(use_bin_type=True)
        return packer


class _ExtensionValue(ValueError):
    """
    A payload holds an extension type, which protocol version 1 leaves out.
    """


def _refuseExtension(code: int, data: bytes) -> Any:
    raise _ExtensionValue(f"extension type {code}")


# max_ext_len=0 refuses every extension value with data before it is built,
# the timestamp type -1 included (msgpack decodes that one without calling
# ext_hook); ext_hook refuses the ones with no data.
_STRICT = {"strict_map_key": False, "max_ext_len": 0, "ext_hook": _refuseExtension}

MAX_DEPTH = 1024


def _whyUndecodable(e: Exception) -> str:
    """
    What is wrong with a payload msgpack refused, in the protocol's terms
    (docs/PROTOCOL.md section 3) rather than the decoder's.
    """
    text = str(e)
    if isinstance(e, _TooManyContainers):
        return f"the message holds {text}"
    if isinstance(e, _ExtensionValue) or "max_ext_len" in text:
        return "extension types are not part of protocol version 1"
    if isinstance(e, msgpack.ExtraData):
        return "extra bytes after the message's array"
    if isinstance(e, UnicodeDecodeError):
        return "a str is not valid UTF-8"
    if isinstance(e, TypeError):
        return "a map key is an array or a map"
    if isinstance(e, msgpack.FormatError):
        return "not msgpack: 0xc1 is not a msgpack type"
    if isinstance(e, msgpack.StackError) or "recursion" in text:
        return f"nested deeper than {MAX_DEPTH} arrays and maps"
    if "exceeds max_" in text:
        return "a str, bin, array or map announces more than the payload holds"
    if "incomplete" in text:
        return "the payload ends inside a value (truncated)"
    return "not a msgpack value"


class _TooManyContainers(ValueError):
    """
    A payload holds more arrays and maps than its receiver accepts.
    """


def _countingHook(limit: int) -> Any:
    """
    A C{list_hook}/C{object_hook} for msgpack that lets C{limit} arrays and
    maps through, then refuses the next, before more are built.
    """
    left = limit

    def count(value: Any) -> Any:
        nonlocal left
        left -= 1
        if left < 0:
            raise _TooManyContainers(f"more than {limit} arrays and maps")
        return value

    return count


def unpack(payload: bytes, maxContainers: int | None = None) -> list[Any]:
    """
    Decode one message payload into its array.

    msgpack's own limits bound memory and recursion: no string, array or map
    can claim more elements than the payload has bytes, and nesting deeper
    than msgpack's stack (1024) is refused.  Map keys may be any hashable
    scalar (str, bin, integer, float, boolean, nil): Python data often has
    integer keys, and refusing them would make a whole message undecodable.
    Extension types are refused.

    Building arrays and maps is what makes decoding slow (a frame of eight
    million empty arrays takes seconds), so a receiver may bound how many one
    message holds: with C{maxContainers}, a payload long enough to hold more
    (each takes at least a byte) is decoded with a hook that counts them and
    stops at the first one over the limit.  The hook costs a call per array
    or map, in large messages only; scanning the bytes for array and map
    headers instead would cost about a microsecond per KiB of every large
    message, strings and bins included.

    @raise ValueError: if C{payload} is not exactly one msgpack array, or
        holds more than C{maxContainers} arrays and maps; its message says
        what is wrong in the protocol's terms.
    """
    try:
        if maxContainers is not None and len(payload) > maxContainers:
            hook = _countingHook(maxContainers)
            message = _unpackb(payload, list_hook=hook, object_hook=hook, **_STRICT)
        else:
            # _STRICT, spelled out: a ** dict costs more.
            message = _unpackb(
                payload, strict_map_key=False, max_ext_len=0, ext_hook=_refuseExtension
            )
    except Exception as e:
        # msgpack raises ValueError subclasses (ExtraData, FormatError,
        # StackError), but also TypeError (unhashable map key) and
        # UnicodeDecodeError: all mean the same thing to us.
        raise ValueError(_whyUndecodable(e)) from None
    if type(message) is not list:
        raise ValueError(notAnArray(message))
    return message


def notAnArray(message: object) -> str:
    """
    Why a payload that decoded to C{message}, which is not a list, is not a
    message.
    """
    return f"the message is {_kindName(message)}, not an array"


def undecodableRequest(payload: bytes, why: str) -> InvalidRequest:
    """
    The C{InvalidRequest} for a payload that is not one msgpack array, for
    the reason C{why}: with the msgid its start names (L{peekMsgid}), if any.
    """
    msgid = peekMsgid(payload, REQUEST)
    if msgid is None:
        return InvalidRequest(why)
    return InvalidRequest(why, {"msgid": msgid})


def _kindName(value: object) -> str:
    """
    The msgpack type of a decoded value, for error messages.
    """
    if value is None:
        return "nil"
    if type(value) is bool:
        return "a boolean"
    if type(value) is int:
        return "an integer"
    if type(value) is float:
        return "a float"
    if type(value) is str:
        return "a str"
    if type(value) is bytes:
        return "a bin"
    if type(value) is dict:
        return "a map"
    return "an array"


def whyUnencodable(e: Exception) -> str:
    """
    Why L{pack} refused a value, in the protocol's terms.
    """
    if isinstance(e, OverflowError):
        return "an integer is outside msgpack's range (-2**63 to 2**64 - 1)"
    if isinstance(e, TypeError):
        text = str(e)
        if text.startswith("can not serialize "):
            return f"a value of Python type {text[18:].removesuffix(' object')} has no msgpack encoding"
        return "a value has no msgpack encoding"
    text = str(e)
    if "recursion" in text:
        return f"nested deeper than {MAX_DEPTH} arrays and maps"
    return text


#: Bytes that start a msgpack integer.
_INTEGER_BYTES = frozenset(
    [*range(0x00, 0x80), *range(0xCC, 0xD4), *range(0xE0, 0x100)]
)


def peekMsgid(payload: bytes, code: int) -> int | None:
    """
    The msgid of a message of type C{code} (L{REQUEST} or L{RESPONSE}) whose
    payload cannot be decoded as a whole, read from its first elements
    alone: C{[code, msgid, ...}; L{None} if those cannot be read either.

    Only integers are decoded on the way, so that reading costs the same
    whatever the rest of the payload holds.
    """
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(payload)
    try:
        if unpacker.read_array_header() < 2:
            return None
        for want in (code, None):
            offset = unpacker.tell()
            if offset >= len(payload) or payload[offset] not in _INTEGER_BYTES:
                return None
            value = unpacker.unpack()
            if want is not None and value != want:
                return None
    except Exception:
        return None
    return value if isMsgid(value) else None


def encodeRequest(
    msgid: int,
    method: str,
    args: Any,
    kwargs: dict[str, Any] | None = None,
    stream: int | None = None,
    deadline: float | None = None,
    metadata: dict[str, str | bytes] | None = None,
) -> bytes:
    """
    Encode a request; C{kwargs} is left off the wire when empty, and the
    options map when there are no options.

    @param stream: for a stream (PROTOCOL.md 4.5), the caller's first
        window, in items.
    @param deadline: the seconds left before the caller gives up (4.1).
    @param metadata: the call's metadata (4.1), checked by
        L{checkMetadata}.
    @raise TypeError: (or L{ValueError}, L{OverflowError}) if the arguments
        cannot be encoded: see L{pack}.
    """
    if stream is None and deadline is None and metadata is None:
        if kwargs:
            return pack([REQUEST, msgid, method, args, kwargs])
        return pack([REQUEST, msgid, method, args])
    options: dict[str, Any] = {}
    if stream is not None:
        options[STREAM] = stream
    if deadline is not None:
        options[DEADLINE] = deadline
    if metadata is not None:
        options[METADATA] = metadata
    return pack([REQUEST, msgid, method, args, kwargs or {}, options])


def metadataSize(metadata: dict[str, str | bytes]) -> int:
    """
    The size of C{metadata} as its limit counts it: the UTF-8 bytes of its
    keys and str values, and the bytes of its bin values.
    """
    size = 0
    for key, value in metadata.items():
        # An ASCII str is as long as its UTF-8: no need to encode it.
        size += len(key) if key.isascii() else len(key.encode("utf-8"))
        if type(value) is bytes:
            size += len(value)
        else:
            size += len(value) if value.isascii() else len(value.encode("utf-8"))  # type: ignore[union-attr]
    return size


def checkMetadata(metadata: object) -> dict[str, str | bytes]:
    """
    Check a call's metadata before it is sent (PROTOCOL.md 4.1): a map of str
    keys to str or bytes values, each str valid UTF-8 (no lone surrogate).
    Returns it.

    @raise ValueError: if it is not one, saying why.
    """
    if type(metadata) is not dict:
        raise ValueError(f"metadata must be a map, not {_kindName(metadata)}")
    for key, value in metadata.items():
        if type(key) is not str:
            raise ValueError(f"a metadata key is {_kindName(key)}, not a str")
        if type(value) is not str and type(value) is not bytes:
            raise ValueError(
                f"metadata {key!r:.50}: the value is {_kindName(value)}, "
                "not a str or a bin"
            )
        try:
            if not key.isascii():
                key.encode("utf-8")
            if type(value) is str and not value.isascii():
                value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"metadata {key!r:.50}: not valid UTF-8 (a lone surrogate)"
            ) from None
    return metadata


def _checkReceivedMetadata(
    method: str, metadata: object, limit: int | None
) -> dict[str, str | bytes]:
    """
    Check the metadata option of a request or notification of C{method}, as
    decoded (its strs are valid UTF-8), and its size against C{limit} (bytes,
    as L{metadataSize} counts them; L{None}: any).

    @raise ValueError: if it is not a map of str keys to str or bin values,
        or is larger than C{limit}.
    """
    if type(metadata) is not dict:
        raise ValueError(
            f"the metadata option: metadata must be a map, not {_kindName(metadata)}"
        )
    for key, value in metadata.items():
        if type(key) is not str:
            raise ValueError(
                f"the metadata option: a metadata key is {_kindName(key)}, not a str"
            )
        if type(value) is not str and type(value) is not bytes:
            raise ValueError(
                f"the metadata option: metadata {key!r:.50}: the value is "
                f"{_kindName(value)}, not a str or a bin"
            )
    if limit is not None:
        size = metadataSize(metadata)
        if size > limit:
            raise ValueError(
                f"{method}(): its metadata holds {size} bytes, more than this "
                f"server's max_metadata_size of {limit}"
            )
    return metadata


def isDeadline(deadline: object) -> TypeGuard[float]:
    """
    Is C{deadline} a request's deadline option (PROTOCOL.md 4.1): seconds
    (an int or a float, not a bool), more than 0 and at most
    L{MAX_DEADLINE}?
    """
    return (type(deadline) is int or type(deadline) is float) and (
        0 < deadline <= MAX_DEADLINE
    )


def checkDeadline(deadline: object) -> float:
    """
    Check a request's deadline option (L{isDeadline}).  Returns it as a
    float.

    @raise ValueError: if it is not one.
    """
    if not isDeadline(deadline):
        raise ValueError(
            f"the deadline option must be a number of seconds above 0 and at most "
            f"{MAX_DEADLINE:.0f}, not {deadline!r:.50}"
        )
    return float(deadline)


def encodeItem(msgid: int, item: Any) -> bytes:
    """
    Encode one item of the stream C{msgid}.

    @raise TypeError: (or L{ValueError}) if msgpack cannot encode C{item}.
    """
    return pack([ITEM, msgid, item])


def encodeCredit(msgid: int, count: int) -> bytes:
    """
    Encode a caller's grant of C{count} more items of the stream C{msgid}.
    """
    return pack([CONTROL, "credit", msgid, count])


def encodeNotification(
    method: str,
    args: Any,
    kwargs: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> bytes:
    """
    Encode a notification: a call that is never answered.

    @param options: its options map (PROTOCOL.md 4.3): C{metadata} only.
    @raise TypeError: (or L{ValueError}, L{OverflowError}) if the arguments
        cannot be encoded: see L{pack}.
    """
    if options:
        return pack([NOTIFICATION, method, args, kwargs or {}, options])
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


#: The server's probe, a control message every client ignores: written to
#: learn whether a client it cannot read from is still there.
PROBE = pack([CONTROL, "probe"])


def encodeCancel(msgid: int) -> bytes:
    """
    Encode a client's request to cancel the call C{msgid}.
    """
    return pack([CONTROL, "cancel", msgid])


def encodeAuth(token: str | bytes) -> bytes:
    """
    Encode a client's token, its first frame to a server that asks for one.
    """
    return pack([CONTROL, "auth", token])


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
class OptionsRequest(Request):
    """
    A call with options (PROTOCOL.md 4.1): C{deadline}, the seconds its
    caller gives it from when the request arrives, and C{metadata}, each
    L{None} when not given.
    """

    deadline: float | None
    metadata: dict[str, str | bytes] | None


@dataclass(slots=True)
class StreamRequest(OptionsRequest):
    """
    A call that wants items, then an answer (PROTOCOL.md 4.5); C{window} is
    the caller's first grant of items.
    """

    window: int


@dataclass(slots=True)
class Item:
    """
    One item of the stream C{msgid}.
    """

    msgid: int
    item: Any


@dataclass(slots=True)
class Notification:
    """
    A call that is never answered; C{metadata} is L{None} when it has none
    (PROTOCOL.md 4.3).
    """

    method: str
    args: list[Any]
    kwargs: dict[str, Any]
    metadata: dict[str, str | bytes] | None = None


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


def _badTypeCode(code: object) -> str:
    if type(code) is int:
        return f"unknown message type code {code}"
    return f"the type code is {_kindName(code)}, not an integer"


def _withOptions(
    msgid: int,
    method: str,
    args: list[Any],
    kwargs: dict[str, Any],
    options: object,
    maxMetadataSize: int | None = None,
) -> Request:
    """
    The request a request's options map (PROTOCOL.md 4.1) makes: an
    L{OptionsRequest} or a L{StreamRequest}, or a plain L{Request} when it
    holds no option this implementation knows (it ignores the others).

    @raise ValueError: if it is not a map, or a known option is invalid, or
        its metadata is larger than C{maxMetadataSize}.
    """
    if type(options) is not dict:
        raise ValueError("options must be a map")
    window = options.get(STREAM)
    deadline = options.get(DEADLINE)
    metadata = options.get(METADATA)
    if deadline is not None:
        deadline = checkDeadline(deadline)
    if metadata is not None:
        _checkReceivedMetadata(method, metadata, maxMetadataSize)
    if window is not None:
        if type(window) is not int or not 1 <= window <= MAX_MSGID:
            raise ValueError("the stream option must be an integer from 1 to 2**32 - 1")
        return StreamRequest(msgid, method, args, kwargs, deadline, metadata, window)
    if deadline is None and metadata is None:
        return Request(msgid, method, args, kwargs)
    return OptionsRequest(msgid, method, args, kwargs, deadline, metadata)


def _parseCall(
    message: list[Any], offset: int
) -> tuple[str, list[Any], dict[str, Any]]:
    """
    Check the C{method, args[, kwargs[, options]]} part of a request or
    notification (its options are checked apart).

    @raise ValueError: if it has the wrong shape.
    """
    n = len(message) - offset
    if not 2 <= n <= 4:
        raise ValueError(
            f"expected {offset + 2} to {offset + 4} elements, got {len(message)}"
        )
    method = message[offset]
    args = message[offset + 1]
    if type(method) is not str:
        raise ValueError("method must be a str")
    if type(args) is not list:
        raise ValueError("args must be an array")
    if n == 2:
        return method, args, _EMPTY
    kwargs = message[offset + 2]
    if type(kwargs) is not dict:
        raise ValueError("kwargs must be a map")
    for key in kwargs:
        if type(key) is not str:
            raise ValueError("kwargs keys must be str")
    return method, args, kwargs


def parseClientMessage(
    payload: bytes,
    maxContainers: int | None = DEFAULT_MAX_CONTAINERS,
    maxMetadataSize: int | None = None,
) -> Request | Notification | Control:
    """
    Decode and check a message a client sent to a server, which holds at
    most C{maxContainers} arrays and maps (L{None}: any number), and whose
    metadata, if any, holds at most C{maxMetadataSize} bytes (L{None}: any).

    @raise InvalidRequest: if it is not a valid request, notification or
        control message.  Its C{data} is C{{"msgid": msgid}} when the message
        carried a valid msgid, so the error can be sent back for that call.
    """
    try:
        message = unpack(payload, maxContainers)
    except ValueError as e:
        raise undecodableRequest(payload, str(e)) from None
    return checkClientMessage(message, maxMetadataSize)


def checkClientMessage(
    message: list[Any], maxMetadataSize: int | None = None
) -> Request | Notification | Control:
    """
    Check a decoded message a client sent to a server: the part of
    L{parseClientMessage} after L{unpack}.

    @raise InvalidRequest: as L{parseClientMessage} does.
    """
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
    elif len(message) == 6:
        # A request with options, inline as far as its options.
        code, msgid, method, args, kwargs, options = message
        if (
            code == REQUEST
            and type(code) is int
            and type(msgid) is int
            and 0 <= msgid <= MAX_MSGID
            and type(method) is str
            and type(args) is list
            and type(kwargs) is dict
            and (not kwargs or all(type(k) is str for k in kwargs))
        ):
            try:
                return _withOptions(
                    msgid, method, args, kwargs, options, maxMetadataSize
                )
            except ValueError as e:
                raise InvalidRequest(str(e), {"msgid": msgid}) from None
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
                method, args, kwargs = _parseCall(message, 2)
                if len(message) == 6:
                    return _withOptions(
                        message[1], method, args, kwargs, message[5], maxMetadataSize
                    )
                return Request(message[1], method, args, kwargs)
            except ValueError as e:
                raise InvalidRequest(str(e), {"msgid": message[1]}) from None
        if code == NOTIFICATION and type(code) is int:
            method, args, kwargs = _parseCall(message, 1)
            if len(message) == 5:
                options = message[4]
                if type(options) is not dict:
                    raise ValueError("options must be a map")
                metadata = options.get(METADATA)
                if metadata is not None:
                    _checkReceivedMetadata(method, metadata, maxMetadataSize)
                    return Notification(method, args, kwargs, metadata)
            return Notification(method, args, kwargs)
        if code == CONTROL and type(code) is int:
            if len(message) < 2 or type(message[1]) is not str:
                raise ValueError("control kind must be a str")
            return Control(message[1], message[2:])
        raise ValueError(_badTypeCode(code))
    except ValueError as e:
        raise InvalidRequest(str(e)) from None


def parseServerMessage(payload: bytes) -> Response | Item | Control:
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
        if not message:
            raise ValueError("message is an empty array")
        code = message[0]
        if code == RESPONSE and type(code) is int:
            if len(message) != 4:
                raise ValueError(f"response has {len(message)} elements, not 4")
            msgid, error, result = message[1], message[2], message[3]
            if msgid is not None and not isMsgid(msgid):
                raise ValueError("response msgid must be nil or an unsigned integer")
            if error is not None and type(error) is not dict:
                raise ValueError("response error must be nil or a map")
            return Response(msgid, error, result)
        if code == ITEM and type(code) is int:
            if len(message) != 3:
                raise ValueError(f"stream item has {len(message)} elements, not 3")
            if not isMsgid(message[1]):
                raise ValueError("stream item msgid must be an unsigned integer")
            return Item(message[1], message[2])
        if code == CONTROL and type(code) is int:
            if len(message) < 2 or type(message[1]) is not str:
                raise ValueError("control kind must be a str")
            return Control(message[1], message[2:])
        raise ValueError(_badTypeCode(code))
    except ValueError as e:
        raise InvalidResponse(str(e)) from None
