"""
The server side of a connection: framing, dispatch, keepalive and goaway.
"""

from __future__ import annotations

import hmac
import inspect
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LogLevel
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _wire
from ._errors import (
    InvalidRequest,
    InvalidResult,
    MessageTooLarge,
    MethodNotFound,
    RpcError,
    Unauthorized,
)
from ._framing import LARGE_FRAME, FrameReceiver, packHeader, writeFrame
from ._registry import Method
from ._version import __version__

if TYPE_CHECKING:
    from twisted.python.failure import Failure as _Failure

    from ._metrics import ServerMetrics
    from ._registry import Registry

_log = Logger(namespace="agilerpc.server")


def _errorFromFailure(failure: Failure, debug: bool) -> dict[str, Any]:
    """
    The error map sent for a failed call: an L{RpcError} as it asks, a
    cancellation as C{Cancelled}, anything else as its class name and
    C{str()}; a traceback only when the server runs with debug.
    """
    exc = failure.value
    if isinstance(exc, RpcError):
        return exc.toWire()
    if isinstance(exc, CancelledError):
        return {"type": "Cancelled", "message": "the call was cancelled"}
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__name__} object>"
    error: dict[str, Any] = {"type": type(exc).__name__, "message": message}
    if debug:
        error["data"] = {"traceback": failure.getTraceback()}
    return error


_TRUNCATED = " [truncated]"


def _text(value: object) -> str:
    """
    C{value} as a str that msgpack can encode (no lone surrogates).
    """
    text = str(value) if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# Results that cannot hold an extension value or nest: no need to check
# what msgpack made of them.
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})

_PLAIN = "plain"
_DEFERRED = "Deferred"
_COROUTINE = "coroutine"

# What a handler returned, by type: isinstance(x, Deferred) goes through
# ABCMeta (Deferred is an Awaitable) and costs more than a dict lookup.
_kinds: dict[type, str] = {Deferred: _DEFERRED}


