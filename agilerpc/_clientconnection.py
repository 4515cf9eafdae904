"""
The client's side of one agilerpc connection, without I/O:
L{ClientConnection}.

It knows no reactor, socket or clock, in the way C{h2.connection} sits under
C{twisted.web._http2}: calls go in and come out as payloads to write (each
framed by the caller, see L{agilerpc._framing.writeFrame}); received bytes
go in and come out as calls to an L{IClientEvents} provider.  The Twisted
client (L{agilerpc._client.RpcClientProtocol}) and the blocking client
(L{agilerpc._blocking.TcpRpcClient}) only move bytes, run timers and deliver
outcomes; every rule of docs/PROTOCOL.md a client must keep is here, once:

 - msgids count up from 0 on each connection and wrap at 2**32; a goaway's
   C{last_msgid} is compared with serial-number arithmetic (RFC 1982), which
   holds while fewer than 2**31 calls are in flight;
 - the hello is checked (protocol version 1) and gives the largest request
   the server accepts; a request larger than that fails locally with
   L{RequestTooLarge} and nothing is sent;
 - the auth frame goes first, before any request;
 - incoming frames are capped at the client's own limit
   (C{maxMessageSize}, 8 MiB by default), which the hello may lower but
   never raises: a frame header over it is a protocol violation, found
   before its body is buffered;
 - a goaway before the hello means the connection was not served (nothing
   sent on it ran): a failed attempt, to retry with backoff;
 - a goaway after the hello splits the calls in flight: those after its
   C{last_msgid} provably did not run and are handed back to be resent;
   those up to it are answered here;
 - a goaway whose reason is C{"Unauthorized"}, or an C{Unauthorized} error
   for a call in flight or with a nil msgid, refuses the connection: every
   call in flight fails with L{Unauthorized}, and nothing is resent;
 - anything that is not a valid server message is a protocol violation: the
   connection must be aborted and every call in flight fails as lost (it
   may have run);
 - a response that cannot be decoded but whose C{[1, msgid, ...} can be
   read fails only the call C{msgid} with L{InvalidResponse};
 - control messages other than hello and goaway are ignored, and an error
   with a nil msgid is reported but fails no call (except Unauthorized);
 - a call's deadline (the seconds its caller has left) is sent only to a
   server whose hello lists the C{deadline} feature, and its metadata only
   to one that lists C{metadata}, within the hello's C{max_metadata_size}:
   metadata the server cannot take fails the call locally, unsent, while
   optional metadata (a trace context) is left off;
 - a stream is asked only of a server whose hello lists the C{stream}
   feature; its items come in as events, and the credit that lets the
   server send more goes out as the caller's consumer takes them, whenever
   half the window has been taken; the window starts at what the caller
   asked for, then holds about C{streamBuffer} bytes of the items seen so
   far (from L{MIN_WINDOW} to L{MAX_WINDOW} items); an item beyond the
   credit granted, or for a call that is not a stream, is a protocol
   violation.

The calls are the caller's objects: the core keeps them by msgid and hands
them back in events, so the common response costs one decode and one
dictionary lookup.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack
from zope.interface import Interface

from . import _wire
from ._errors import (
    FeatureNotSupported,
    InvalidResponse,
    MetadataTooLarge,
    RemoteError,
    RequestTooLarge,
    RpcError,
    StreamsNotSupported,
    Unauthorized,
)
from ._framing import FrameReceiver
from ._wire import HEADER

# The goaway reason (and error type) of a server refusing a connection that
# did not authenticate.
UNAUTHORIZED = "Unauthorized"

DEFAULT_MAX_MESSAGE_SIZE = _wire.DEFAULT_MAX_MESSAGE_SIZE

_HALF = 2**31
_WRAP = 2**32
_RESPONSE = _wire.RESPONSE
_ITEM = _wire.ITEM
_CONTROL = _wire.CONTROL
_MAX_MSGID = _wire.MAX_MSGID
_unpackb = msgpack.unpackb
_isMsgid = _wire.isMsgid
_REQUEST = _wire.REQUEST
_perThread = _wire._perThread
_threadPacker = _wire.threadPacker
_unpackFrom = HEADER.unpack_from


#: Bytes of a stream's items the client lets the server send ahead of its
#: consumer, once it has seen how large they are.
DEFAULT_STREAM_BUFFER = 1024 * 1024
#: The fewest and the most items a stream's window holds.
MIN_WINDOW = 2
MAX_WINDOW = 4096

#: The shortest deadline sent, in seconds: a call whose time is (about) up
#: when it is sent still tells the server so, rather than sending none.
MIN_DEADLINE = 0.001


class _Stream:
    """
    What the client knows of one stream in flight.

    @ivar window: the items it aims to let the server send ahead of the
        consumer.
    @ivar left: the items the server may still send.
    @ivar ahead: the items granted and not taken yet (on their way, or
        waiting for the consumer).
    @ivar received: items received so far.
    @ivar size: their payload bytes.
    """

    __slots__ = ("ahead", "left", "received", "size", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.left = window
        self.ahead = window
        self.received = 0
        self.size = 0


def after(msgid: int, last: int) -> bool:
    """
    Was C{msgid} sent after C{last}?  msgids count up from 0 on each
    connection and wrap at 2**32; fewer than 2**31 are ever in flight.
    """
    return 0 < (msgid - last) % _WRAP < _HALF


def _refuseExtension(code: int, data: bytes) -> Any:
    # PROTOCOL.md section 3: extension types are not part of the protocol.
    raise ValueError(f"extension type {code}")


class State(enum.Enum):
    """
    The states of a L{ClientConnection}.
    """

    #: Open, waiting for the server's hello; nothing may be sent but auth.
    AWAITING_HELLO = "awaiting hello"
    #: The hello came: calls may be sent.
    READY = "ready"
    #: A goaway came: no more calls; those up to its last msgid are answered.
    GOING_AWAY = "going away"
    #: The server refused the token (or its lack): nothing more is answered.
    REFUSED = "refused"
    #: A goaway came before the hello: the connection was not served.
    NOT_SERVED = "not served"
    #: The server broke the protocol: the connection must be aborted.
    BROKEN = "broken"
    #: The transport is gone.
    CLOSED = "closed"


class IClientEvents(Interface):
    """
    What a L{ClientConnection} reports about the bytes it was given.  The
    calls are the objects given to L{ClientConnection.sendRequest}.
    """

    def connectionReady(info: dict[str, Any]) -> None:
        """
        The server's hello came, with this info map: calls may be sent.
        """

    def callAnswered(call: Any, result: Any) -> None:
        """
        C{call} was answered with C{result}: for a stream, its end.
        """

    def itemReceived(call: Any, item: Any) -> None:
        """
        The stream C{call} sent C{item}.  Tell L{ClientConnection.consumed}
        when the caller's consumer has taken it.
        """

    def callFailed(call: Any, error: RpcError) -> None:
        """
        C{call} failed: with the error the server sent (a L{RemoteError}), or
        with L{InvalidResponse} when its response could not be decoded (it
        may have run).  The connection goes on.
        """

    def goawayReceived(reason: str | None, unrun: list[Any]) -> None:
        """
        The server sent a goaway: it takes no more calls on this connection.
        C{unrun} (in the order they were sent) provably did not run and may
        be sent again elsewhere; the others in flight are still answered
        here.  Close the connection once L{ClientConnection.finished}.
        """

    def connectionRefused(calls: list[Any], error: Unauthorized) -> None:
        """
        The server refused this connection's token (or its lack of one).
        C{calls} (every call in flight) did not run and must not be resent:
        fail them, and the calls waiting for a connection, with C{error}.
        """

    def connectionNotServed(reason: str | None) -> None:
        """
        A goaway came before the hello (C{reason}: C{"ServerBusy"}, say):
        nothing sent on this connection ran.  Close it, and count it as a
        failed connection attempt (retry with backoff).
        """

    def protocolViolation(why: str, lost: list[Any]) -> None:
        """
        The server sent something that is not a valid server message.  Abort
        the connection; C{lost} (every call in flight) may have run: fail
        them as lost, never resend them.
        """

    def serverError(error: RpcError) -> None:
        """
        The server sent an error with a nil msgid: it concerns no call (log
        it).
        """


class ClientConnection(FrameReceiver):
    """
    The client's side of one connection: see the module docstring.

    Give it every byte received (L{dataReceived}) and, once, the end of the
    connection (L{connectionLost}); write what L{connectionMade},
    L{sendRequest}, L{sendNotification} and L{cancel} return, each as one
    frame.

    @ivar state: a L{State}.
    @ivar hello: the server's hello info, once it came.
    @ivar maxSendSize: the largest request the server accepts (from its
        hello; L{_wire.DEFAULT_MAX_MESSAGE_SIZE} until then).
    @ivar calls: the calls in flight, by msgid (read only: the core changes
        it).
    @ivar draining: the client sends nothing more on this connection
        (L{drain}).
    """

    paused = False
    draining = False

    def __init__(
        self,
        events: IClientEvents,
        token: bytes | None = None,
        maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
        streamBuffer: int = DEFAULT_STREAM_BUFFER,
    ) -> None:
        self._events = events
        self._token = token
        # FrameReceiver's limit: the client's own, whatever the hello says.
        self.MAX_LENGTH = maxMessageSize
        self.maxSendSize = _wire.DEFAULT_MAX_MESSAGE_SIZE
        self.hello: dict[str, Any] | None = None
        # What the hello lists in its features.
        self.features: frozenset[str] = frozenset()
        self.maxMetadataSize = _wire.DEFAULT_MAX_METADATA_SIZE
        self.state = State.AWAITING_HELLO
        self.calls: dict[int, Any] = {}
        # The streams in flight, by msgid.
        self.streams: dict[int, _Stream] = {}
        self.streamBuffer = streamBuffer
        self._nextMsgid = 0
        self.startReceiving()

    def __repr__(self) -> str:
        return f"<ClientConnection {self.state.value}, {len(self.calls)} in flight>"

    # -- what the caller asks ------------------------------------------------

    def connectionMade(self) -> bytes | None:
        """
        The connection is open: the payload to send first (the auth frame,
        when there is a token), or L{None}.
        """
        if self._token is None:
            return None
        # First, before any request: the server reads frames in order, and
        # answers a right token with nothing.
        return _wire.pack([_CONTROL, "auth", self._token])

    def options(
        self,
        method: str,
        deadline: float | None = None,
        metadata: dict[str, str | bytes] | None = None,
        optional: dict[str, str | bytes] | None = None,
        metadataSize: int | None = None,
    ) -> dict[str, Any] | None:
        """
        The options map (PROTOCOL.md 4.1) of a call to send on this
        connection (once it is L{State.READY}), or L{None} when it has none.

        @param deadline: the seconds the caller has left, sent to a server
            that lists the C{deadline} feature (at least L{MIN_DEADLINE}).
        @param metadata: the call's metadata (checked by
            L{_wire.checkMetadata}).
        @param optional: more metadata, left off (silently) when the server
            does not take metadata; C{metadata} wins where both have a key.
        @param metadataSize: C{metadata}'s size (L{_wire.metadataSize}), if
            the caller measured it already.
        @raise FeatureNotSupported: if there is C{metadata} and the server's
            hello does not list the C{metadata} feature.
        @raise MetadataTooLarge: if the metadata is larger than the hello's
            C{max_metadata_size}.
        """
        options: dict[str, Any] = {}
        features = self.features
        if deadline is not None and _wire.DEADLINE in features:
            options[_wire.DEADLINE] = max(deadline, MIN_DEADLINE)
        if metadata or optional:
            if _wire.METADATA not in features:
                if metadata:
                    raise FeatureNotSupported(
                        f"{method}(): the server does not announce metadata; "
                        "the call was not sent"
                    )
            else:
                merged = (
                    {**optional, **metadata}
                    if optional and metadata
                    else (metadata or optional)
                )
                assert merged is not None
                size = (
                    metadataSize
                    if metadataSize is not None and merged is metadata
                    else _wire.metadataSize(merged)
                )
                if size > self.maxMetadataSize:
                    raise MetadataTooLarge(
                        f"{method}(): its metadata holds {size} bytes, more than "
                        f"the server's max_metadata_size of {self.maxMetadataSize}; "
                        "the call was not sent"
                    )
                options[_wire.METADATA] = merged
        return options or None

    def sendRequest(
        self,
        call: Any,
        method: str,
        args: Any,
        kwargs: dict[str, Any] | None,
        options: dict[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """
        Send a call (only when L{State.READY}): C{call} is reported back in
        the events that end it.

        @param options: its options map, from L{options}.
        @return: its msgid, and the payload to write as one frame.
        @raise RequestTooLarge: if the request is larger than the server
            accepts; nothing is sent.
        @raise TypeError: (or L{ValueError} or L{OverflowError}, as msgpack
            raises them) if the arguments cannot be encoded.
        """
        msgid = self._nextMsgid
        # _wire.encodeRequest, inline, with this thread's packer.
        try:
            packer = _perThread.packer
        except AttributeError:
            packer = _threadPacker()
        payload: bytes = packer.pack(
            [_REQUEST, msgid, method, args, kwargs]
            if kwargs
            else [_REQUEST, msgid, method, args]
            if options is None
            else [_REQUEST, msgid, method, args, kwargs or {}, options]
        )
        if len(payload) > self.maxSendSize:
            raise self._tooLarge(method, len(payload))
        self._nextMsgid = (msgid + 1) & _MAX_MSGID
        self.calls[msgid] = call
        return msgid, payload

    def sendStream(
        self,
        call: Any,
        method: str,
        args: Any,
        kwargs: dict[str, Any] | None,
        window: int,
        options: dict[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """
        Send a stream request (PROTOCOL.md 4.5), whose items are granted
        C{window} at a time: as L{sendRequest}.

        @raise StreamsNotSupported: if the server's hello does not list the
            C{stream} feature; nothing is sent.
        """
        if _wire.STREAM not in self.features:
            raise StreamsNotSupported(
                f"{method}(): the server does not announce streams; it was not sent"
            )
        msgid = self._nextMsgid
        payload = _wire.pack(
            [
                _REQUEST,
                msgid,
                method,
                args,
                kwargs or {},
                {_wire.STREAM: window, **(options or {})},
            ]
        )
        if len(payload) > self.maxSendSize:
            raise self._tooLarge(method, len(payload))
        self._nextMsgid = (msgid + 1) & _MAX_MSGID
        self.calls[msgid] = call
        self.streams[msgid] = _Stream(window)
        return msgid, payload

    def consumed(self, msgid: int) -> bytes | None:
        """
        The caller's consumer took one item of the stream C{msgid}: the
        credit to send when half the window has been taken, else L{None}.
        The window is sized anew each time from the items seen.
        """
        stream = self.streams.get(msgid)
        if stream is None:
            return None
        ahead = stream.ahead = stream.ahead - 1
        if ahead * 2 > stream.window:
            return None
        window = self.streamBuffer * stream.received // max(stream.size, 1)
        window = stream.window = min(max(window, MIN_WINDOW), MAX_WINDOW)
        grant = window - ahead
        if grant <= 0:
            return None
        stream.ahead = window
        stream.left += grant
        return _wire.encodeCredit(msgid, grant)

    def sendNotification(
        self,
        method: str,
        args: Any,
        kwargs: dict[str, Any] | None,
        options: dict[str, Any] | None = None,
    ) -> bytes:
        """
        The payload of a notification; of C{options} (from L{options}), its
        metadata goes with it (a notification has no deadline).

        @raise RequestTooLarge: if it is larger than the server accepts.
        @raise TypeError: (or another msgpack error) if it cannot be encoded.
        """
        metadata = None if options is None else options.get(_wire.METADATA)
        payload = _wire.encodeNotification(
            method,
            args,
            kwargs,
            None if metadata is None else {_wire.METADATA: metadata},
        )
        if len(payload) > self.maxSendSize:
            raise self._tooLarge(method, len(payload))
        return payload

    def _tooLarge(self, method: str, size: int) -> RequestTooLarge:
        return RequestTooLarge(
            f"{method}(): the request is {size} bytes, more than the server's "
            f"maximum message size of {self.maxSendSize} bytes; it was not sent"
        )

    def cancel(self, msgid: int) -> bytes | None:
        """
        Forget the call C{msgid} (a late answer will be dropped) and return
        the payload that asks the server to cancel it, or L{None} if it is
        not in flight.
        """
        self.streams.pop(msgid, None)
        if self.calls.pop(msgid, None) is None:
            return None
        return _wire.encodeCancel(msgid)

    def connectionLost(self) -> list[Any]:
        """
        The connection ended: the calls that were in flight, which may have
        run.
        """
        self.state = State.CLOSED
        self.discardInput()
        lost = list(self.calls.values())
        self.calls.clear()
        self.streams.clear()
        return lost

    @property
    def inflight(self) -> int:
        """
        How many calls were sent and are not answered yet.
        """
        return len(self.calls)

    @property
    def awaiting(self) -> int:
        """
        How many more bytes the frame being received needs (0 when no frame
        is partly received, or the header is not complete yet).
        """
        if not self._buffered:
            return 0
        return max(self._needed - self._buffered, 0)

    def drain(self) -> None:
        """
        The client will send nothing more on this connection (its server was
        removed from the client's endpoints): like a goaway from the client's
        side, the connection is L{finished} once every call in flight is
        answered.  A goaway the server sends meanwhile still counts: the
        calls it proves unrun are handed back to be sent elsewhere.
        """
        self.draining = True

    @property
    def finished(self) -> bool:
        """
        Whether nothing more will come of this connection: it is going away
        (or refused, or L{drain}ed) and every call it still owed is answered.
        Close it.
        """
        return not self.calls and (
            self.draining
            or self.state is State.GOING_AWAY
            or self.state is State.REFUSED
        )

    # -- what the server sends -------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._buffered or self._discarding or self.paused:
            FrameReceiver.dataReceived(self, data)
            return
        # FrameReceiver.dataReceived's usual case, inline: nothing buffered,
        # whole frames within the limit.  What is left (part of a frame, one
        # too large, or the rest after a pause) goes to FrameReceiver, as the
        # start of a chunk.
        offset = 0
        end = len(data)
        while end - offset >= 4:
            (length,) = _unpackFrom(data, offset)
            stop = offset + 4 + length
            if stop > end or length > self.MAX_LENGTH:
                break
            self.stringReceived(data[offset + 4 : stop])
            offset = stop
            if self._discarding or self.paused:
                break
        if offset < end and not self._discarding:
            FrameReceiver.dataReceived(self, data[offset:] if offset else data)

    def stringReceived(self, payload: bytes) -> None:
        try:
            # max_ext_len=0 refuses extension values with data (the
            # timestamp type -1 too, which never reaches ext_hook).
            message = _unpackb(
                payload, strict_map_key=False, max_ext_len=0, ext_hook=_refuseExtension
            )
        except Exception as e:
            self._undecodable(payload, e)
            return
        # The common cases, flat: a result for a call in flight, an item of a
        # stream within its credit.
        if type(message) is list:
            size = len(message)
            if size == 4:
                code, msgid, error, result = message
                if type(code) is int and code == _RESPONSE and error is None:
                    call = self.calls.pop(msgid, None) if type(msgid) is int else None
                    if call is not None:
                        if self.streams:
                            self.streams.pop(msgid, None)
                        self._events.callAnswered(call, result)
                        return
            elif size == 3:
                code, msgid, item = message
                if type(code) is int and code == _ITEM and type(msgid) is int:
                    stream = self.streams.get(msgid)
                    if stream is not None and stream.left:
                        stream.left -= 1
                        stream.received += 1
                        stream.size += len(payload)
                        self._events.itemReceived(self.calls[msgid], item)
                        return
        self._message(message)

    def lengthLimitExceeded(self, length: int) -> None:
        self._violation(
            f"the server sent a frame of {length} bytes, more than this client's "
            f"limit of {self.MAX_LENGTH} bytes"
        )

    def _undecodable(self, payload: bytes, error: Exception) -> None:
        """
        A frame msgpack cannot decode: if it starts as a response to a call
        in flight, fail that call alone; the frame boundaries are intact.
        """
        try:
            unpacker = msgpack.Unpacker()
            unpacker.feed(payload)
            isResponse = unpacker.read_array_header() == 4
        except Exception:
            isResponse = False
        msgid = _wire.peekMsgid(payload, _RESPONSE) if isResponse else None
        if msgid is not None and self.hello is not None:
            call = self.calls.pop(msgid, None)
            if call is not None:
                self._events.callFailed(
                    call,
                    InvalidResponse(
                        f"the response to msgid {msgid} cannot be decoded "
                        f"({type(error).__name__}: {error}); the call may have run"
                    ),
                )
            # Otherwise: the late answer of a call given up on.
            return
        self._violation(f"not a msgpack message ({type(error).__name__}: {error})")

    def _message(self, message: Any) -> None:
        """
        Every message but the common answer.
        """
        if type(message) is not list or not message:
            self._violation(f"not a message: {message!r:.100}")
            return
        code = message[0]
        if type(code) is int and code == _RESPONSE:
            if len(message) != 4:
                self._violation(f"a response of {len(message)} elements, not 4")
                return
            msgid, error, result = message[1], message[2], message[3]
            if msgid is not None and not _isMsgid(msgid):
                self._violation(f"a response with msgid {msgid!r:.50}")
                return
            if error is not None and type(error) is not dict:
                self._violation(f"a response with error {error!r:.50}")
                return
            if self.hello is None:
                self._violation("a response before the hello")
                return
            self._response(msgid, error, result)
        elif type(code) is int and code == _ITEM:
            self._item(message)
        elif type(code) is int and code == _CONTROL:
            if len(message) < 2 or type(message[1]) is not str:
                self._violation("a control message whose kind is not a string")
                return
            kind = message[1]
            if kind == "hello":
                self._hello(message[2:])
            elif kind == "goaway":
                self._goaway(message[2:])
            # Every other control kind (even those only clients send, such
            # as cancel and auth) is ignored, as the protocol asks.
        else:
            self._violation(f"unexpected message type {code!r:.50}")

    def _item(self, message: list[Any]) -> None:
        """
        An item of a stream: to its call, within the credit granted.
        """
        if len(message) != 3 or not _isMsgid(message[1]):
            self._violation(
                f"a stream item that is not [4, msgid, item]: {message!r:.100}"
            )
            return
        msgid = message[1]
        stream = self.streams.get(msgid)
        if stream is None:
            if msgid in self.calls:
                self._violation(f"a stream item for msgid {msgid}, which is no stream")
            # Otherwise: an item of a stream cancelled, already dropped.
            return
        # The rest (an item within its credit) took stringReceived's path.
        self._violation(f"a stream item for msgid {msgid} beyond its credit")

    def _response(
        self, msgid: int | None, error: dict[str, Any] | None, result: Any
    ) -> None:
        if (
            error is not None
            and error.get("type") == UNAUTHORIZED
            and (msgid is None or msgid in self.calls)
        ):
            refusal = RemoteError.fromWire(error)
            assert isinstance(refusal, Unauthorized)
            self._refuse(refusal)
            return
        if msgid is None:
            # An error the server could not tie to a call (a frame it
            # refused, say): nothing to answer, but worth knowing.
            self._events.serverError(
                InvalidResponse("a result with a nil msgid")
                if error is None
                else RemoteError.fromWire(error)
            )
            return
        call = self.calls.pop(msgid, None)
        if call is None:
            # The answer to a call that was cancelled or timed out.
            return
        if self.streams:
            self.streams.pop(msgid, None)
        if error is None:
            self._events.callAnswered(call, result)
        else:
            self._events.callFailed(call, RemoteError.fromWire(error))

    def _hello(self, body: list[Any]) -> None:
        info = body[0] if body else None
        if self.hello is not None or self.state is not State.AWAITING_HELLO:
            self._violation("a second hello")
            return
        if not isinstance(info, dict):
            self._violation(f"the hello's info is not a map: {info!r:.100}")
            return
        protocol = info.get("protocol")
        if type(protocol) is not int or protocol != _wire.PROTOCOL_VERSION:
            self._violation(
                f"the server speaks protocol version {protocol!r:.50}; this client "
                f"speaks {_wire.PROTOCOL_VERSION}"
            )
            return
        size = info.get("max_message_size")
        if type(size) is int and size > 0:
            self.maxSendSize = size
            # The server sends nothing larger either (PROTOCOL.md section 4),
            # but its word never raises the client's own limit.
            if size < self.MAX_LENGTH:
                self.MAX_LENGTH = size
        features = info.get("features")
        if isinstance(features, list):
            self.features = frozenset(f for f in features if type(f) is str)
        size = info.get("max_metadata_size")
        if type(size) is int and size >= 0:
            self.maxMetadataSize = size
        self.hello = info
        self.state = State.READY
        self._events.connectionReady(info)

    def _goaway(self, body: list[Any]) -> None:
        last = body[0] if body else None
        reason = body[1] if len(body) > 1 and type(body[1]) is str else None
        state = self.state
        if state is State.AWAITING_HELLO and reason != UNAUTHORIZED:
            # Not served at all: whatever the reason, nothing ran.
            self.state = State.NOT_SERVED
            self.discardInput()
            self._events.connectionNotServed(reason)
            return
        if reason == UNAUTHORIZED:
            # Normative: its nil last_msgid does not mean "resend everything".
            self._refuse(
                Unauthorized(
                    "the server refused the connection: wrong or missing token"
                )
            )
            return
        if state is not State.READY:
            # A second goaway changes nothing.
            return
        if last is not None and not _isMsgid(last):
            # Without a valid last msgid nothing can be proved unrun.
            self._violation(f"a goaway with an invalid last msgid {last!r:.50}")
            return
        self.state = State.GOING_AWAY
        inflight = self.calls
        unrunIds = [m for m in inflight if last is None or after(m, last)]
        unrun = [inflight.pop(msgid) for msgid in unrunIds]
        for msgid in unrunIds:
            self.streams.pop(msgid, None)
        self._events.goawayReceived(reason, unrun)

    def _refuse(self, error: Unauthorized) -> None:
        state = self.state
        if state is State.REFUSED or state is State.CLOSED or state is State.BROKEN:
            return
        self.state = State.REFUSED
        calls = list(self.calls.values())
        self.calls.clear()
        self._events.connectionRefused(calls, error)

    def _violation(self, why: str) -> None:
        self.state = State.BROKEN
        self.discardInput()
        lost = list(self.calls.values())
        self.calls.clear()
        self._events.protocolViolation(why, lost)
