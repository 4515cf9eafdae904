"""
The rules of one server connection, with no transport, reactor or clock:
messages in, decisions out.

L{ServerConnection} is to L{agilerpc.RpcServerProtocol} what
C{h2.connection.H2Connection} is to Twisted's HTTP/2 protocol.  It decides
what the hello says, whether a client is authenticated, which frames are
refused and with what error, which msgid a goaway names (the promise that
every request up to it is answered and none after it ever runs), how many
calls may be outstanding, and how a response is encoded to fit the maximum
message size.  The protocol moves bytes, runs timers and handlers, and does
what the connection's answers say.

One request, in order: L{ServerConnection.receive} takes its frame's payload
and returns the L{_wire.Request} to dispatch; the protocol runs the handler;
L{ServerConnection.result} (or L{ServerConnection.error}) returns the
response payload to write.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from . import _wire
from ._errors import (
    DeadlineExceeded,
    InvalidRequest,
    InvalidResult,
    MessageTooLarge,
    RpcError,
    Unauthorized,
)
from ._peerlog import PeerLog

_log = Logger(namespace="agilerpc.server")

_TRUNCATED = " [truncated]"

# Looked up once, not per message.
_parse = _wire.parseClientMessage
_check = _wire.checkClientMessage
_unpackb = _wire._unpackb
_refuseExtension = _wire._refuseExtension
_whyUndecodable = _wire._whyUndecodable
_MAX_MSGID = _wire.MAX_MSGID
_REQUEST = _wire.REQUEST
_EMPTY = _wire._EMPTY
_perThread = _wire._perThread
_threadPacker = _wire.threadPacker
_RESPONSE = _wire.RESPONSE
_Request = _wire.Request
_OptionsRequest = _wire.OptionsRequest
_Notification = _wire.Notification
_METADATA = _wire.METADATA
_DEADLINE = _wire.DEADLINE
_isDeadline = _wire.isDeadline

#: Why a frame (or, for C{ServerBusy}, a connection) is refused.
REFUSAL_REASONS = (
    "InvalidRequest",
    "MessageTooLarge",
    "Unauthorized",
    "ServerBusy",
    "FrameTimeout",
    "InputBudget",
)


def _wellTyped(metadata: dict[Any, Any]) -> bool:
    """
    Are C{metadata}'s keys all str and its values str or bytes?  (The rest
    of L{_wire.checkClientMessage}'s checks of decoded metadata, and its
    error messages, are for those that are not.)
    """
    for key, value in metadata.items():
        if type(key) is not str or (
            type(value) is not str and type(value) is not bytes
        ):
            return False
    return True


def _text(value: object) -> str:
    """
    C{value} as a str that msgpack can encode (no lone surrogates).
    """
    text = str(value) if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ServerSettings:
    """
    What every connection of one server shares: its limits, its token and
    its hello.

    @ivar maxMessageSize: the largest frame accepted, and sent, in bytes.
    @ivar maxInFlight: outstanding calls per connection before the protocol
        stops reading it.
    @ivar maxContainers: the arrays and maps one request may hold, or
        L{None} for no limit.
    @ivar authToken: the token a client must send first, or L{None}.
    @ivar maxCallTime: the deadline of a call whose caller set none, and the
        longest one a caller may set, in seconds; L{None} for none.
    @ivar maxMetadataSize: the bytes of keys and values one request's
        metadata may hold.
    @ivar debug: send tracebacks of failed calls to callers.
    @ivar hello: the hello's contents.
    @ivar log: what logs the events a peer can cause, at a rate it cannot
        raise.
    """

    __slots__ = (
        "authToken",
        "debug",
        "hello",
        "log",
        "maxCallTime",
        "maxContainers",
        "maxInFlight",
        "maxMessageSize",
        "maxMetadataSize",
    )

    def __init__(
        self,
        keepalive: float,
        maxMessageSize: int,
        maxInFlight: int,
        authToken: bytes | None,
        debug: bool,
        server: str,
        maxContainers: int | None = _wire.DEFAULT_MAX_CONTAINERS,
        log: PeerLog | None = None,
        maxCallTime: float | None = None,
        maxMetadataSize: int = _wire.DEFAULT_MAX_METADATA_SIZE,
    ) -> None:
        self.log = PeerLog(time.monotonic) if log is None else log
        self.maxCallTime = maxCallTime
        self.maxMetadataSize = maxMetadataSize
        self.maxMessageSize = maxMessageSize
        self.maxContainers = maxContainers
        self.maxInFlight = maxInFlight
        self.authToken = authToken
        self.debug = debug
        self.hello: dict[str, Any] = {
            "protocol": _wire.PROTOCOL_VERSION,
            "keepalive": keepalive,
            "max_message_size": maxMessageSize,
            "server": server,
            "features": list(_wire.FEATURES),
            "max_metadata_size": maxMetadataSize,
        }
        if authToken is not None:
            self.hello["auth"] = "token"


class Refusal:
    """
    A frame refused: send C{payload} (an error response), count C{reason},
    and with C{goaway} end the connection with a goaway of that reason.
    """

    __slots__ = ("goaway", "payload", "reason")

    def __init__(self, payload: bytes, reason: str, goaway: bool = False) -> None:
        self.payload = payload
        self.reason = reason
        self.goaway = goaway


class Cancel:
    """
    The client cancelled an outstanding call: cancel C{call}, the handle
    given to L{ServerConnection.callStarted}.
    """

    __slots__ = ("call",)

    def __init__(self, call: Any) -> None:
        self.call = call


class Credit:
    """
    The client granted C{count} more items of an outstanding call: C{call},
    the handle given to L{ServerConnection.callStarted} (a stream's).
    """

    __slots__ = ("call", "count")

    def __init__(self, call: Any, count: int) -> None:
        self.call = call
        self.count = count


class ServerConnection:
    """
    The protocol state of one server connection.

    @ivar outstanding: the calls dispatched and not answered, by msgid: the
        handles the protocol gave L{callStarted} (its Deferreds).
    @ivar callsServed: requests dispatched on this connection.
    @ivar goawaySent: a goaway was sent; nothing more is dispatched.
    @ivar serving: requests are dispatched: the client is authenticated (or
        no token is needed) and no goaway was sent.
    @ivar lastMsgid: the msgid of the last request dispatched, or L{None}.
    @ivar peer: the peer's address, for log messages only.
    @ivar awaitingCredit: outstanding streams that have used their credit:
        they wait for the client, not for the server, so they do not count
        against the in-flight limit (else a client whose streams all wait
        for credit could never be read again, nor its credit).
    """

    __slots__ = (
        "awaitingCredit",
        "callsServed",
        "expired",
        "goawaySent",
        "lastMsgid",
        "outstanding",
        "peer",
        "serving",
        "settings",
    )

    def __init__(self, settings: ServerSettings, peer: object = None) -> None:
        self.settings = settings
        self.peer = peer
        # Requests are dispatched: authenticated, and no goaway sent.  One
        # flag for both keeps the hot path to one check.
        self.serving = settings.authToken is None
        self.lastMsgid: int | None = None
        self.goawaySent = False
        self.outstanding: dict[int, Any] = {}
        self.awaitingCredit = 0
        self.callsServed = 0
        # The outstanding calls cancelled because their deadline passed
        # (made when the first one is: an empty set is 216 bytes, and most
        # connections never need one).
        self.expired: set[int] | None = None

    # -- messages in ---------------------------------------------------------

    def receive(
        self, payload: bytes
    ) -> _wire.Request | _wire.Notification | Refusal | Cancel | Credit | None:
        """
        One frame from the client, decided: a L{_wire.Request} (or its
        L{_wire.OptionsRequest} or L{_wire.StreamRequest}) or
        L{_wire.Notification} to dispatch (a
        request's msgid is then the last one dispatched), a L{Refusal} to
        send, a L{Cancel} or L{Credit} to do, or L{None} when there is
        nothing to do.
        """
        # _wire.parseClientMessage, inline for its common case: a payload
        # small enough to hold no more containers than the limit, decoded
        # without a hook, and a request of the usual shape to dispatch.
        maxContainers = self.settings.maxContainers
        message: Any = None
        refused: Exception | None = None
        decoded = maxContainers is None or len(payload) <= maxContainers
        if decoded:
            try:
                # _wire._STRICT, spelled out: a ** dict costs more.
                message = _unpackb(
                    payload,
                    strict_map_key=False,
                    max_ext_len=0,
                    ext_hook=_refuseExtension,
                )
            except Exception as e:
                refused = e
        if type(message) is list and len(message) == 4 and self.serving:
            code, msgid, method, args = message
            if (
                code == _REQUEST
                and type(code) is int
                and type(msgid) is int
                and 0 <= msgid <= _MAX_MSGID
                and type(method) is str
                and type(args) is list
                and msgid not in self.outstanding
            ):
                self.lastMsgid = msgid
                self.callsServed += 1
                return _Request(msgid, method, args, _EMPTY)
        elif (
            type(message) is list
            and len(message) == 6
            and self.serving
            and len(payload) <= self.settings.maxMetadataSize
        ):
            # The next most common: a call with a deadline, metadata or both
            # (no kwargs, no stream), small enough that its metadata need not
            # be measured (see below).
            code, msgid, method, args, kwargs, options = message
            if (
                code == _REQUEST
                and type(code) is int
                and type(msgid) is int
                and 0 <= msgid <= _MAX_MSGID
                and type(method) is str
                and type(args) is list
                and type(kwargs) is dict
                and not kwargs
                and type(options) is dict
                and msgid not in self.outstanding
            ):
                metadata = options.get(_METADATA)
                deadline = options.get(_DEADLINE)
                if (
                    len(options) == (metadata is not None) + (deadline is not None)
                    and options
                    and (
                        metadata is None
                        or (type(metadata) is dict and _wellTyped(metadata))
                    )
                    and (deadline is None or _isDeadline(deadline))
                ):
                    self.lastMsgid = msgid
                    self.callsServed += 1
                    return _OptionsRequest(
                        msgid,
                        method,
                        args,
                        _EMPTY,
                        None if deadline is None else float(deadline),
                        metadata,
                    )
        try:
            if type(message) is list:
                # Metadata cannot hold more bytes than its payload: only a
                # payload larger than the limit needs its metadata measured.
                limit = self.settings.maxMetadataSize
                message = _check(message, None if len(payload) <= limit else limit)
            elif refused is not None:
                raise _wire.undecodableRequest(payload, _whyUndecodable(refused))
            elif decoded:
                raise InvalidRequest(_wire.notAnArray(message))
            else:
                # Past the container limit: decode with the counting hook.
                message = _parse(payload, maxContainers, self.settings.maxMetadataSize)
        except InvalidRequest as e:
            if self.serving:
                return self._refuse(e)
            if self.goawaySent:
                # After a goaway malformed messages get no answer
                # (PROTOCOL.md).
                return None
            # An unauthenticated peer learns nothing about its input.
            data = e.data
            msgid = data.get("msgid") if isinstance(data, dict) else None
            return self._unauthorized(msgid, "no auth before the first message")
        if not self.serving:
            if not self.goawaySent:
                return self._authenticate(message)
            # Nothing is dispatched after a goaway; cancels of calls still
            # running are still honoured.
            if type(message) is _wire.Control:
                return self._control(message)
            return None
        if isinstance(message, _Request):
            msgid = message.msgid
            if msgid in self.outstanding:
                error = InvalidRequest(
                    f"msgid {msgid} is already outstanding on this connection",
                    {"msgid": msgid},
                )
                return Refusal(
                    _wire.encodeError(None, error.toWire()), "InvalidRequest"
                )
            self.lastMsgid = msgid
            self.callsServed += 1
            return message
        if type(message) is _Notification:
            return message
        assert type(message) is _wire.Control
        return self._control(message)

    def _authenticate(
        self, message: _wire.Request | _wire.Notification | _wire.Control
    ) -> Refusal | None:
        """
        The first frame of a connection to a server with a token must be
        C{[3, "auth", token]}; anything else, or a wrong token, is refused
        with C{Unauthorized} and a goaway.
        """
        token = self.settings.authToken
        assert token is not None
        if type(message) is _wire.Control and message.kind == "auth":
            offered = message.body[0] if message.body else None
            if isinstance(offered, str):
                offered = offered.encode("utf-8")
            if isinstance(offered, bytes) and hmac.compare_digest(offered, token):
                self.serving = True
                return None
            why = "wrong token"
        else:
            why = "no auth before the first message"
        return self._unauthorized(
            message.msgid if type(message) is _Request else None, why
        )

    def _unauthorized(self, msgid: int | None, why: str) -> Refusal:
        """
        Refuse this connection: an C{Unauthorized} error for C{msgid}, then a
        goaway.
        """
        # Never log the token offered: it may be a real one, mistyped.
        self.settings.log.emit(
            _log, LogLevel.warn, "{peer}: refused: {why}", self.peer, why=why
        )
        error = Unauthorized(f"authentication failed: {why}")
        return Refusal(
            _wire.encodeError(msgid, error.toWire()), "Unauthorized", goaway=True
        )

    def _refuse(self, error: InvalidRequest) -> Refusal:
        data = error.data
        msgid = data.get("msgid") if isinstance(data, dict) else None
        if msgid is not None and msgid in self.outstanding:
            # Its answer would read as the outstanding call's.
            msgid = None
        return Refusal(_wire.encodeError(msgid, error.toWire()), "InvalidRequest")

    def _control(self, message: _wire.Control) -> Refusal | Cancel | Credit | None:
        kind = message.kind
        body = message.body
        if kind == "cancel":
            if body and _wire.isMsgid(body[0]):
                call = self.outstanding.get(body[0])
                return None if call is None else Cancel(call)
            if not self.goawaySent:
                return self._refuse(InvalidRequest("cancel needs a msgid"))
        elif kind == "credit":
            if (
                len(body) >= 2
                and _wire.isMsgid(body[0])
                and type(body[1]) is int
                and 1 <= body[1] <= _MAX_MSGID
            ):
                call = self.outstanding.get(body[0])
                return None if call is None else Credit(call, body[1])
            if not self.goawaySent:
                return self._refuse(
                    InvalidRequest(
                        "credit needs a msgid and a count from 1 to 2**32 - 1"
                    )
                )
        # Other kinds are ignored, so that clients can add optional ones.
        return None

    def frameTooLarge(self, length: int) -> bytes:
        """
        The error response refusing a frame of C{length} bytes, over the
        maximum message size.  The stream cannot be resynced after it: the
        connection ends with a C{MessageTooLarge} goaway.
        """
        limit = self.settings.maxMessageSize
        self.settings.log.emit(
            _log,
            LogLevel.warn,
            "{peer}: refused a frame of {length} bytes (limit {limit})",
            self.peer,
            length=length,
            limit=limit,
        )
        error = MessageTooLarge(
            f"a frame of {length} bytes exceeds the maximum message size of "
            f"{limit} bytes"
        )
        return _wire.encodeError(None, error.toWire())

    # -- calls ---------------------------------------------------------------

    @property
    def inFlight(self) -> int:
        """
        The calls dispatched and not answered yet.
        """
        return len(self.outstanding)

    def callStarted(self, msgid: int, call: Any) -> bool:
        """
        The request C{msgid} will be answered later; C{call} is what a
        L{Cancel} of it hands back.

        @return: whether the connection is at its in-flight limit, so that
            reading it must stop until a call ends.
        """
        outstanding = self.outstanding
        outstanding[msgid] = call
        return len(outstanding) - self.awaitingCredit >= self.settings.maxInFlight

    def callEnded(self, msgid: int) -> bool:
        """
        The call C{msgid} is answered (or failed).

        @return: whether it was outstanding.
        """
        return self.outstanding.pop(msgid, None) is not None

    def deadline(self, request: _wire.Request) -> float | None:
        """
        The seconds C{request} may run from now: its caller's deadline,
        capped by the server's C{maxCallTime}, or C{maxCallTime} when its
        caller set none; L{None} when neither did.
        """
        limit = self.settings.maxCallTime
        asked = getattr(request, "deadline", None)
        if asked is None:
            return limit
        if limit is None:
            return asked  # type: ignore[no-any-return]
        return min(asked, limit)  # type: ignore[no-any-return]

    def deadlinePassed(self, msgid: int) -> Any:
        """
        The deadline of the call C{msgid} passed: the handle to cancel (see
        L{callStarted}), whose failure L{errorFor} then sends as
        C{DeadlineExceeded}; L{None} if it was answered meanwhile.
        """
        call = self.outstanding.get(msgid)
        if call is not None:
            if self.expired is None:
                self.expired = set()
            self.expired.add(msgid)
        return call

    def belowInFlightLimit(self) -> bool:
        """
        Whether the connection may be read again.
        """
        return len(self.outstanding) - self.awaitingCredit < self.settings.maxInFlight

    # -- messages out --------------------------------------------------------

    def hello(self) -> bytes:
        """
        The hello, the first frame of every accepted connection.
        """
        return _wire.encodeHello(self.settings.hello)

    def goaway(self, reason: str) -> bytes | None:
        """
        The goaway to send, naming the last request dispatched, or L{None}
        when one was sent already.  Nothing is dispatched after it.
        """
        if self.goawaySent:
            return None
        self.goawaySent = True
        self.serving = False
        return _wire.encodeGoaway(self.lastMsgid, reason)

    def probe(self) -> bytes | None:
        """
        A probe to write while calls are outstanding and the client cannot
        be read (its end of stream came, or flow control stopped reading):
        a client that has gone answers it with a TCP reset, and the next
        write fails.  L{None} when nothing is outstanding: nothing to ask.
        """
        return _wire.PROBE if self.outstanding else None

    def item(self, msgid: int, item: Any, method: str) -> bytes:
        """
        The message carrying one item of the stream C{msgid}.

        @raise RpcError: C{InvalidResult} if msgpack cannot encode it, or
            C{MessageTooLarge} if it is over the maximum message size: the
            stream ends with that error.
        """
        try:
            payload = _wire.encodeItem(msgid, item)
        except Exception as e:
            raise InvalidResult(
                f"an item of {method} cannot be sent: {_wire.whyUnencodable(e)}"
            ) from None
        if len(payload) > self.settings.maxMessageSize:
            raise MessageTooLarge(
                f"an item of {method}() is {len(payload)} bytes, more than the "
                f"maximum message size of {self.settings.maxMessageSize} bytes"
            )
        return payload

    def result(self, msgid: int, result: Any, method: str) -> bytes:
        """
        The response carrying C{result}.

        @raise RpcError: C{InvalidResult} if msgpack cannot encode it, or
            C{MessageTooLarge} if it is over the maximum message size: send
            that error instead (see L{error}).
        """
        # _wire.encodeResult, inline, with this thread's packer.
        try:
            packer = _perThread.packer
        except AttributeError:
            packer = _threadPacker()
        try:
            payload: bytes = packer.pack([_RESPONSE, msgid, None, result])
        except Exception as e:
            self.settings.log.emit(
                _log,
                LogLevel.error,
                "{peer}: {method} #{msgid} returned a result msgpack cannot encode: {error}",
                self.peer,
                method=method,
                msgid=msgid,
                error=e,
            )
            raise InvalidResult(
                f"the result of {method} cannot be sent: {_wire.whyUnencodable(e)}"
            ) from None
        if len(payload) > self.settings.maxMessageSize:
            raise MessageTooLarge(
                f"the result of {method}() is {len(payload)} bytes, more than the "
                f"maximum message size of {self.settings.maxMessageSize} bytes"
            )
        return payload

    def errorFor(
        self, failure: Failure, msgid: int | None = None, method: str = ""
    ) -> dict[str, Any]:
        """
        The error map sent for the failed call C{msgid}: an L{RpcError} as it
        asks, a cancellation as C{DeadlineExceeded} when L{deadlinePassed}
        caused it and as C{Cancelled} otherwise, anything else as its class
        name and C{str()}; a traceback only when the server runs with debug.
        """
        exc = failure.value
        if isinstance(exc, RpcError):
            return exc.toWire()
        if isinstance(exc, CancelledError):
            expired = self.expired
            if expired is not None and msgid in expired:
                expired.discard(msgid)
                return DeadlineExceeded(
                    f"{method}() did not finish within its deadline; the server "
                    "cancelled it"
                ).toWire()
            return {"type": "Cancelled", "message": "the call was cancelled"}
        try:
            message = str(exc)
        except Exception:
            message = f"<unprintable {type(exc).__name__} object>"
        error: dict[str, Any] = {"type": type(exc).__name__, "message": message}
        if self.settings.debug:
            error["data"] = {"traceback": failure.getTraceback()}
        return error

    def error(self, msgid: int | None, error: dict[str, Any], method: str) -> bytes:
        """
        The error response for a call, whatever the error holds: one that
        msgpack cannot encode is sent as its type and message only, and one
        too large for the maximum message size without its data, then with
        its message cut.
        """
        try:
            payload = _wire.encodeError(msgid, error)
        except Exception as e:
            self.settings.log.emit(
                _log,
                LogLevel.error,
                "{peer}: {method} #{msgid}: its error cannot be encoded ({reason}); "
                "sending its type and message only",
                self.peer,
                method=method,
                msgid=msgid,
                reason=e,
            )
            error = {
                "type": _text(error.get("type")),
                "message": _text(error.get("message")),
            }
            payload = _wire.encodeError(msgid, error)
        if len(payload) > self.settings.maxMessageSize:
            payload = self._shrinkError(msgid, error, method)
        return payload

    def _shrinkError(
        self, msgid: int | None, error: dict[str, Any], method: str
    ) -> bytes:
        """
        An error response that fits the maximum message size: C{error}
        without its data, then with its message cut, or at worst a
        C{MessageTooLarge} error.
        """
        limit = self.settings.maxMessageSize
        shrunk = {"type": _text(error.get("type")), "message": ""}
        # The message is encoded with at most a 5-byte str header.
        room = limit - len(_wire.encodeError(msgid, shrunk)) - 5
        message = _text(error.get("message"))
        encoded = message.encode("utf-8")
        if len(encoded) > room:
            cut = room - len(_TRUNCATED)
            message = encoded[: max(cut, 0)].decode("utf-8", "ignore") + _TRUNCATED
        shrunk["message"] = message
        payload = _wire.encodeError(msgid, shrunk)
        if len(payload) <= limit:
            return payload
        tooLarge = MessageTooLarge(f"the error of {method}() is too large to send")
        return _wire.encodeError(msgid, tooLarge.toWire())