def _kindOf(result: object) -> str:
    if isinstance(result, Deferred):
        kind = _DEFERRED
    elif inspect.iscoroutine(result):
        kind = _COROUTINE
    else:
        kind = _PLAIN
    _kinds[type(result)] = kind
    return kind


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class RpcServerProtocol(FrameReceiver, Int32StringReceiver, TimeoutMixin):
    """
    One server connection.

    Sends a hello, then dispatches each request as its frame completes and
    answers it as soon as its handler finishes, in any order.  The keepalive
    timer runs only while no request is outstanding; when it fires, or the
    server shuts down, the connection ends gracefully with a goaway (see
    L{goAway}).
    """

    factory: RpcServerFactory
    # Always connected to a stream transport while it runs.
    transport: Any

    def __init__(self, factory: RpcServerFactory) -> None:
        self.factory = factory
        self.MAX_LENGTH = factory.maxMessageSize
        self._outstanding: dict[int, Deferred[Any]] = {}
        self._lastMsgid: int | None = None
        self._goawaySent = False
        self._readClosed = False
        self._writeClosed = False
        self._disconnected = False
        self._lingerCall: IDelayedCall | None = None
        self._authenticated = factory.authToken is None
        # Reading stops while the transport's send buffer is full (it pauses
        # us as its producer) or while maxInFlight calls are outstanding.
        self._writePaused = False
        self.peer: IAddress | None = None

    # TimeoutMixin takes its clock from here, so tests can use task.Clock.
    def callLater(self, period: float, func: Any) -> IDelayedCall:
        return self.factory.reactor.callLater(period, func)

    # -- connection life ----------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            with suppress(OSError):  # e.g. a UNIX socket
                setNoDelay(True)
        factory = self.factory
        if (
            factory.maxConnections is not None
            and factory.accepted >= factory.maxConnections
        ):
            # Refused instead of a hello: a client that never got a hello
            # treats this as a failed attempt and backs off.
            _log.warn(
                "{peer}: refused, {count} connections are open (--max-connections)",
                peer=self.peer,
                count=factory.accepted,
            )
            factory.connections.add(self)
            self.goAway("ServerBusy")
            return
        factory.connections.add(self)
        factory.accepted += 1
        self._accepted = True
        # Responses go out through the transport's buffer; when it is full,
        # the transport pauses us and we stop reading requests.  Over TLS,
        # wait for the handshake: the TLS layer buffers the hello until then
        # and would pause us, and pausing stops it reading the handshake.
        if not callable(getattr(self.transport, "getPeerCertificate", None)):
            self.transport.registerProducer(self, True)
        self._send(_wire.encodeHello(factory.hello))
        if factory._stopping:
            # Accepted while the server shuts down: nothing will be served.
            self.goAway("shutdown")
            return
        self._idle()

    _accepted = False

    #: Requests dispatched on this connection.
    callsServed = 0

    def connectionLost(self, reason: _Failure | None = None) -> None:
        self._disconnected = True
        if self._accepted:
            self.factory.accepted -= 1
        self.factory.closedCallsServed += self.callsServed
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        if self._lingerCall is not None and self._lingerCall.active():
            self._lingerCall.cancel()
        self._lingerCall = None
        self.factory.connectionClosed(self)

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: from now on a full send buffer pauses us.
        """
        if not self._disconnected:
            self.transport.registerProducer(self, True)

    def readConnectionLost(self) -> None:
        """
        The client closed its side: it will send nothing more.  Answer what is
        outstanding, then close.  A frame cut off by the close is dropped
        undispatched.
        """
        self._readClosed = True
        self.discardInput()
        # The connection is closing already: an idle goaway now would be
        # written after (or race with) our own close.
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        if not self._outstanding:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Our side is closed (see L{_halfClose}); keep reading until the client
        closes too.
        """

    # -- flow control -------------------------------------------------------

    def pauseProducing(self) -> None:
        """
        The transport's send buffer is full (a client that does not read):
        stop reading its requests until it drains.
        """
        self._writePaused = True
        self._updateReading()

    def resumeProducing(self) -> None:
        """
        The transport's send buffer drained: read again.
        """
        self._writePaused = False
        self._updateReading()

    def stopProducing(self) -> None:
        self._writePaused = True
        self.paused = True

    def _updateReading(self) -> None:
        """
        Pause or resume reading from the transport as the send buffer and the
        number of outstanding calls require.
        """
        if self._disconnected:
            return
        pause = self._writePaused or len(self._outstanding) >= self.factory.maxInFlight
        if pause and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        elif not pause and self.paused:
            self.paused = False
            self.transport.resumeProducing()
            # Frames that arrived before the pause are still buffered.
            self.dataReceived(b"")

    # -- receiving ----------------------------------------------------------

    def stringReceived(self, payload: bytes) -> None:
        try:
            message = _wire.parseClientMessage(payload, self.factory.maxContainers)
        except InvalidRequest as e:
            if self._goawaySent:
                return
            if not self._authenticated:
                # An unauthenticated peer learns nothing about its input.
                data = e.data
                msgid = data.get("msgid") if isinstance(data, dict) else None
                self._unauthorized(msgid, "no auth before the first message")
                return
            self._refuse(e)
            if not self._outstanding:
                self._idle()
            return
        if self._goawaySent:
            # Nothing is dispatched after a goaway; cancels of calls still
            # running are still honoured.
            if type(message) is _wire.Control:
                self._control(message)
            return
        if not self._authenticated:
            self._authenticate(message)
            return
        if type(message) is _wire.Request:
            self._request(message)
        elif type(message) is _wire.Notification:
            self._notification(message)
        else:
            assert type(message) is _wire.Control
            self._control(message)
        # Restarted once per chunk received (see dataReceived), not per frame.
        self._framesReceived = True

    _framesReceived = False

    def dataReceived(self, data: bytes) -> None:
        FrameReceiver.dataReceived(self, data)
        if self._framesReceived:
            self._framesReceived = False
            if not self._outstanding:
                self._idle()

    def lengthLimitExceeded(self, length: int) -> None:
        """
        A frame longer than the maximum message size: refuse it without
        reading its body, and close gracefully.  The stream cannot be resynced,
        so everything after it is discarded.
        """
        self.discardInput()
        error = MessageTooLarge(
            f"a frame of {length} bytes exceeds the maximum message size of "
            f"{self.MAX_LENGTH} bytes"
        )
        _log.warn(
            "{peer}: refused a frame of {length} bytes (limit {limit})",
            peer=self.peer,
            length=length,
            limit=self.MAX_LENGTH,
        )
        self._send(_wire.encodeError(None, error.toWire()))
        self.goAway("MessageTooLarge")

    def _authenticate(
        self, message: _wire.Request | _wire.Notification | _wire.Control
    ) -> None:
        """
        The first frame of a connection to a server with a token must be
        C{[3, "auth", token]}; anything else, or a wrong token, is refused
        with C{Unauthorized} and the connection closes.
        """
        token = self.factory.authToken
        assert token is not None
        if type(message) is _wire.Control and message.kind == "auth":
            offered = message.body[0] if message.body else None
            if isinstance(offered, str):
                offered = offered.encode("utf-8")
            if isinstance(offered, bytes) and hmac.compare_digest(offered, token):
                self._authenticated = True
                self._idle()
                return
            why = "wrong token"
        else:
            why = "no auth before the first message"
        self._unauthorized(
            message.msgid if type(message) is _wire.Request else None, why
        )

    def _unauthorized(self, msgid: int | None, why: str) -> None:
        """
        Refuse this connection: an C{Unauthorized} error for C{msgid}, then a
        goaway.
        """
        # Never log the token offered: it may be a real one, mistyped.
        _log.warn("{peer}: refused: {why}", peer=self.peer, why=why)
        error = Unauthorized(f"authentication failed: {why}")
        self._send(_wire.encodeError(msgid, error.toWire()))
        self.goAway("Unauthorized")

    def _refuse(self, error: InvalidRequest) -> None:
        data = error.data
        msgid = data.get("msgid") if isinstance(data, dict) else None
        if msgid is not None and msgid in self._outstanding:
            msgid = None
        self._send(_wire.encodeError(msgid, error.toWire()))

    def _control(self, message: _wire.Control) -> None:
        if message.kind == "cancel":
            if message.body and _wire.isMsgid(message.body[0]):
                d = self._outstanding.get(message.body[0])
                if d is not None:
                    d.cancel()
            elif not self._goawaySent:
                # After a goaway malformed messages get no answer (PROTOCOL.md).
                self._refuse(InvalidRequest("cancel needs a msgid"))
        # Other kinds are ignored, so that clients can add optional ones.

    # -- dispatch -----------------------------------------------------------

    def _request(self, request: _wire.Request) -> None:
        msgid = request.msgid
        if msgid in self._outstanding:
            error = InvalidRequest(
                f"msgid {msgid} is already outstanding on this connection",
                {"msgid": msgid},
            )
            self._send(_wire.encodeError(None, error.toWire()))
            return
        self._lastMsgid = msgid
        self.callsServed += 1
        try:
            d = self._invoke(request.method, request.args, request.kwargs)
        except RpcError as e:
            self._sendError(msgid, e.toWire(), request.method)
            return
        except Exception:
            self._callFailed(Failure(), msgid, request.method)
            return
        if _kinds.get(type(d)) is not _DEFERRED:
            # The common case: a plain function's result, sent at once.
            # (_invoke turned coroutines into Deferreds and met every
            # Deferred subclass, e.g. DeferredList, on the way.)
            self._sendResult(msgid, d, request.method)
            return
        if not self._outstanding:
            self.setTimeout(None)  # type: ignore[no-untyped-call]
        self._outstanding[msgid] = d
        if len(self._outstanding) >= self.factory.maxInFlight:
            self._updateReading()
        d.addCallbacks(
            self._callSucceeded,
            self._callFailed,
            callbackArgs=(msgid, request.method),
            errbackArgs=(msgid, request.method),
        )

    def _invoke(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """
        Run the handler for C{name}: its plain result, or a L{Deferred} for
        one that is not ready yet.

        @raise RpcError: C{MethodNotFound} or C{InvalidParams}.
        @raise Exception: whatever a synchronous handler raised.
        """
        method: Method | None = self.factory.registry.lookup(name)
        if method is None:
            method = self.factory.builtins.get(name)
            if method is None:
                raise MethodNotFound(f"no method named {name!r}")
        method.checkArguments(args, kwargs)
        if method.thread:
            reactor = self.factory.reactor
            return deferToThreadPool(
                reactor,  # type: ignore[arg-type]
                reactor.getThreadPool(),  # type: ignore[attr-defined]
                method.func,
                *args,
                **kwargs,
            )
        result = method.func(*args, **kwargs)
        kind = _kinds.get(type(result))
        if kind is None:
            kind = _kindOf(result)
        if kind is _PLAIN:
            return result
        if kind is _COROUTINE:
            return Deferred.fromCoroutine(result)
        return result

    def _notification(self, notification: _wire.Notification) -> None:
        method = notification.method
        try:
            result = self._invoke(method, notification.args, notification.kwargs)
        except Exception:
            self._notificationFailed(Failure(), method)
            return
        if isinstance(result, Deferred):
            result.addErrback(self._notificationFailed, method)

    def _notificationFailed(self, failure: Failure, method: str) -> None:
        _log.failure(
            "{peer}: notification {method} failed",
            failure,
            LogLevel.error,
            peer=self.peer,
            method=method,
        )

    def _callSucceeded(self, result: Any, msgid: int, method: str) -> None:
        del self._outstanding[msgid]
        self._sendResult(msgid, result, method)
        self._callFinished()

    def _callFailed(self, failure: Failure, msgid: int, method: str) -> None:
        finished = self._outstanding.pop(msgid, None) is not None
        if isinstance(failure.value, RpcError):
            _log.debug(
                "{peer}: {method} #{msgid}: {error}",
                peer=self.peer,
                method=method,
                msgid=msgid,
                error=failure.value,
            )
        elif not failure.check(CancelledError):
            _log.failure(
                "{peer}: {method} #{msgid} failed",
                failure,
                LogLevel.error,
                peer=self.peer,
                method=method,
                msgid=msgid,
            )
        self._sendError(msgid, _errorFromFailure(failure, self.factory.debug), method)
        if finished:
            self._callFinished()

    def _callFinished(self) -> None:
        if self._disconnected:
            # A call that outlives its connection must not restart the
            # keepalive timer (connectionLost stopped it for good).
            return
        if self.paused and not self._writePaused:
            self._updateReading()
        if self._outstanding:
            return
        if self._goawaySent:
            self._halfClose()
        elif self._readClosed:
            self.transport.loseConnection()
        else:
            self._idle()

    # -- sending ------------------------------------------------------------

    def _sendResult(self, msgid: int, result: Any, method: str) -> None:
        if self._disconnected:
            return
        try:
            payload = _wire.encodeResult(msgid, result)
            if type(result) not in _SCALARS:
                _wire.checkDecodable(payload)
        except Exception as e:
            _log.error(
                "{peer}: {method} #{msgid} returned a result msgpack cannot encode: {error}",
                peer=self.peer,
                method=method,
                msgid=msgid,
                error=e,
            )
            error: RpcError = InvalidResult(
                f"the result of {method} cannot be sent: {_wire.whyUnencodable(e)}"
            )
            self._sendError(msgid, error.toWire(), method)
            return
        if len(payload) > self.MAX_LENGTH:
            error = MessageTooLarge(
                f"the result of {method}() is {len(payload)} bytes, more than the "
                f"maximum message size of {self.MAX_LENGTH} bytes"
            )
            self._sendError(msgid, error.toWire(), method)
            return
        self._send(payload)

    def _sendError(self, msgid: int | None, error: dict[str, Any], method: str) -> None:
        """
        Send an error response for a call, whatever the error holds: one that
        msgpack cannot encode is sent as its type and message only, and one
        too large for the maximum message size without its data, then with
        its message cut.
        """
        try:
            payload = _wire.encodeError(msgid, error)
        except Exception as e:
            _log.error(
                "{peer}: {method} #{msgid}: its error cannot be encoded ({reason}); "
                "sending its type and message only",
                peer=self.peer,
                method=method,
                msgid=msgid,
                reason=e,
            )
            error = {
                "type": _text(error.get("type")),
                "message": _text(error.get("message")),
            }
            payload = _wire.encodeError(msgid, error)
        if len(payload) > self.MAX_LENGTH:
            payload = self._shrinkError(msgid, error, method)
        self._send(payload)

    def _shrinkError(
        self, msgid: int | None, error: dict[str, Any], method: str
    ) -> bytes:
        """
        An error response that fits the maximum message size: C{error}
        without its data, then with its message cut, or at worst a
        C{MessageTooLarge} error.
        """
        limit = self.MAX_LENGTH
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

    def _send(self, payload: bytes) -> None:
        if not self._disconnected and not self._writeClosed:
            size = len(payload)
            if size < LARGE_FRAME:
                # writeFrame's small case, inline: one Python call less per
                # response is 0.1 us of the ~2.3 us bench.serverloop measures.
                self.transport.write(packHeader(size) + payload)
            else:
                writeFrame(self.transport, payload)

    # -- keepalive and goaway -----------------------------------------------

    def _idle(self) -> None:
        """
        Nothing is outstanding: (re)start the keepalive timer.
        """
        if self.factory.keepalive and not self._goawaySent:
            if self.timeOut is None:
                self.setTimeout(self.factory.keepalive)  # type: ignore[no-untyped-call]
            else:
                self.resetTimeout()  # type: ignore[no-untyped-call]

    def timeoutConnection(self) -> None:
        """
        The connection was idle for the keepalive period.
        """
        _log.debug(
            "{peer}: idle for {keepalive}s, closing",
            peer=self.peer,
            keepalive=self.factory.keepalive,
        )
        self.goAway("idle")

    def goAway(self, reason: str) -> None:
        """
        Close gracefully: send a goaway naming the last dispatched msgid,
        dispatch nothing more, answer what is outstanding, then half-close and
        linger (see L{_halfClose}).
        """
        if self._goawaySent or self._disconnected:
            return
        self._goawaySent = True
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        self._send(_wire.encodeGoaway(self._lastMsgid, reason))
        if not self._outstanding:
            self._halfClose()

    def _halfClose(self) -> None:
        """
        Close our side, then keep reading (and discarding) until the client
        closes or the linger time passes.

        Closing both sides at once would make the kernel answer a request that
        is still on its way with a RST, which can destroy the goaway before the
        client reads it.
        """
        if self._writeClosed or self._disconnected:
            return
        if self._readClosed:
            self.transport.loseConnection()
            return
        self._writeClosed = True
        transport = self.transport
        loseWrite = getattr(transport, "loseWriteConnection", None)
        if loseWrite is None or callable(
            getattr(transport, "getPeerCertificate", None)
        ):
            # Over TLS, loseWriteConnection would reach past TLS to the TCP
            # socket; loseConnection sends TLS's close_notify and waits for
            # the client's, which is the same half-close one layer up.
            transport.loseConnection()
        else:
            loseWrite()
        self._lingerCall = self.factory.reactor.callLater(
            self.factory.lingerTimeout, self.transport.abortConnection
        )

    def abort(self) -> None:
        """
        Close now, whatever is outstanding.
        """
        if not self._disconnected:
            self.transport.abortConnection()


class RpcServerFactory(Factory):
    """
    Builds L{RpcServerProtocol}s serving C{registry}, and ends them all
    gracefully on L{shutdown}.

    @ivar reactor: the clock (and thread pool) used by every connection.
    @ivar keepalive: idle seconds before a connection is closed; 0 disables.
    @ivar maxMessageSize: the largest frame accepted, and sent, in bytes.
    @ivar lingerTimeout: how long a closing connection waits for the client to
        close before it is aborted.
    @ivar debug: send tracebacks to callers (for development only).
    @ivar maxInFlight: outstanding calls per connection before the server
        stops reading that connection until some finish.
    @ivar maxContainers: the arrays and maps one request may hold (its own
        array included); a request with more is refused with
        C{InvalidRequest} before they are built.  L{None}: no limit.
    @ivar maxConnections: accepted connections at once; further ones get a
        C{ServerBusy} goaway instead of a hello.  L{None}: no limit.
    @ivar authToken: when set, each connection must first send
        C{[3, "auth", token]} with this token.
    @ivar metrics: the counters kept for Prometheus (see L{agilerpc._metrics}),
        or L{None}: then nothing is counted or timed per call.
    @ivar logCalls: log every call (peer, method, msgid, outcome, duration)
        at debug level.
    @ivar connections: the open connections.
    @ivar accepted: how many of them were accepted (not refused as busy).
    @ivar started: when the factory was made, in C{reactor.seconds()}.
    @ivar builtins: the methods the server answers itself,
        C{system.ping} and C{system.stats}, found when the registry has no
        method of the name asked for.
    """

    protocol = RpcServerProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        registry: Registry,
        reactor: IReactorTime,
        keepalive: float = 75.0,
        maxMessageSize: int = _wire.DEFAULT_MAX_MESSAGE_SIZE,
        lingerTimeout: float = 5.0,
        debug: bool = False,
        maxInFlight: int = 1000,
        maxConnections: int | None = None,
        authToken: bytes | None = None,
        metrics: ServerMetrics | None = None,
        logCalls: bool = False,
        maxContainers: int | None = _wire.DEFAULT_MAX_CONTAINERS,
    ) -> None:
        if keepalive < 0:
            raise ValueError("keepalive must be >= 0")
        if maxMessageSize < 1:
            raise ValueError("maxMessageSize must be >= 1")
        if maxInFlight < 1:
            raise ValueError("maxInFlight must be >= 1")
        if maxConnections is not None and maxConnections < 1:
            raise ValueError("maxConnections must be >= 1 or None")
        if authToken is not None and not authToken:
            raise ValueError("authToken cannot be empty")
        if maxContainers is not None and maxContainers < 1:
            raise ValueError("maxContainers must be >= 1 or None")
        self.maxContainers = maxContainers
        self.maxInFlight = maxInFlight
        self.maxConnections = maxConnections
        self.authToken = authToken
        self.accepted = 0
        self.registry = registry
        self.reactor = reactor
        self.keepalive = keepalive
        self.maxMessageSize = maxMessageSize
        self.lingerTimeout = lingerTimeout
        self.debug = debug
        self.connections: set[RpcServerProtocol] = set()
        self.metrics = metrics
        self.logCalls = logCalls
        self._protocolClass: type[RpcServerProtocol] = RpcServerProtocol
        if metrics is not None or logCalls:
            # Only then: the plain protocol's hot path counts nothing.
            from ._metrics import ObservedServerProtocol

            self._protocolClass = ObservedServerProtocol
            if metrics is not None:
                metrics.factory = self
        self.started = reactor.seconds()
        self.closedCallsServed = 0
        self.builtins: dict[str, Method] = {
            "system.ping": Method("system.ping", self._ping, False),
            "system.stats": Method("system.stats", self.stats, False),
        }
        self._stopping = False
        self._drained: list[Deferred[None]] = []
        self.hello: dict[str, Any] = {
            "protocol": _wire.PROTOCOL_VERSION,
            "keepalive": keepalive,
            "max_message_size": maxMessageSize,
            "server": f"agilerpc/{__version__}",
        }
        if authToken is not None:
            self.hello["auth"] = "token"

    def buildProtocol(self, addr: IAddress | None) -> RpcServerProtocol:  # type: ignore[override]
        return self._protocolClass(self)

    def _ping(self) -> str:
        """
        Answer C{"pong"}: the server is up and its reactor answers.
        """
        return "pong"

    def stats(self) -> dict[str, Any]:
        """
        What C{system.stats} answers: C{uptime} (seconds), C{connections}
        (open now), C{calls} (requests dispatched since the start),
        C{in_flight} (dispatched and not answered yet) and C{server}.
        """
        connections = self.connections
        return {
            "uptime": self.reactor.seconds() - self.started,
            "connections": len(connections),
            "calls": self.closedCallsServed + sum(p.callsServed for p in connections),
            "in_flight": sum(len(p._outstanding) for p in connections),
            "server": self.hello["server"],
        }

    def connectionClosed(self, protocol: RpcServerProtocol) -> None:
        self.connections.discard(protocol)
        if not self.connections and self._drained:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def shutdown(self, grace: float = 10.0) -> Deferred[None]:
        """
        Send every connection a goaway, let dispatched calls finish for up to
        C{grace} seconds, then abort what is left.

        @return: fires when every connection is closed.
        """
        self._stopping = True
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        for protocol in list(self.connections):
            protocol.goAway("shutdown")
        deadline = self.reactor.callLater(grace, self._abortAll)

        def cancelDeadline(result: None) -> None:
            if deadline.active():
                deadline.cancel()
            return result

        d.addCallback(cancelDeadline)
        return d

    def _abortAll(self) -> None:
        for protocol in list(self.connections):
            _log.warn(
                "{peer}: still open after the shutdown grace, aborting",
                peer=protocol.peer,
            )
            protocol.abort()
