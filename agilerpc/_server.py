"""
The server's Twisted side: the protocol that moves one connection's bytes,
runs its timers and its calls, and the factory that serves a registry.

One request, socket to response: L{RpcServerProtocol.dataReceived} cuts the
stream into frames (L{FrameReceiver}); L{RpcServerProtocol.stringReceived}
asks the connection's L{ServerConnection} what the frame is; a request goes
to the server's L{Dispatcher}, which runs its handler; the result comes back
to L{ServerConnection.result}, which encodes the response the protocol
writes.  A handler that answers later (a Deferred, a coroutine, a thread)
is outstanding until it does.

The connection's life has explicit states (L{RpcServerProtocol.state}):
C{SERVING}, then C{GOAWAY_SENT} (a goaway was sent, outstanding calls are
still answered) or C{DRAINING} (the client closed its side), then
C{LINGERING} (our side is closed, the client's is read until it closes),
then C{CLOSED} (the connection is lost, or we aborted it).

A client that does not read its responses fills the transport's send
buffer, which pauses the connection: it reads no more requests.  Calls
already dispatched still answer; what they write from then on is unsent
until the transport resumes the connection (its buffer is empty), and is
counted in the factory's L{Budget} C{unsent}.  A connection that holds more
than C{maxUnsent}, or the one holding the most when all hold more than
C{maxUnsentTotal}, is aborted, as redis does past its
C{client-output-buffer-limit}.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _wire
from ._budget import Budget
from ._context import current
from ._dispatch import (
    COROUTINE,
    DEFERRED,
    PLAIN,
    STREAM,
    Dispatcher,
    deferred,
    kindOf,
    kinds,
)
from ._errors import InvalidRequest, RpcError
from ._framing import LARGE_FRAME, FrameReceiver, packHeader, writeFrame
from ._heap import HeapTrimmer
from ._observers import IServerObserver, observing
from ._peerlog import PeerLog
from ._registry import Method
from ._sendnow import descriptorOf, sendNow
from ._serverconnection import (
    Cancel,
    Credit,
    Refusal,
    ServerConnection,
    ServerSettings,
)
from ._streams import ServerStream, StreamPump, closeStream
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
    from twisted.python.failure import Failure as _Failure

    from ._otel import ServerTracing
    from ._registry import Registry

_log = Logger(namespace="agilerpc.server")

#: Seconds a started frame may take to complete (nginx's client_body_timeout
#: is 60 s between reads; this is for the whole frame: 8 MiB at 1 Mbit/s).
DEFAULT_FRAME_TIMEOUT = 120.0

#: Seconds between probes while calls are outstanding and the client cannot
#: be read (see L{RpcServerProtocol._probe}).
PROBE_INTERVAL = 0.5

#: Bytes of responses one connection may hold unsent (written while its client
#: does not read): eight of the largest messages.
DEFAULT_MAX_UNSENT = 8 * _wire.DEFAULT_MAX_MESSAGE_SIZE
#: Bytes of responses all connections may hold unsent together.
DEFAULT_MAX_UNSENT_TOTAL = 1024 * 1024 * 1024
#: Why a connection is aborted (L{IServerObserver.connectionAborted}): it
#: held more than maxUnsent, or the most when all held more than
#: maxUnsentTotal.
ABORT_REASONS = ("UnsentLimit", "UnsentTotalLimit")

#: Bytes of unfinished frames all connections may hold together (redis 7's
#: maxmemory-clients, for buffered input): 1,000 connections each holding most
#: of a maximum-size frame stay within it plus what the process needs besides.
DEFAULT_MAX_INPUT_TOTAL = 1024**3

_Request = _wire.Request
_OptionsRequest = _wire.OptionsRequest
_unpackFrom = _wire.HEADER.unpack_from
_Notification = _wire.Notification
_setCurrent = current.set
_resetCurrent = current.reset

# The connection's life, in the order it goes through them; writing is
# allowed before LINGERING.
SERVING = 0
GOAWAY_SENT = 1
DRAINING = 2
LINGERING = 3
CLOSED = 4


def _stopTimer(result: Any, timer: IDelayedCall) -> Any:
    """
    A call with a deadline ended first: its timer is no longer needed.
    """
    if timer.active():
        timer.cancel()
    return result


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class RpcServerProtocol(FrameReceiver, Int32StringReceiver, TimeoutMixin):
    """
    One server connection.

    Sends a hello, then dispatches each request as its frame completes and
    answers it as soon as its handler finishes, in any order.  The keepalive
    timer runs only while no request is outstanding; when it fires, or the
    server shuts down, the connection ends gracefully with a goaway (see
    L{goaway}).

    @ivar connection: the connection's rules and state (sans-IO).
    @ivar state: where the connection is in its life: C{SERVING},
        C{GOAWAY_SENT}, C{DRAINING}, C{LINGERING} or C{CLOSED}.
    @ivar peer: the client's address.
    """

    factory: RpcServerFactory
    # Always connected to a stream transport while it runs.
    transport: Any

    state: int
    peer: IAddress | None = None
    _accepted = False
    _lingerCall: IDelayedCall | None = None
    _probeCall: IDelayedCall | None = None
    # Created with the connection's first stream.
    _pump: StreamPump | None = None
    # Reading stops while the transport's send buffer is full (it pauses us
    # as its producer) or while maxInFlight calls are outstanding.  While it
    # is full, every write is counted as unsent (see _unsentWritten).
    _writePaused: bool
    # Set by stringReceived, so that the keepalive restarts once per chunk
    # received rather than once per frame.
    _framesReceived: bool
    # When each outstanding call started, by msgid: set only with an
    # observer, and read only then.
    _starts: dict[int, float]

    def __init__(self, factory: RpcServerFactory) -> None:
        self.factory = factory
        self.MAX_LENGTH = factory.maxMessageSize
        self.connection = ServerConnection(factory.settings)
        self._dispatcher = factory.dispatcher
        self._observer = factory.observer
        self._tracing = factory.tracing
        # Every call has the server's maxCallTime as its deadline, or a
        # span: none takes the hot path, which sets neither (it takes only
        # the deadline a request carries).
        self._offHotPath = (
            factory.settings.maxCallTime is not None or self._tracing is not None
        )
        # Read on the hot path: as instance attributes, not class defaults,
        # so that attribute lookups take the interpreter's fast path.
        self.state = SERVING
        self._writePaused = False
        self._framesReceived = False
        self._answered = False
        self._descriptor: FileDescriptor | None = None
        self._frameCall: IDelayedCall | None = None
        # What this connection is charged in the factory's input budget: its
        # buffered input as of the end of the last chunk received.
        self._charged = 0
        self.paused = False
        self.startReceiving()

    # TimeoutMixin takes its clock from here: the factory's reactor.
    def callLater(self, period: float, func: Any) -> IDelayedCall:
        return self.factory.reactor.callLater(period, func)

    @property
    def callsServed(self) -> int:
        """
        Requests dispatched on this connection.
        """
        return self.connection.callsServed

    @property
    def inFlight(self) -> int:
        """
        Calls dispatched on this connection and not answered yet.
        """
        return len(self.connection.outstanding)

    @property
    def openStreams(self) -> int:
        """
        Streams being answered on this connection.
        """
        return 0 if self._pump is None else len(self._pump.open)

    @property
    def unsent(self) -> int:
        """
        Bytes written to this connection since its transport paused it (its
        send buffer passed its limit: the client does not read), and not sent
        yet; 0 while it is not paused.
        """
        return self.factory.unsent.held(self)

    @property
    def bufferedInput(self) -> int:
        """
        Bytes received on this connection and held until their frame is
        complete (or the server reads again), as charged to the factory's
        L{RpcServerFactory.inputBudget}.
        """
        return self._charged

    # -- connection life ----------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = self.connection.peer = self.transport.getPeer()
        self._descriptor = descriptorOf(self.transport)
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            with suppress(OSError):  # e.g. a UNIX socket
                setNoDelay(True)
        factory = self.factory
        factory.connections.add(self)
        observer = self._observer
        if observer is not None:
            self._starts = {}
            observer.connectionOpened(self)
        if (
            factory.maxConnections is not None
            and factory.accepted >= factory.maxConnections
        ):
            # Refused instead of a hello: a client that never got a hello
            # treats this as a failed attempt and backs off.
            factory.settings.log.emit(
                _log,
                LogLevel.warn,
                "{peer}: refused, {count} connections are open (--max-connections)",
                self.peer,
                count=factory.accepted,
            )
            if observer is not None:
                observer.frameRefused(self, "ServerBusy")
            self.goaway("ServerBusy")
            return
        factory.accepted += 1
        self._accepted = True
        # Responses go out through the transport's buffer; when it is full,
        # the transport pauses us and we stop reading requests.  Over TLS,
        # wait for the handshake: the TLS layer buffers the hello until then
        # and would pause us, and pausing stops it reading the handshake.
        if not callable(getattr(self.transport, "getPeerCertificate", None)):
            self.transport.registerProducer(self, True)
        self._send(self.connection.hello())
        if factory.stopping:
            # Accepted while the server shuts down: nothing will be served.
            self.goaway("shutdown")
            return
        self._idle()

    def connectionLost(self, reason: _Failure | None = None) -> None:
        self.state = CLOSED
        factory = self.factory
        if self._accepted:
            factory.accepted -= 1
        factory.closedCallsServed += self.connection.callsServed
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        if self._lingerCall is not None and self._lingerCall.active():
            self._lingerCall.cancel()
        self._lingerCall = None
        self._frameEnded()
        if self._probeCall is not None:
            self._probeCall.cancel()
            self._probeCall = None
        if self._pump is not None:
            self._pump.stop()
        if self.connection.outstanding:
            self._cancelOutstanding()
        factory.connectionClosed(self)
        if self._observer is not None:
            self._observer.connectionClosed(self)

    def _cancelOutstanding(self) -> None:
        """
        The client has gone: nobody will read the answers of its outstanding
        calls, so cancel them (as gRPC cancels a gone caller's calls).  A
        handler's Deferred is cancelled; a thread cannot be stopped, and its
        result is dropped when it comes.
        """
        outstanding = self.connection.outstanding
        self.factory.settings.log.emit(
            _log,
            LogLevel.info,
            "{peer}: connection lost with {count} calls outstanding; cancelling them",
            self.peer,
            count=len(outstanding),
        )
        for call in list(outstanding.values()):
            call.cancel()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: from now on a full send buffer pauses us.
        """
        if self.state != CLOSED:
            self.transport.registerProducer(self, True)

    def readConnectionLost(self) -> None:
        """
        The client closed its side: it will send nothing more.  Answer what is
        outstanding, then close.  A frame cut off by the close is dropped
        undispatched.
        """
        if self.state < DRAINING:
            self.state = DRAINING
        self.discardInput()
        self._stopFrameTimer()
        # The connection is closing already: an idle goaway now would be
        # written after (or race with) our own close.
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        if not self.connection.outstanding:
            self.transport.loseConnection()
        else:
            # Half-closed, or gone entirely?  Only a write can tell.
            self._probe()

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
        if self._pump is not None:
            self._pump.pause()
        self._updateReading()

    def resumeProducing(self) -> None:
        """
        The transport's send buffer drained: nothing is unsent any more; read
        again, and send streams' items again.
        """
        self._writePaused = False
        self.factory.unsent.release(self)
        if self._pump is not None:
            self._pump.resume()
        self._updateReading()

    def stopProducing(self) -> None:
        self._writePaused = True
        self.paused = True
        if self._pump is not None:
            self._pump.pause()

    def _updateReading(self) -> None:
        """
        Pause or resume reading from the transport as the send buffer and the
        number of outstanding calls require.
        """
        if self.state == CLOSED:
            return
        pause = self._writePaused or not self.connection.belowInFlightLimit()
        if pause and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        elif not pause and self.paused:
            self.paused = False
            self.transport.resumeProducing()
            # Frames that arrived before the pause are still buffered.
            self.dataReceived(b"")
        if pause and not self._writePaused and self._probeCall is None:
            # Not reading, so the client's end of stream would go unseen.
            self._probeCall = self.factory.reactor.callLater(
                PROBE_INTERVAL, self._probe
            )

    def _probe(self) -> None:
        """
        While calls are outstanding and the client cannot be read (its end
        of stream came, or the in-flight limit stopped reading), write a
        probe every L{PROBE_INTERVAL} seconds.  A client that only
        half-closed, or is busy, ignores it; the system of a client that has
        gone answers it with a reset, which fails the next write and so ends
        the connection (L{connectionLost} then cancels its calls).  While
        the send buffer is full no probe is needed: the transport is writing
        already.
        """
        call, self._probeCall = self._probeCall, None
        if call is not None and call.active():
            call.cancel()
        if self.state == DRAINING or (self.paused and not self._writePaused):
            payload = self.connection.probe()
            if payload is not None:
                self._send(payload)
                self._probeCall = self.factory.reactor.callLater(
                    PROBE_INTERVAL, self._probe
                )

    # -- receiving ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        # Answered within this chunk (not by a Deferred that fired before).
        self._answered = False
        if self._observer is not None:
            self._observer.receivedBytes(self, len(data))
        if self._buffered or self._discarding or self.paused:
            FrameReceiver.dataReceived(self, data)
        else:
            # FrameReceiver.dataReceived's usual case, inline: nothing
            # buffered, whole frames within the limit.  What is left (part of
            # a frame, one too large, or the rest after a pause) goes to
            # FrameReceiver, as the start of a chunk.
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
        completed = self._framesReceived
        if self._buffered:
            self._inputHeld(completed)
        elif self._charged:
            # Nothing is held any more: give back the charge, and stop the
            # frame timer (which runs only while something is charged).
            self._frameEnded()
        if completed:
            self._framesReceived = False
            if self._answered:
                self._answered = False
                self._sendAnswers()
            if not self.connection.outstanding:
                # _idle, with its usual case first: the keepalive timer is
                # armed (only ever while SERVING), restart it.
                if self.timeOut is not None:
                    self.resetTimeout()  # type: ignore[no-untyped-call]
                else:
                    self._idle()

    def _sendAnswers(self) -> None:
        """
        Send the responses this chunk's requests were answered with now,
        rather than on the reactor's next pass (L{sendNow}), unless the
        connection is past writing.
        """
        descriptor = self._descriptor
        if descriptor is not None and self.state < LINGERING:
            sendNow(descriptor)

    def discardInput(self) -> None:
        FrameReceiver.discardInput(self)
        self._frameEnded()

    def _inputHeld(self, completed: bool) -> None:
        """
        Bytes stay buffered after a chunk: charge what changed to the
        factory's input budget, refuse the connections it evicts, and run
        the frame timer.
        """
        held = self._buffered
        change = held - self._charged
        if change:
            self._charged = held
            factory = self.factory
            budget = factory.inputBudget
            if change < 0:
                budget.release(self, -change)
                factory.heapTrimmer.released()
            else:
                evicted = budget.add(self, change)
                factory.heapTrimmer.held()
                if evicted:
                    for protocol in evicted:
                        protocol._overInputBudget()
                    factory.heapTrimmer.released()
        self._frameStarted(completed)

    def _overInputBudget(self) -> None:
        """
        The factory's input budget evicted this connection (it held the most
        when the connections' buffered input passed the budget): drop what
        it holds and end it with a C{ServerBusy} goaway.  The unfinished
        frame was never dispatched, so the goaway tells the client it may
        resend it; calls already dispatched are still answered.
        """
        held, self._charged = self._charged, 0
        factory = self.factory
        factory.settings.log.emit(
            _log,
            LogLevel.warn,
            "{peer}: input dropped, {held} bytes of unfinished frames held while "
            "connections held more than {limit} together (--max-input-total)",
            self.peer,
            held=held,
            limit=factory.inputBudget.limit,
        )
        if self._observer is not None:
            self._observer.frameRefused(self, "InputBudget")
        self.discardInput()
        self.goaway("ServerBusy")

    def _frameStarted(self, completed: bool) -> None:
        """
        Part of a frame is buffered: it must be complete within the frame
        timeout, counted from the chunk that started it (C{completed}: this
        chunk finished the frames before it), whatever else is outstanding.
        While the server itself does not read (paused), nothing is counted.
        """
        timeout = self.factory.frameTimeout
        if not timeout or self.paused or self._discarding:
            self._stopFrameTimer()
        elif self._frameCall is None:
            self._frameCall = self.factory.reactor.callLater(
                timeout, self._frameTimedOut
            )
        elif completed:
            self._frameCall.reset(timeout)

    def _stopFrameTimer(self) -> None:
        call, self._frameCall = self._frameCall, None
        if call is not None and call.active():
            call.cancel()

    def _frameEnded(self) -> None:
        """
        Nothing is buffered any more (a frame completed, or input was
        dropped): give back the charge and stop the frame timer.
        """
        charged = self._charged
        if charged:
            self._charged = 0
            self.factory.inputBudget.release(self, charged)
            self.factory.heapTrimmer.released()
        self._stopFrameTimer()

    def _frameTimedOut(self) -> None:
        """
        A frame took longer than the frame timeout to arrive: drop it, and
        end the connection gracefully (a client sending a frame a byte at a
        time holds up to the maximum message size of memory).
        """
        self._frameCall = None
        self.factory.settings.log.emit(
            _log,
            LogLevel.warn,
            "{peer}: a frame was not complete after {timeout}s (--frame-timeout)",
            self.peer,
            timeout=self.factory.frameTimeout,
        )
        if self._observer is not None:
            self._observer.frameRefused(self, "FrameTimeout")
        self.discardInput()
        self.goaway("FrameTimeout")

    def stringReceived(self, payload: bytes) -> None:
        # Any: the checks below narrow it by type(), which mypy cannot follow.
        message: Any = self.connection.receive(payload)
        self._framesReceived = True
        kind = type(message)
        if (kind is not _Request and kind is not _OptionsRequest) or self._offHotPath:
            if message is not None:
                self._otherMessage(message)
            return
        # A request (with a deadline or metadata, perhaps), the hot path: run
        # its handler (as the current call), answer it now if it returned a
        # plain value, else when its Deferred fires or its deadline passes.
        # (Without maxCallTime, which takes requests off it, the deadline is
        # the caller's: ServerConnection.deadline.)
        msgid = message.msgid
        method = message.method
        observer = self._observer
        if observer is not None:
            self._starts[msgid] = self.factory.timer()
        expires = (
            None
            if kind is _Request or message.deadline is None
            else self.factory.reactor.seconds() + message.deadline
        )
        token = _setCurrent((message, self, expires))
        try:
            result = self._dispatcher.call(method, message.args, message.kwargs)
        except RpcError as e:
            _resetCurrent(token)
            self._sendError(msgid, e.toWire(), method)
            return
        except Exception:
            _resetCurrent(token)
            self._callFailed(Failure(), msgid, method)
            return
        if kinds.get(type(result)) is PLAIN:
            _resetCurrent(token)
            if observer is not None or self.state >= LINGERING:
                self._sendResult(msgid, result, method)
                return
            # _sendResult without an observer, inline.
            try:
                payload = self.connection.result(msgid, result, method)
            except RpcError as e:
                self._sendError(msgid, e.toWire(), method)
                return
            size = len(payload)
            if size < LARGE_FRAME:
                self.transport.write(packHeader(size) + payload)
            else:
                writeFrame(self.transport, payload)
            self._answered = True
            if self._writePaused:
                self._unsentWritten(size + 4)
            return
        # A coroutine starts running here, with its context copied.
        later = deferred(result)
        _resetCurrent(token)
        self._answerLater(msgid, method, result, later, expires)

    def _answerLater(
        self,
        msgid: int,
        method: str,
        result: Any,
        later: Deferred[Any] | None,
        expires: float | None,
    ) -> None:
        """
        The request C{msgid}'s handler returned C{result}, and C{later} is
        what to wait for (see L{deferred}): answer it when that fires, by
        C{expires} (in the reactor's time) if set, or at once.
        """
        if later is not None:
            self._callStarted(msgid, later, method, expires=expires)
        elif kinds[type(result)] is STREAM:
            closeStream(result)
            error = InvalidRequest(f"{method} is a stream: call it as one")
            self._sendError(msgid, error.toWire(), method)
        else:
            # A plain value of a type not seen before.
            self._sendResult(msgid, result, method)

    def _requestWithOptions(self, request: _wire.Request) -> None:
        """
        Run a request off the hot path (the server has a maxCallTime, which
        every call's deadline is capped by, or traces calls): as the hot path
        does, with its span, and a timer that cancels it when its deadline
        passes.
        """
        msgid = request.msgid
        method = request.method
        expires = self._started(request)
        with self._running(request, expires):
            ran, result = self._runHandler(request)
            if not ran:
                return
            later = deferred(result)
        self._answerLater(msgid, method, result, later, expires)

    def _runHandler(self, request: _wire.Request) -> tuple[bool, Any]:
        """
        Run the handler of a request off the hot path: C{(True, what it
        returned)}, or C{(False, None)} when it failed at once, its error
        then sent.
        """
        method = request.method
        try:
            return True, self._dispatcher.call(method, request.args, request.kwargs)
        except RpcError as e:
            self._sendError(request.msgid, e.toWire(), method)
        except Exception:
            self._callFailed(Failure(), request.msgid, method)
        return False, None

    def _started(self, request: _wire.Request) -> float | None:
        """
        A request off the hot path starts: when its deadline passes (in the
        reactor's time), or L{None}; its start is timed for the observers.
        """
        deadline = self.connection.deadline(request)
        if self._observer is not None:
            self._starts[request.msgid] = self.factory.timer()
        if deadline is None:
            return None
        return self.factory.reactor.seconds() + deadline

    @contextmanager
    def _running(self, request: _wire.Request, expires: float | None) -> Iterator[None]:
        """
        Run what is in the block as the request's handler: its call current
        (L{agilerpc.currentCall}), and its trace span, with tracing.
        """
        token = _setCurrent((request, self, expires))
        tracing = self._tracing
        traced = None if tracing is None else tracing.callStarted(self, request)
        try:
            yield
        finally:
            if tracing is not None:
                tracing.detach(traced)
            _resetCurrent(token)

    def _otherMessage(
        self,
        message: _wire.Request | _wire.Notification | Refusal | Cancel | Credit,
    ) -> None:
        """
        Anything but a request (see L{ServerConnection.receive}).
        """
        if type(message) is _Notification:
            self._notify(message)
        elif type(message) is _Request or type(message) is _wire.OptionsRequest:
            self._requestWithOptions(message)
        elif type(message) is Cancel:
            message.call.cancel()
        elif type(message) is Credit:
            grant = getattr(message.call, "grant", None)
            if grant is not None:
                grant(message.count)
        elif type(message) is _wire.StreamRequest:
            self._streamRequested(message)
        else:
            assert type(message) is Refusal
            self._refused(message)

    def lengthLimitExceeded(self, length: int) -> None:
        """
        A frame longer than the maximum message size: refuse it without
        reading its body, and close gracefully.  The stream cannot be resynced,
        so everything after it is discarded.
        """
        self.discardInput()
        self._refused(
            Refusal(self.connection.frameTooLarge(length), "MessageTooLarge", True)
        )

    def _refused(self, refusal: Refusal) -> None:
        self._send(refusal.payload)
        if self._observer is not None:
            self._observer.frameRefused(self, refusal.reason)
        if refusal.goaway:
            self.goaway(refusal.reason)

    # -- calls --------------------------------------------------------------

    def _streamRequested(self, request: _wire.StreamRequest) -> None:
        """
        Run a stream's handler, whose generator's items go out as the
        caller's credit allows (see L{ServerStream}), and its end as the
        answer.
        """
        msgid = request.msgid
        method = request.method
        expires = self._started(request)
        with self._running(request, expires):
            ran, result = self._runHandler(request)
            if not ran:
                return
            # The generator's body runs later, item by item, in this context.
            context = copy_context()
        kind = kindOf(result)
        if kind is not STREAM:
            # Whatever it started, nobody will take its answer.
            if kind is COROUTINE:
                result.close()
            elif kind is DEFERRED:
                result.addErrback(lambda f: None)
                result.cancel()
            error = InvalidRequest(f"{method} is not a stream: call it without one")
            self._sendError(msgid, error.toWire(), method)
            return
        pump = self._pump
        if pump is None:
            pump = self._pump = StreamPump(self.factory.reactor, self.factory.timer)
            if self._writePaused:
                pump.pause()
        stream = ServerStream(
            msgid,
            method,
            result,
            request.window,
            self._sendItem,
            pump,
            self._streamAwaitingCredit,
            context,
        )
        self._callStarted(msgid, stream.done, method, stream, expires)

    def _streamAwaitingCredit(self, awaiting: bool) -> None:
        """
        A stream used its credit (C{awaiting}), or got more or ended: it
        stops, or starts again, counting against the in-flight limit.
        """
        self.connection.awaitingCredit += 1 if awaiting else -1
        self._updateReading()

    def _sendItem(self, msgid: int, item: Any, method: str) -> None:
        """
        Write one item of the stream C{msgid}.

        @raise RpcError: when it cannot be sent (see L{ServerConnection.item}).
        """
        self._send(self.connection.item(msgid, item, method))
        if self._observer is not None:
            self._observer.itemSent(self, msgid, method)

    def _callStarted(
        self,
        msgid: int,
        call: Deferred[Any],
        method: str,
        handle: Any = None,
        expires: float | None = None,
    ) -> None:
        """
        The request C{msgid} is outstanding until C{call} fires, or its
        deadline passes at C{expires} (in the reactor's time; its timer
        counts from when the request was read, not from when its handler
        returned); C{handle} (C{call} itself by default) is what a cancel, a
        credit or the deadline acts on.
        """
        connection = self.connection
        if not connection.outstanding:
            self.setTimeout(None)  # type: ignore[no-untyped-call]
        if connection.callStarted(msgid, call if handle is None else handle):
            self._updateReading()
        if expires is not None:
            reactor = self.factory.reactor
            timer = reactor.callLater(
                max(expires - reactor.seconds(), 0), self._deadlinePassed, msgid
            )
            call.addBoth(_stopTimer, timer)
        call.addCallbacks(
            self._callSucceeded,
            self._callFailed,
            callbackArgs=(msgid, method),
            errbackArgs=(msgid, method),
        )

    def _deadlinePassed(self, msgid: int) -> None:
        """
        The deadline of the outstanding call C{msgid} passed: cancel it,
        whether or not anybody is left to hear (L{_callFailed} answers
        C{DeadlineExceeded}).
        """
        handle = self.connection.deadlinePassed(msgid)
        if handle is not None:
            self.factory.settings.log.emit(
                _log,
                LogLevel.debug,
                "{peer}: #{msgid}: its deadline passed; cancelled",
                self.peer,
                msgid=msgid,
            )
            handle.cancel()

    def _notify(self, notification: _wire.Notification) -> None:
        method = notification.method
        token = _setCurrent((notification, self, None))
        tracing = self._tracing
        # Nothing answers a notification: its span ends with its handler.
        traced = (
            None if tracing is None else tracing.notificationStarted(self, notification)
        )
        try:
            result = self._dispatcher.call(
                method, notification.args, notification.kwargs
            )
            later = deferred(result)
        except Exception:
            failure = Failure()
            if traced is not None:
                traced.ended(failure)
            self._notificationFailed(failure, method)
            return
        finally:
            if traced is not None:
                traced.detach()
            _resetCurrent(token)
        if traced is not None:
            if later is None:
                traced.ended(result)
            else:
                later.addBoth(traced.ended)
        if later is not None:
            later.addErrback(self._notificationFailed, method)

    def _notificationFailed(self, failure: Failure, method: str) -> None:
        if isinstance(failure.value, RpcError):
            # What the caller got wrong (no such method, arguments that do
            # not bind) or what the handler chose to say: not a server error,
            # and no traceback a peer could make the server write at will.
            # Rate-limited too: twistd writes debug events unless told not to.
            self.factory.settings.log.emit(
                _log,
                LogLevel.debug,
                "{peer}: notification {method}: {error}",
                self.peer,
                method=method,
                error=failure.value,
            )
            return
        self.factory.settings.log.emit(
            _log,
            LogLevel.error,
            "{peer}: notification {method} failed",
            self.peer,
            failure,
            method=method,
        )

    def _callSucceeded(self, result: Any, msgid: int, method: str) -> None:
        self.connection.callEnded(msgid)
        self._sendResult(msgid, result, method)
        self._callFinished()

    def _callFailed(self, failure: Failure, msgid: int, method: str) -> None:
        if self.state == CLOSED and type(failure.value) is CancelledError:
            # Cancelled with its connection (_cancelOutstanding): there is
            # nobody to answer, and no error to encode or log.
            self.connection.callEnded(msgid)
            if self._observer is not None:
                self._finished(msgid, method, "Cancelled")
            return
        ended = self.connection.callEnded(msgid)
        if isinstance(failure.value, RpcError):
            self.factory.settings.log.emit(
                _log,
                LogLevel.debug,
                "{peer}: {method} #{msgid}: {error}",
                self.peer,
                method=method,
                msgid=msgid,
                error=failure.value,
            )
        elif not failure.check(CancelledError):
            self.factory.settings.log.emit(
                _log,
                LogLevel.error,
                "{peer}: {method} #{msgid} failed",
                self.peer,
                failure,
                method=method,
                msgid=msgid,
            )
        self._sendError(msgid, self.connection.errorFor(failure, msgid, method), method)
        if ended:
            self._callFinished()

    def _callFinished(self) -> None:
        """
        An outstanding call was answered: read again if it was the in-flight
        limit that stopped us, and when none is left, go on with the
        connection's life.
        """
        state = self.state
        if state == CLOSED:
            # A call that outlives its connection must not restart the
            # keepalive timer (connectionLost stopped it for good).
            return
        if self.paused and not self._writePaused:
            self._updateReading()
        if self.connection.outstanding:
            return
        if state == GOAWAY_SENT:
            self._halfClose()
        elif state == DRAINING:
            self.transport.loseConnection()
        else:
            self._idle()

    # -- sending ------------------------------------------------------------

    def _sendResult(self, msgid: int, result: Any, method: str) -> None:
        if self.state < LINGERING:
            try:
                payload = self.connection.result(msgid, result, method)
            except RpcError as e:
                self._sendError(msgid, e.toWire(), method)
                return
            # _send, inline: one Python call less per response.
            size = len(payload)
            if size < LARGE_FRAME:
                self.transport.write(packHeader(size) + payload)
            else:
                writeFrame(self.transport, payload)
            self._answered = True
            if self._writePaused:
                self._unsentWritten(size + 4)
            if self._observer is not None:
                self._observer.sentBytes(self, size + 4)
                self._finished(msgid, method, "ok")
        elif self._observer is not None:
            self._finished(msgid, method, "ok")

    def _sendError(self, msgid: int | None, error: dict[str, Any], method: str) -> None:
        self._send(self.connection.error(msgid, error, method))
        if self._observer is not None and msgid is not None:
            outcome = error.get("type")
            self._finished(msgid, method, outcome if isinstance(outcome, str) else "?")

    def _finished(self, msgid: int, method: str, outcome: str) -> None:
        """
        Tell the observer a call was answered, and how long it took.
        """
        assert self._observer is not None
        start = self._starts.pop(msgid, None)
        if start is not None:
            duration = self.factory.timer() - start
            self._observer.callFinished(self, msgid, method, outcome, duration)

    def _send(self, payload: bytes) -> None:
        if self.state < LINGERING:
            size = len(payload)
            if size < LARGE_FRAME:
                # writeFrame's small case, inline: a call less per frame.
                self.transport.write(packHeader(size) + payload)
            else:
                writeFrame(self.transport, payload)
            if self._writePaused:
                self._unsentWritten(size + 4)
            if self._observer is not None:
                self._observer.sentBytes(self, size + 4)

    def _unsentWritten(self, count: int) -> None:
        """
        C{count} bytes were written while the transport has us paused (the
        write that paused us included: the transport pauses its producer
        inside C{write}): they are unsent.  Abort this connection if it now
        holds more than C{maxUnsent}, and the ones holding the most if all
        hold more than C{maxUnsentTotal}.
        """
        if self.state == CLOSED:
            return
        factory = self.factory
        budget = factory.unsent
        limit = factory.maxUnsent
        if limit is not None:
            unsent = budget.held(self) + count
            if unsent > limit:
                budget.release(self)
                factory.settings.log.emit(
                    _log,
                    LogLevel.warn,
                    "{peer}: {unsent} bytes of responses the client has not "
                    "read, over --max-unsent ({limit}): aborting the connection",
                    self.peer,
                    unsent=unsent,
                    limit=limit,
                )
                self._abortForLimit("UnsentLimit")
                return
        total = budget.total + count
        for protocol in budget.add(self, count):
            factory.settings.log.emit(
                _log,
                LogLevel.warn,
                "{peer}: the connections hold {total} bytes of responses their "
                "clients have not read, over --max-unsent-total ({limit}): "
                "aborting this one, which holds the most",
                protocol.peer,
                total=total,
                limit=budget.limit,
            )
            protocol._abortForLimit("UnsentTotalLimit")

    def _abortForLimit(self, reason: str) -> None:
        """
        Abort the connection for going over a limit: C{reason} names it to
        the observer.
        """
        if self._observer is not None:
            self._observer.connectionAborted(self, reason)
        self.abort()

    # -- keepalive and goaway -----------------------------------------------

    def _idle(self) -> None:
        """
        Nothing is outstanding: (re)start the keepalive timer.
        """
        if self.factory.keepalive and self.state == SERVING:
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
        self.goaway("idle")

    def goaway(self, reason: str) -> None:
        """
        Close gracefully: send a goaway naming the last dispatched msgid,
        dispatch nothing more, answer what is outstanding, then half-close and
        linger (see L{_halfClose}).
        """
        if self.state == CLOSED:
            return
        payload = self.connection.goaway(reason)
        if payload is None:
            return
        if self.state == SERVING:
            self.state = GOAWAY_SENT
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        self._send(payload)
        if self._observer is not None:
            self._observer.goawaySent(self, reason)
        if not self.connection.outstanding:
            self._halfClose()

    def _halfClose(self) -> None:
        """
        Close our side, then keep reading (and discarding) until the client
        closes or the linger time passes.

        Closing both sides at once would make the kernel answer a request that
        is still on its way with a RST, which can destroy the goaway before the
        client reads it.
        """
        if self.state >= LINGERING:
            return
        if self.state == DRAINING:
            self.transport.loseConnection()
            return
        self.state = LINGERING
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
        Close now, whatever is outstanding: nothing more is written.
        """
        if self.state != CLOSED:
            self.transport.abortConnection()
            self.state = CLOSED


class RpcServerFactory(Factory):
    """
    Builds L{RpcServerProtocol}s serving C{registry}, and ends them all
    gracefully on L{shutdown}.

    @ivar reactor: the clock (and thread pool) used by every connection.
    @ivar keepalive: idle seconds before a connection is closed; 0 disables.
    @ivar maxMessageSize: the largest frame accepted, and sent, in bytes.
    @ivar lingerTimeout: how long a closing connection waits for the client to
        close before it is aborted.
    @ivar frameTimeout: seconds a frame may take to arrive once its first
        bytes have, whatever else the connection does; then the connection
        ends with a C{FrameTimeout} goaway.  0 disables.
    @ivar debug: send tracebacks to callers (for development only).
    @ivar maxInFlight: outstanding calls per connection before the server
        stops reading that connection until some finish.
    @ivar maxContainers: the arrays and maps one request may hold (its own
        array included); a request with more is refused with
        C{InvalidRequest} before they are built.  L{None}: no limit.
    @ivar maxConnections: accepted connections at once; further ones get a
        C{ServerBusy} goaway instead of a hello.  L{None}: no limit.
    @ivar maxUnsent: bytes of responses one connection may hold unsent
        (written while its client does not read, see
        L{RpcServerProtocol.unsent}); past it the connection is aborted.
        L{None}: no limit.
    @ivar unsent: the bytes all connections hold unsent, with
        C{maxUnsentTotal} as its limit: past it, the connections holding the
        most are aborted.
    @ivar inputBudget: the bytes of unfinished frames (and of frames not read
        yet while a connection is paused) all connections hold, with
        C{maxInputTotal} as its limit (L{None}: no limit).  A chunk that takes
        the total past it ends the connections holding the most: their input
        is dropped and they get a C{ServerBusy} goaway.  Frames that arrive
        whole are never charged.  The limit must hold a frame of
        C{maxMessageSize} and its header.
    @ivar heapTrimmer: returns the memory of buffered input to the system
        after a burst of it is freed (see L{HeapTrimmer}).
    @ivar authToken: when set, each connection must first send
        C{[3, "auth", token]} with this token.
    @ivar settings: with C{maxCallTime}, the seconds a call may run when its
        caller set no deadline, and the longest deadline a caller may set
        (L{None}: no limit); past it the call is cancelled and answered
        C{DeadlineExceeded}.  With C{maxMetadataSize}, the bytes of keys and
        values one request's metadata may hold; a request with more is
        refused with C{InvalidRequest}.
    @ivar observer: told what every connection does (see L{IServerObserver}):
        the C{observers} given, as one; L{None} without any, and then
        nothing is counted or timed per call.
    @ivar tracing: with C{tracing=True} (it needs C{agilerpc[otel]}),
        what runs every request, stream and notification inside an
        OpenTelemetry SERVER span (the child of the trace context in its
        metadata) from C{tracerProvider}, or the global provider: also one
        of the observers, as it ends each span when its call is answered.
        L{None} otherwise, and then calls take the untraced path.
    @ivar timer: the clock that times calls for the observers.
    @ivar settings: what every connection's L{ServerConnection} shares.
    @ivar dispatcher: runs the handlers of every connection.
    @ivar connections: the open connections.
    @ivar accepted: how many of them were accepted (not refused as busy).
    @ivar stopping: L{shutdown} was called.
    @ivar started: when the factory was made, in C{reactor.seconds()}.
    @ivar worker: which process of C{twistd agilerpc --workers} this is: 0
        for the parent (and a server without workers), 1 and up for the
        workers; C{system.stats} says it.
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
        observers: Sequence[IServerObserver] = (),
        timer: Callable[[], float] = time.perf_counter,
        maxContainers: int | None = _wire.DEFAULT_MAX_CONTAINERS,
        frameTimeout: float = DEFAULT_FRAME_TIMEOUT,
        maxUnsent: int | None = DEFAULT_MAX_UNSENT,
        maxUnsentTotal: int | None = DEFAULT_MAX_UNSENT_TOTAL,
        maxInputTotal: int | None = DEFAULT_MAX_INPUT_TOTAL,
        maxCallTime: float | None = None,
        maxMetadataSize: int = _wire.DEFAULT_MAX_METADATA_SIZE,
        tracing: bool = False,
        tracerProvider: TracerProvider | None = None,
        worker: int = 0,
    ) -> None:
        if keepalive < 0:
            raise ValueError("keepalive must be >= 0")
        if frameTimeout < 0:
            raise ValueError("frameTimeout must be >= 0")
        self.frameTimeout = frameTimeout
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
        if maxCallTime is not None and not 0 < maxCallTime <= _wire.MAX_DEADLINE:
            raise ValueError(
                f"maxCallTime must be above 0 and at most {_wire.MAX_DEADLINE:.0f}, "
                "or None"
            )
        if maxMetadataSize < 0:
            raise ValueError("maxMetadataSize must be >= 0")
        self.maxContainers = maxContainers
        # A single response may be as large as the largest message: a smaller
        # limit would abort a client that reads.
        for name, value in [
            ("maxUnsent", maxUnsent),
            ("maxUnsentTotal", maxUnsentTotal),
        ]:
            if value is not None and value < maxMessageSize:
                raise ValueError(f"{name} must be >= maxMessageSize or None")
        self.maxUnsent = maxUnsent
        self.unsent: Budget[RpcServerProtocol] = Budget(maxUnsentTotal)
        if maxInputTotal is not None and maxInputTotal < maxMessageSize + 4:
            # One frame of the maximum size, arriving alone, would be refused
            # on every attempt its client made.
            raise ValueError(
                "maxInputTotal must be None or hold a frame of the maximum "
                "size (>= maxMessageSize + 4)"
            )
        self.inputBudget: Budget[RpcServerProtocol] = Budget(maxInputTotal)
        self.heapTrimmer = HeapTrimmer(self.inputBudget, reactor)
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
        self.tracing: ServerTracing | None = None
        if tracing:
            from ._otel import ServerTracing

            # Ends each call's span as it is answered.
            self.tracing = ServerTracing(tracerProvider)
            observers = [*observers, self.tracing]
        self.observer = observing(observers)
        self.timer = timer
        self.started = reactor.seconds()
        self.closedCallsServed = 0
        self.worker = worker
        self.builtins: dict[str, Method] = {
            "system.ping": Method("system.ping", self._ping, False),
            "system.stats": Method("system.stats", self.stats, False),
        }
        self.dispatcher = Dispatcher(registry, self.builtins, reactor)
        self.settings = ServerSettings(
            keepalive,
            maxMessageSize,
            maxInFlight,
            authToken,
            debug,
            f"agilerpc/{__version__}",
            maxContainers,
            PeerLog(reactor.seconds),
            maxCallTime,
            maxMetadataSize,
        )
        self.stopping = False
        self._drained: list[Deferred[None]] = []

    @property
    def hello(self) -> dict[str, Any]:
        """
        What the hello of every new connection says.
        """
        return self.settings.hello

    @hello.setter
    def hello(self, hello: dict[str, Any]) -> None:
        self.settings.hello = hello

    def buildProtocol(self, addr: IAddress | None) -> RpcServerProtocol:  # type: ignore[override]
        return RpcServerProtocol(self)

    def _ping(self) -> str:
        """
        Answer C{"pong"}: the server is up and its reactor answers.
        """
        return "pong"

    def stats(self) -> dict[str, Any]:
        """
        What C{system.stats} answers: C{uptime} (seconds), C{connections}
        (open now), C{calls} (requests dispatched since the start),
        C{in_flight} (dispatched and not answered yet), C{unsent_bytes}
        (responses written and not sent yet because their clients do not
        read, see L{RpcServerProtocol.unsent}), C{buffered_input_bytes}
        (held by connections until their frames are complete, see
        L{inputBudget}), C{buffered_input_refusals} (connections refused
        for holding the most past it), C{server}, C{pid} (of the process
        answering) and C{worker} (see L{worker}).
        """
        connections = self.connections
        return {
            "uptime": self.reactor.seconds() - self.started,
            "connections": len(connections),
            "calls": self.closedCallsServed + sum(p.callsServed for p in connections),
            "in_flight": sum(p.inFlight for p in connections),
            "unsent_bytes": self.unsent.total,
            "buffered_input_bytes": self.inputBudget.total,
            "buffered_input_refusals": self.inputBudget.evictions,
            "server": self.settings.hello["server"],
            "pid": os.getpid(),
            "worker": self.worker,
        }

    def connectionClosed(self, protocol: RpcServerProtocol) -> None:
        self.connections.discard(protocol)
        self.unsent.release(protocol)
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
        self.stopping = True
        self.heapTrimmer.stop()
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        for protocol in list(self.connections):
            protocol.goaway("shutdown")
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
