"""
The Twisted client: L{RpcClient}, a Deferred-returning caller that queues
calls while it (re)connects and never loses or repeats one.

Each connection's protocol rules (msgids, the hello, auth, sizes, the
goaway, cancel, protocol violations) live in the sans-IO
L{agilerpc._clientconnection.ClientConnection}; L{RpcClientProtocol} moves
bytes between it and the transport and fires Deferreds, and L{RpcClient}
decides where calls go and when to connect:

 - A call made while no connection is ready waits in a bounded queue and is
   sent, in order, as soon as a connection says hello.
 - The client keeps a connection to each of its endpoints (one endpoint is
   a list of one).  Calls go round-robin over the connections that are
   ready; queued calls go to whichever connection says hello first.
 - On a goaway, requests sent after the goaway's last msgid provably did not
   run: they go back to the front of the queue and are sent again on a ready
   connection (or the next one to be ready).  Requests up to it get their
   answers on the old connection, which is closed once they have.
 - On an unexpected loss (no goaway), or a protocol violation by the server
   (the connection is then aborted), calls in flight fail with L{CallLost}:
   they may have run, so resending them could run them twice.  Queued calls
   stay queued, and the endpoint reconnects with backoff while anything is
   queued.  Only a call its caller declared idempotent (C{idempotent=},
   L{withCallOptions}) is sent again instead, as L{agilerpc._retry} rules:
   after a backoff, a few times at most, within its deadline.
 - After a goaway with nothing queued, the endpoint reconnects lazily, on
   the next call: reconnecting at once would keep every idle client
   connected forever and defeat the server's keepalive.
 - A connection that ends before its hello (closed, refused, or a goaway
   such as C{ServerBusy}) is a failed attempt: the endpoint retries after
   its backoff delay while calls are queued.  An endpoint whose last
   attempt failed, or whose connection was lost, is dialled again after its
   backoff delay, so that a dead host costs at most one attempt per delay and
   an idle client none.  A TLS handshake the server refuses fails the queued
   calls at once with L{TLSRefused} instead of retrying.
 - The endpoints may change at run time (L{RpcClient.setEndpoints}, which
   a client made with a DNS C{service} or C{hostname} calls after each
   resolution): a removed endpoint is drained, as after a goaway from the
   client's side: its connections take no new call, answer the calls in
   flight on them, and close once they owe nothing.
 - With a token, each connection sends C{[3, "auth", token]} first.  A server
   that refuses it (an C{Unauthorized} error, or a goaway whose reason is
   C{"Unauthorized"}) fails every call in flight on that connection and every
   queued call with L{Unauthorized}, and the client does not reconnect until
   the next call: a wrong token stays wrong.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IConnector, IDelayedCall
from twisted.internet.protocol import Protocol, ReconnectingClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._address import checkPort, parseAddress
from ._calloptions import CallOptions
from ._clientconnection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_STREAM_BUFFER,
    ClientConnection,
    IClientEvents,
    State,
)
from ._clientstream import RpcStream
from ._discovery import checkNameArguments, slots
from ._errors import (
    CallLost,
    CallTimeout,
    ClientClosed,
    NotIdempotent,
    QueueFull,
    RpcError,
    TLSRefused,
    Unauthorized,
)
from ._framing import LARGE_FRAME, packHeader, writeFrame
from ._retry import (
    RetryPolicy,
    checkMethods,
    describedIdempotence,
    refusal,
    times,
)
from ._sendnow import descriptorOf, sendNow

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
    from twisted.internet.interfaces import IResolver

    from ._otel import ClientSpan, ClientTracing
    from ._resolving import DnsDiscovery

_log = Logger(namespace="agilerpc.client")

# An enum member is slower to look up than a global, on every answer.
_READY = State.READY

# What callRemote is, for a client that traces it (see _tracedCallRemote).
_NO_OPTIONS = CallOptions()


class ClientStats:
    """
    Counters of an L{RpcClient} since it was made (plain integers: counting
    costs nothing measurable; L{agilerpc.ClientCollector} exports them).

    @ivar connects: connections that said hello.
    @ivar connectFailures: attempts that failed before a hello.
    @ivar answered: calls answered with a result.
    @ivar remoteErrors: calls answered with an error.
    @ivar lost: calls failed with L{CallLost} (they may have run).
    @ivar resent: calls a goaway proved unrun, sent again.
    @ivar retries: idempotent calls sent again after they were lost in
        flight (each retry counts: a call sent three times counts two).
    @ivar cancelled: calls cancelled (including timeouts) before an answer.
    """

    __slots__ = (
        "answered",
        "cancelled",
        "connectFailures",
        "connects",
        "lost",
        "remoteErrors",
        "resent",
        "retries",
    )

    def __init__(self) -> None:
        self.connects = 0
        self.connectFailures = 0
        self.answered = 0
        self.remoteErrors = 0
        self.lost = 0
        self.resent = 0
        self.retries = 0
        self.cancelled = 0


class _Sending:
    """
    How a call with options is sent, each time it is.

    @ivar expires: when its deadline passes, in C{reactor.seconds()}, or
        L{None}.
    @ivar metadata: its metadata, or L{None}.
    @ivar metadataSize: the size of C{metadata}, if measured already.
    @ivar idempotent: it may be sent again after its connection is lost;
        L{None}: as the client's C{idempotent} set says of its method.
    @ivar trace: metadata that carries its trace context, sent only to a
        server that takes metadata, or L{None}.
    @ivar attempts: how many times it was sent.
    @ivar lost: how many times it was lost in flight and sent again.
    """

    __slots__ = (
        "attempts",
        "expires",
        "idempotent",
        "lost",
        "metadata",
        "metadataSize",
        "trace",
    )

    def __init__(
        self,
        expires: float | None,
        metadata: dict[str, str | bytes] | None = None,
        idempotent: bool | None = None,
        metadataSize: int | None = None,
    ) -> None:
        self.expires = expires
        self.metadata = metadata
        self.metadataSize = metadataSize
        self.idempotent = idempotent
        self.trace: dict[str, str | bytes] | None = None
        self.attempts = 0
        self.lost = 0


class _Call:
    """
    One call (or notification, when C{deferred} is L{None}) from the moment
    it is made until it is answered or fails.

    @ivar msgid: its msgid on the connection it was last sent on, or -1.
    @ivar sending: how it is sent when it has options (a deadline, metadata),
        else L{None}.
    """

    __slots__ = (
        "args",
        "client",
        "connection",
        "deferred",
        "kwargs",
        "method",
        "msgid",
        "sending",
    )

    def __init__(
        self,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        deferred: Deferred[Any] | None,
    ) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.deferred = deferred
        self.connection: RpcClientProtocol | None = None
        self.client: RpcClient | None = None
        self.msgid = -1
        self.sending: _Sending | None = None

    def cancel(self, deferred: Deferred[Any]) -> None:
        """
        The canceller of C{deferred}: take the call back from the client.
        """
        if self.client is not None:
            self.client._cancel(self)

    def timedOut(self, result: Any, timeout: float) -> Any:
        """
        C{onTimeoutCancel} of the call's Deferred: say which call and which
        limit.
        """
        if isinstance(result, Failure) and result.check(CancelledError):
            sending = self.sending
            if self.msgid >= 0:
                where = (
                    f"(msgid {self.msgid}; the server was asked to cancel it, "
                    "it may or may not have run)"
                )
            elif sending is not None and sending.lost:
                where = (
                    "while waiting to be sent again (it was lost in flight "
                    f"{times(sending.lost)}: it may or may not have run)"
                )
            else:
                where = "while waiting for a connection"
            return Failure(
                CallTimeout(f"{self.method}() timed out after {timeout:g} s {where}")
            )
        return result

    def fail(self, error: BaseException) -> None:
        """
        Fail the call's Deferred (if it has one) with C{error}.
        """
        deferred = self.deferred
        if deferred is not None:
            self.deferred = None
            deferred.errback(error)


class _StreamCall(_Call):
    """
    A stream call: its Deferred fires at the stream's end, and its items go
    to C{stream}.

    @ivar received: an item came: the stream is never sent again.
    """

    __slots__ = ("received", "stream", "window")

    def __init__(
        self,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        window: int,
        timeout: float | None = None,
        reactor: Any = None,
        ended: Callable[[Any], Any] | None = None,
    ) -> None:
        """
        @param timeout: with C{reactor}, the seconds the whole stream may
            take; past them it is cancelled and fails with L{CallTimeout}.
        @param ended: called with the stream's end (its result, or a
            L{Failure}) before its consumer hears of it, and returns it.
        """
        super().__init__(method, args, kwargs, None)
        self.window = window
        self.received = False
        self.stream = RpcStream(method, self._taken, self._stop)
        d: Deferred[Any] = Deferred(self.cancel)
        if timeout is not None:
            d.addTimeout(timeout, reactor, self.timedOut)
        if ended is not None:
            d.addBoth(ended)
        d.addCallbacks(self.stream.endReceived, self.stream.failed)
        self.deferred = d

    def _taken(self) -> None:
        """
        The consumer took an item: grant the server more when the core says
        so.
        """
        connection = self.connection
        if connection is not None:
            credit = connection.core.consumed(self.msgid)
            if credit is not None and not connection._disconnected:
                writeFrame(connection.transport, credit)

    def _stop(self) -> None:
        deferred = self.deferred
        if deferred is not None:
            deferred.cancel()


_NO_OPTIONS = CallOptions()


def _unsendable(call: _Call, error: Exception) -> None:
    """
    Fail C{call}, which could not be sent: with the L{RpcError} the core
    raised (too large, streams not supported), or as a L{TypeError} when
    its arguments cannot be encoded.
    """
    if call.deferred is None:
        # A notification: nobody to tell but the log.
        _log.error(
            "the notification {method} was not sent: {error}",
            method=call.method,
            error=error,
        )
    elif isinstance(error, RpcError):
        call.fail(error)
    else:
        call.fail(TypeError(f"cannot encode the arguments of {call.method}(): {error}"))


@implementer(IClientEvents)
class RpcClientProtocol(Protocol):
    """
    One client connection: the transport glue around a
    L{ClientConnection}, which sends calls with increasing msgids and
    matches the answers, in any order.
    """

    # Always connected to a stream transport while it runs.
    transport: Any

    def __init__(self, client: RpcClient, endpoint: _Endpoint) -> None:
        self.client = client
        self.endpoint = endpoint
        self.core = ClientConnection(
            self, client._token, client.maxMessageSize, client.streamBuffer
        )
        # Bytes go straight to the core: no layer on the response path
        # (but see connectionMade).
        self.dataReceived = self.core.dataReceived  # type: ignore[method-assign]
        self._disconnected = False
        self.wentAway = False
        self._descriptor: FileDescriptor | None = None
        self._wrote = False

    def connectionMade(self) -> None:
        self._descriptor = descriptorOf(self.transport)
        if self._descriptor is not None:
            self.dataReceived = self._receiveAndSend  # type: ignore[method-assign]
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            with suppress(OSError):
                setNoDelay(True)
        auth = self.core.connectionMade()
        if auth is not None:
            writeFrame(self.transport, auth)
        self.client._connectionMade(self)

    def _receiveAndSend(self, data: bytes) -> None:
        """
        Over a reactor's transport: give the core C{data}, then send the
        calls its callbacks made meanwhile (the next call of a sequence,
        say) now rather than on the reactor's next pass (L{sendNow}).
        """
        self._wrote = False
        self.core.dataReceived(data)
        if self._wrote:
            self._wrote = False
            descriptor = self._descriptor
            assert descriptor is not None
            sendNow(descriptor)

    @property
    def hello(self) -> dict[str, Any] | None:
        """
        The server's hello info, once it came.
        """
        return self.core.hello

    @property
    def inflight(self) -> int:
        """
        How many calls were sent on this connection and not yet answered.
        """
        return self.core.inflight

    # -- sending ------------------------------------------------------------

    def sendCall(self, call: _Call) -> None:
        """
        Send C{call}; a call that cannot be encoded, or is larger than the
        server accepts, fails at once and the connection is untouched.
        """
        if type(call) is not _Call or call.deferred is None or call.sending:
            self._sendOther(call)
            return
        try:
            msgid, payload = self.core.sendRequest(
                call, call.method, call.args, call.kwargs
            )
        except Exception as e:
            _unsendable(call, e)
            return
        call.msgid = msgid
        call.connection = self
        # writeFrame, inline, for the usual small payload.
        size = len(payload)
        if size < LARGE_FRAME:
            self.transport.write(packHeader(size) + payload)
        else:
            writeFrame(self.transport, payload)
        self._wrote = True

    def _sendOther(self, call: _Call) -> None:
        """
        Send a call with options, a stream call, or a notification.
        """
        core = self.core
        try:
            sending = call.sending
            options = None
            if sending is not None:
                sending.attempts += 1
                expires = sending.expires
                options = core.options(
                    call.method,
                    None
                    if expires is None
                    else expires - self.client._reactor.seconds(),
                    sending.metadata,
                    sending.trace,
                    sending.metadataSize,
                )
            if call.deferred is None:
                self._sendNotification(call, options)
                return
            if type(call) is _StreamCall:
                msgid, payload = core.sendStream(
                    call, call.method, call.args, call.kwargs, call.window, options
                )
            else:
                msgid, payload = core.sendRequest(
                    call, call.method, call.args, call.kwargs, options
                )
        except Exception as e:
            _unsendable(call, e)
            return
        call.msgid = msgid
        call.connection = self
        writeFrame(self.transport, payload)
        self._wrote = True

    def _sendNotification(self, call: _Call, options: dict[str, Any] | None) -> None:
        try:
            payload = self.core.sendNotification(
                call.method, call.args, call.kwargs, options
            )
        except RpcError as e:
            _log.error("{error}", error=e)
            return
        except Exception:
            _log.failure("cannot encode the notification {method}", method=call.method)
            return
        writeFrame(self.transport, payload)
        self._wrote = True

    def cancelCall(self, call: _Call) -> None:
        """
        Forget an in-flight call (its late answer will be dropped) and ask
        the server to cancel it.
        """
        call.connection = None
        cancel = self.core.cancel(call.msgid)
        if cancel is not None and not self._disconnected:
            writeFrame(self.transport, cancel)
        self._closeIfDone()

    def drain(self) -> None:
        """
        Send nothing more on this connection: it closes once the calls in
        flight on it are answered (see L{ClientConnection.drain}).
        """
        self.core.drain()
        self._closeIfDone()

    def _closeIfDone(self) -> None:
        core = self.core
        if core.finished or (self.client._closed and not core.inflight):
            self.transport.loseConnection()

    # -- what the core reports (IClientEvents) --------------------------------

    def connectionReady(self, info: dict[str, Any]) -> None:
        self.client._connectionReady(self)

    def callAnswered(self, call: _Call, result: Any) -> None:
        call.connection = None
        deferred = call.deferred
        assert deferred is not None
        # Break the call <-> Deferred cycle (the canceller is the call's) so
        # reference counting frees both at once, without the cyclic GC.
        call.deferred = None
        self.client.stats.answered += 1
        deferred.callback(result)
        core = self.core
        if core.state is not _READY or core.draining or self.client._closed:
            self._closeIfDone()

    def itemReceived(self, call: _StreamCall, item: Any) -> None:
        call.received = True
        call.stream.itemReceived(item)

    def callFailed(self, call: _Call, error: RpcError) -> None:
        call.connection = None
        self.client.stats.remoteErrors += 1
        call.fail(error)
        self._closeIfDone()

    def goawayReceived(self, reason: str | None, unrun: list[_Call]) -> None:
        for call in unrun:
            call.connection = None
        self.client.stats.resent += len(unrun)
        _log.debug(
            "{peer}: goaway ({reason}); {count} calls to resend",
            peer=self.transport.getPeer(),
            reason=reason,
            count=len(unrun),
        )
        self.client._connectionGoingAway(self, unrun)
        self._closeIfDone()

    def connectionRefused(self, calls: list[_Call], error: Unauthorized) -> None:
        _log.error(
            "{peer}: the server refused the connection: {error}",
            peer=self.transport.getPeer(),
            error=error,
        )
        for call in calls:
            call.connection = None
        self.client._connectionRefused(self, calls, error)
        self._closeIfDone()

    def connectionNotServed(self, reason: str | None) -> None:
        _log.info(
            "{peer}: the server did not serve the connection (goaway {reason} "
            "before its hello)",
            peer=self.transport.getPeer(),
            reason=reason,
        )
        self.transport.loseConnection()

    def protocolViolation(self, why: str, lost: list[_Call]) -> None:
        _log.error(
            "{peer}: protocol violation, closing the connection: {why}",
            peer=self.transport.getPeer(),
            why=why,
        )
        # Before the calls fail: a call made from their errbacks must not
        # come here.
        self.client._unready(self)
        self._failLost(lost, f"the server broke the protocol ({why})")
        self.transport.abortConnection()

    def serverError(self, error: RpcError) -> None:
        _log.warn(
            "{peer}: the server reported an error: {error}",
            peer=self.transport.getPeer(),
            error=error,
        )

    # -- the end ------------------------------------------------------------

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self._disconnected = True
        state = self.core.state
        # Closed after a goaway or a refusal: the server is there, and the
        # next attempt need not wait for a backoff delay.
        self.wentAway = state is State.GOING_AWAY or state is State.REFUSED
        lost = self.core.connectionLost()
        self.client._connectionLost(self, reason)
        self._failLost(lost, f"the connection was lost ({reason.getErrorMessage()})")

    def _failLost(self, lost: list[_Call], why: str) -> None:
        client = self.client
        for call in lost:
            client._lostInFlight(call, why)


class _Redial:
    """
    What L{ReconnectingClientFactory.retry} calls C{connect()} on: each
    attempt is a fresh connection, so that a new one can open while an old
    one is still answering its last calls after a goaway.
    """

    def __init__(self, client: RpcClient, endpoint: _Endpoint) -> None:
        self._client = client
        self._endpoint = endpoint

    def connect(self) -> None:
        self._client._redial(self._endpoint)

    def stopConnecting(self) -> None:
        pass


class RpcClientFactory(ReconnectingClientFactory):
    """
    The L{ReconnectingClientFactory} of one endpoint of an L{RpcClient}: it
    supplies the backoff (C{initialDelay}, C{factor}, C{maxDelay},
    C{jitter}, C{clock}); the client decides when to connect and reconnect.
    """

    protocol = RpcClientProtocol
    initialDelay = 0.1
    delay = initialDelay
    maxDelay = 10.0  # type: ignore[assignment]
    noisy = False

    def __init__(self, client: RpcClient, clock: Any, endpoint: _Endpoint) -> None:
        self.client = client
        self.clock = clock
        self.endpoint = endpoint

    def buildProtocol(self, addr: IAddress | None) -> RpcClientProtocol:
        return RpcClientProtocol(self.client, self.endpoint)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.client._attemptFailed(reason, self.endpoint)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        # RpcClientProtocol.connectionLost has already told the client.
        pass


class EndpointState(enum.Enum):
    """
    The states of one endpoint of an L{RpcClient}.
    """

    #: No connection and no attempt: dialled on the next call (after its
    #: backoff delay if C{failed}).
    IDLE = "idle"
    #: Waiting for its backoff delay before the next attempt.
    BACKING_OFF = "backing off"
    #: An attempt is under way: connecting, or waiting for the hello.
    CONNECTING = "connecting"
    #: A connection takes calls (C{ready}).
    READY = "ready"


def _isTLSFailure(reason: Failure) -> bool:
    """
    Did a connection end because its TLS handshake failed (OpenSSL refused
    it, or the certificate does not name the host)?
    """
    try:
        from OpenSSL.SSL import Error
        from service_identity import VerificationError
    except ImportError:  # pragma: no cover (no TLS without them)
        return False
    return reason.check(Error, VerificationError) is not None


class _Endpoint:
    """
    One server of an L{RpcClient}: its address, its backoff (the factory),
    and the state of its connection.

    @ivar state: an L{EndpointState}.
    @ivar ready: the connection that takes new calls, when C{READY}.
    @ivar failed: the last attempt failed or the last connection was lost:
        the next attempt waits for the backoff delay.
    @ivar tls: the TLS connection creator to connect with, or L{None}.
    """

    __slots__ = (
        "connector",
        "factory",
        "failed",
        "host",
        "port",
        "ready",
        "removed",
        "slots",
        "state",
        "tls",
    )

    def __init__(
        self, client: RpcClient, host: str, port: int, tls: Any, clock: Any
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.factory = RpcClientFactory(client, clock, self)
        self.state = EndpointState.IDLE
        self.ready: RpcClientProtocol | None = None
        self.connector: IConnector | None = None
        self.failed = False
        # Taken out of the client's endpoints (setEndpoints): never dialled
        # again, its connections drained.
        self.removed = False
        # How many places its ready connection takes in the round-robin.
        self.slots = 1


class RpcCaller:
    """
    Calls through an L{RpcClient} with L{CallOptions}: what
    L{RpcClient.withCallOptions} returns.

    @ivar client: the client the calls go through.
    @ivar options: how they are made.
    """

    def __init__(self, client: RpcClient, options: CallOptions) -> None:
        self.client = client
        self.options = options

    def callRemote(self, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        L{RpcClient.callRemote}, with these options.
        """
        return self.client._callWith(self.options, method, args, kwargs)

    def callStream(self, method: str, *args: Any, **kwargs: Any) -> RpcStream:
        """
        L{RpcClient.callStream}, with these options (a timeout is the whole
        stream's).
        """
        return self.client._streamWith(self.options, method, args, kwargs)

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """
        L{RpcClient.notify}, with these options' metadata.
        """
        self.client._notifyWith(self.options, method, args, kwargs)

    def withCallOptions(
        self,
        timeout: float | None = None,
        metadata: Mapping[str, str | bytes] | None = None,
        idempotent: bool | None = None,
    ) -> RpcCaller:
        """
        A caller with these options and the given ones on top (metadata is
        added to).
        """
        return RpcCaller(
            self.client,
            self.options.merged(CallOptions(timeout, metadata, idempotent)),
        )

    def __repr__(self) -> str:
        return f"<RpcCaller {self.options!r} through {self.client!r}>"


class RpcClient:
    """
    A Deferred-returning agilerpc client for one server, or for several
    (C{endpoints}) over which it spreads calls round-robin.

    @param reactor: provides C{connectTCP} (C{connectSSL} with C{tls}) and
        C{callLater}; tests pass a L{twisted.internet.testing.MemoryReactorClock}
        or use L{agilerpc.testing.MemoryServer}.
    @param host: the server's host name or address (or give C{endpoints}).
    @param port: its TCP port.
    @param endpoints: instead of C{host} and C{port}, several servers as
        C{(host, port)} pairs or C{"host:port"} strings: the client keeps a
        connection to each and spreads calls round-robin over those that are
        ready (see the module docstring for what happens when one goes
        away).  A C{(host, port, tls)} triple connects to that server with
        its own TLS connection creator (C{optionsForClientTLS} checks one
        host name) instead of C{tls}.
    @param timeout: the default deadline of each call in seconds, counting the
        time it waits for a connection; L{None} for none.  Calls past it fail
        with L{CallTimeout}.
    @param tls: a TLS connection creator, e.g. from
        L{twisted.internet.ssl.optionsForClientTLS}, to connect with TLS.
    @param maxPending: how many calls may be unanswered (queued or in flight)
        at once; a call beyond that fails at once with L{QueueFull}.
    @param connectTimeout: seconds to wait for a TCP connection.
    @param token: the server's auth token (C{twistd agilerpc
        --auth-token-file}), sent first on every connection.  Calls refused
        for a wrong or missing token fail with L{Unauthorized} and are not
        sent again.  Without C{tls} the token crosses the network in the
        clear.
    @param maxMessageSize: the largest frame the client accepts from a
        server, in bytes (the server's hello never raises it); a larger frame
        header is a protocol violation.
    @param streamWindow: how many items of a stream (L{callStream}) the
        server may send ahead of what its consumer has taken, at first.
    @param streamBuffer: then, the bytes of items it may send ahead: the
        window is sized from the items seen (from 2 to 4096 items).
    @param idempotent: names of methods that are safe to run twice: a call
        of one (or a stream that received no item yet) lost with its
        connection is sent again as C{retryPolicy} says, instead of failing
        with L{CallLost}.  L{withCallOptions} overrides it per call.  Empty
        by default: nothing is ever retried unless a caller says so.
    @param retryPolicy: how often and how soon such calls are sent again
        (L{RetryPolicy}: by default 3 attempts in all, 0.05 s then 0.1 s
        apart, with jitter), never past a call's deadline.

    @param service: instead of C{host} and C{port} or C{endpoints}, a DNS
        name whose SRV records list the servers
        (C{_agilerpc._tcp.billing.default.svc.cluster.local}): the targets of
        the lowest priority that have addresses (A/AAAA, from the answer's
        additional section or looked up) become the endpoints, in RFC 2782
        order, each taking calls in proportion to its weight (as
        L{setEndpoints}'s C{weights}).
    @param hostname: instead, a name whose A and AAAA records are the
        servers (a Kubernetes headless service), each on C{port}.
    @param resolver: with C{service} or C{hostname}, the
        L{twisted.internet.interfaces.IResolver} to ask; by default a
        L{twisted.names.client.Resolver} of the name servers in
        C{/etc/resolv.conf}, on C{reactor}.
    @param resolveInterval: with C{service} or C{hostname}: the name is
        resolved on the first call (or L{connect}), then again after the
        records' smallest TTL but not sooner than this many seconds (nor
        later than 300 s), and soon after a connection fails.  The
        endpoints found replace the old ones as L{setEndpoints} does.  A
        resolution that fails or finds no records keeps the endpoints and is
        retried after 1, 2, 4... seconds, up to this interval; until one
        succeeds, calls wait in the queue (under their timeout and
        C{maxPending}).

    @param tracing: start an OpenTelemetry CLIENT span for each call,
        stream and notification (the child of the current span), and send
        its trace context with it as metadata, to a server that takes
        metadata (needs C{agilerpc[otel]}; see L{agilerpc._otel}).
    @param tracerProvider: with C{tracing}, where the spans go; L{None}:
        OpenTelemetry's global provider.
    @raise ImportError: with C{tracing}, if opentelemetry-api is not
        installed.

    @ivar idempotent: the C{idempotent} method names, a frozenset.
    @ivar retryPolicy: the L{RetryPolicy}.
    """

    def __init__(
        self,
        reactor: Any,
        host: str | None = None,
        port: int | None = None,
        timeout: float | None = None,
        tls: Any = None,
        maxPending: int = 10000,
        connectTimeout: float = 30,
        token: str | bytes | None = None,
        *,
        endpoints: Iterable[str | tuple[str, int] | tuple[str, int, Any]] | None = None,
        maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
        streamWindow: int = 16,
        streamBuffer: int = DEFAULT_STREAM_BUFFER,
        idempotent: Iterable[str] = (),
        retryPolicy: RetryPolicy | None = None,
        tracing: bool = False,
        tracerProvider: TracerProvider | None = None,
        service: str | None = None,
        hostname: str | None = None,
        resolver: IResolver | None = None,
        resolveInterval: float = 30.0,
    ) -> None:
        if not 1 <= streamWindow <= 2**32 - 1:
            raise ValueError("streamWindow must be from 1 to 2**32 - 1")
        self.idempotent = checkMethods(idempotent)
        if retryPolicy is not None and not isinstance(retryPolicy, RetryPolicy):
            raise TypeError(f"retryPolicy must be a RetryPolicy, not {retryPolicy!r}")
        # Each client its own: tests tune it, as they tune the factory.
        self.retryPolicy = RetryPolicy() if retryPolicy is None else retryPolicy
        # What system.describe said of each method's idempotence (describe()),
        # and the methods of self.idempotent it said are not.
        self._described: dict[str, bool] = {}
        self._refused: frozenset[str] = frozenset()
        self.streamWindow = streamWindow
        self.streamBuffer = streamBuffer
        self._tls = tls
        name = service if service is not None else hostname
        if name is not None:
            checkNameArguments(
                "RpcClient",
                service,
                hostname,
                port,
                "endpoints"
                if endpoints is not None
                else "a host"
                if host is not None
                else None,
            )
            # Resolution (on the first call or connect()) gives the endpoints.
            addresses: list[tuple[str, int, Any]] = []
        elif endpoints is None:
            if host is None or port is None:
                raise TypeError("RpcClient needs a host and a port, or endpoints")
            addresses = [(host, checkPort(port), tls)]
        else:
            if host is not None or port is not None:
                raise TypeError(
                    "RpcClient takes a host and a port, or endpoints, not both"
                )
            addresses = self._addresses(endpoints)
            if not addresses:
                raise ValueError("RpcClient needs at least one endpoint")
        self._endpoints = [_Endpoint(self, h, p, t, reactor) for h, p, t in addresses]
        # The ready connections, each as many times as its endpoint has
        # slots (its weight), and where the next call goes among them.
        self._readyList: list[RpcClientProtocol] = []
        self._next = 0
        # The slots of every endpoint: the ready list is that long when
        # every endpoint is ready.
        self._slots = len(self._endpoints)
        if self._endpoints:
            first = self._endpoints[0]
        else:
            assert name is not None
            # Never dialled: its factory holds the backoff settings that the
            # endpoints resolution finds start with.
            first = _Endpoint(self, name, checkPort(port) if port else 0, tls, reactor)
        self.host = first.host
        self.port = first.port
        self.timeout = timeout
        self.maxPending = maxPending
        self.connectTimeout = connectTimeout
        self.maxMessageSize = maxMessageSize
        self._reactor = reactor
        if isinstance(token, str):
            token = token.encode("utf-8")
        self._token = token
        # The first endpoint's factory (the only one with one endpoint): its
        # backoff settings are the ones tests tune.
        self.factory = first.factory
        self._queue: OrderedDict[_Call, None] = OrderedDict()
        # Calls lost in flight, waiting for their backoff to be sent again.
        self._retrying: dict[_Call, IDelayedCall] = {}
        self._connections: set[RpcClientProtocol] = set()
        self._closed = False
        self.stats = ClientStats()
        self._closing: Deferred[None] | None = None
        self._closeDeadline: IDelayedCall | None = None
        self._tracing: ClientTracing | None = None
        if tracing:
            from ._otel import ClientTracing

            self._tracing = ClientTracing(
                tracerProvider, [(e.host, e.port) for e in self._endpoints]
            )
            # Traced calls take the way of calls with options: callRemote,
            # the untraced hot path, gets no check for them.
            self.callRemote = self._tracedCallRemote  # type: ignore[method-assign]
        self._discovery: DnsDiscovery | None = None
        if name is not None:
            from ._resolving import DnsDiscovery

            self._discovery = DnsDiscovery(
                self._resolvedEndpoints,
                reactor,
                resolver,
                resolveInterval,
                service=service,
                hostname=hostname,
                port=port,
            )

    def _addresses(
        self, endpoints: Iterable[str | tuple[str, int] | tuple[str, int, Any]]
    ) -> list[tuple[str, int, Any]]:
        """
        C{(host, port, tls)} for each endpoint as the constructor and
        L{setEndpoints} take them.
        """
        addresses: list[tuple[str, int, Any]] = []
        for e in endpoints:
            if isinstance(e, str):
                addresses.append((*parseAddress(e), self._tls))
            else:
                name, number = parseAddress(e[:2])
                addresses.append((name, number, e[2] if len(e) > 2 else self._tls))
        return addresses

    # -- the caller's side --------------------------------------------------

    def callRemote(self, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Call C{method} on the server.

        @return: a L{Deferred <twisted.internet.defer.Deferred>} that
            fires with the result, or fails with a L{RemoteError} (e.g.
            L{MethodNotFound}: the server's answer), or a
            L{LocalError}: L{CallLost} (it may have run), L{ClientClosed},
            L{QueueFull} or L{RequestTooLarge} (it was not sent),
            L{CallTimeout}, L{InvalidResponse}, L{TLSRefused} or
            L{NotIdempotent} (a method of the client's C{idempotent} set that
            the server described as not idempotent: it was not sent).
            Cancelling it removes a queued call, or abandons an in-flight one
            and asks the server to cancel it.
        """
        if self._closed:
            return fail(ClientClosed(f"{method}(): the client is closed"))
        if self._refused and method in self._refused:
            return fail(refusal(method, self._described))
        # self.pending, inline.
        queue = self._queue
        pending = len(queue) + len(self._retrying)
        for protocol in self._connections:
            pending += len(protocol.core.calls)
        if pending >= self.maxPending:
            return fail(self._queueFull(method, pending))
        call = _Call(method, list(args), kwargs, None)
        d: Deferred[Any] = Deferred(call.cancel)
        call.deferred = d
        call.client = self
        timeout = self.timeout
        if timeout is not None:
            call.sending = _Sending(self._reactor.seconds() + timeout)
            d.addTimeout(timeout, self._reactor, call.timedOut)
        # self._submit(call), with its usual case inline: a ready connection
        # and nothing queued.
        ready = self._readyList
        if ready and not queue and len(ready) == self._slots:
            index = self._next
            if index >= len(ready):
                index = 0
            self._next = index + 1
            ready[index].sendCall(call)
        else:
            self._submit(call)
        return d

    def _tracedCallRemote(
        self, method: str, *args: Any, **kwargs: Any
    ) -> Deferred[Any]:
        """
        L{callRemote} of a client with C{tracing}: the call with the
        client's defaults, and a span.
        """
        return self._callWith(_NO_OPTIONS, method, args, kwargs)

    def withCallOptions(
        self,
        timeout: float | None = None,
        metadata: Mapping[str, str | bytes] | None = None,
        idempotent: bool | None = None,
    ) -> RpcCaller:
        """
        A caller whose calls, notifications and streams go through this
        client with these options::

            caller = client.withCallOptions(timeout=2, metadata={"tenant": "a"})
            d = caller.callRemote("lookup", "key", fresh=True)

        C{callRemote}'s own keyword arguments stay the method's.

        @param timeout: the seconds each call may take (from when it is made,
            waiting for a connection included): the server is told the time
            left when the request goes out, and cancels the call when it runs
            out (C{DeadlineExceeded}); here the call fails with
            L{CallTimeout} then.  L{None}: the client's C{timeout}.  Unlike
            the client's, it applies to streams too, to the whole stream.
        @param metadata: str keys to str or bytes values, sent with each
            request (the handler reads them from
            L{agilerpc.currentCall}); to a server that does not take
            metadata the call fails with L{FeatureNotSupported}, and past the
            server's limit with L{MetadataTooLarge}.  Not sent at all.
        @param idempotent: the calls may run twice: one lost with its
            connection is sent again, as the client's C{retryPolicy} says,
            instead of failing with L{CallLost}; a stream only if it
            received no item.  L{None}: whether the method is in the
            client's C{idempotent} set.  A call that asks for it of a method
            the server described as not idempotent (see L{describe}) fails
            at once with L{NotIdempotent}, unsent.
        @raise ValueError: if an option is invalid.
        """
        return RpcCaller(self, CallOptions(timeout, metadata, idempotent))

    def _callWith(
        self,
        options: CallOptions,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        span: ClientSpan | None = None,
    ) -> Deferred[Any]:
        """
        L{callRemote} with C{options}; C{span}: its trace span, given when
        the client traces calls.
        """
        if span is None and self._tracing is not None:
            # The span covers the whole call, refused at once or answered.
            span = self._tracing.start(method)
            return self._callWith(options, method, args, kwargs, span).addBoth(
                span.ended
            )
        if self._closed:
            return fail(ClientClosed(f"{method}(): the client is closed"))
        if options.idempotent or self.idempotent:
            refused = self._refusal(method, options)
            if refused is not None:
                return fail(refused)
        # self.pending, inline.
        queue = self._queue
        pending = len(queue) + len(self._retrying)
        for protocol in self._connections:
            pending += len(protocol.core.calls)
        if pending >= self.maxPending:
            return fail(self._queueFull(method, pending))
        call = _Call(method, list(args), kwargs, None)
        d: Deferred[Any] = Deferred(call.cancel)
        call.deferred = d
        call.client = self
        timeout = self.timeout if options.timeout is None else options.timeout
        call.sending = self._sending(options, method, timeout)
        if span is not None:
            call.sending.trace = span.metadata
        if timeout is not None:
            d.addTimeout(timeout, self._reactor, call.timedOut)
        # self._submit(call), with its usual case inline, as in callRemote.
        ready = self._readyList
        if ready and not queue and len(ready) == self._slots:
            index = self._next
            if index >= len(ready):
                index = 0
            self._next = index + 1
            ready[index]._sendOther(call)
        else:
            self._submit(call)
        return d

    def _queueFull(self, method: str, pending: int) -> QueueFull:
        """
        The error of a call of C{method} made when C{pending} calls, at least
        C{maxPending}, are already unanswered.
        """
        return QueueFull(
            f"{method}(): {pending} calls are already pending "
            f"(maxPending={self.maxPending})"
        )

    def _sending(
        self, options: CallOptions, method: str, timeout: float | None
    ) -> _Sending:
        """
        How a call of C{method} made with C{options} is sent.
        """
        return _Sending(
            None if timeout is None else self._reactor.seconds() + timeout,
            options.metadata,
            options.idempotent,
            options.metadataSize,
        )

    def _refusal(self, method: str, options: CallOptions) -> NotIdempotent | None:
        """
        The error to fail a call of C{method} with at once when it asks to
        be retried (by C{options}, or the client's C{idempotent} set) and
        the server described C{method} as not idempotent; else L{None}.
        """
        idempotent = options.idempotent
        if idempotent is None:
            idempotent = method in self.idempotent
        if not idempotent:
            return None
        return refusal(method, self._described)

    def describe(self) -> Deferred[dict[str, Any]]:
        """
        Call C{system.describe} (PROTOCOL.md 7.2) and remember which methods
        the server says are idempotent: from then on a call that asks to be
        retried (L{withCallOptions}C{(idempotent=True)}, or the client's
        C{idempotent} set) of a method the server described as not
        idempotent fails at once with L{NotIdempotent}, unsent.  It never
        makes a call retried that its caller did not ask for.

        With several endpoints, the description of the server that answers
        is kept: they are meant to serve the same methods.

        @return: a L{Deferred <twisted.internet.defer.Deferred>} of
            C{system.describe}'s result.
        """
        d = self._callWith(CallOptions(idempotent=True), "system.describe", (), {})
        return d.addCallback(self._learn)

    def _learn(self, description: Any) -> Any:
        described = describedIdempotence(description)
        self._described = described
        self._refused = frozenset(
            m for m in self.idempotent if described.get(m) is False
        )
        return description

    def callStream(self, method: str, *args: Any, **kwargs: Any) -> RpcStream:
        """
        Call C{method}, a streaming method (a generator on the server), and
        take its items as they come.

        The server sends at most C{streamWindow} items ahead of what the
        stream's consumer has taken at first, then as many as hold about
        C{streamBuffer} bytes.  A stream is queued while no connection
        is ready, and resent after a goaway like any call that provably did
        not run; a connection lost in the middle of a stream fails it with
        L{CallLost} after the items already received: it is never restarted.
        The client's C{timeout} does not apply: cancel the stream to stop it.

        @return: an L{RpcStream}, failed at once (on its first L{RpcStream.next})
            with L{ClientClosed} or L{QueueFull}.
        """
        return self._streamWith(None, method, args, kwargs)

    def _streamWith(
        self,
        options: CallOptions | None,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> RpcStream:
        """
        L{callStream}, with C{options}.
        """
        timeout = None if options is None else options.timeout
        span = None if self._tracing is None else self._tracing.start(method)
        call = _StreamCall(
            method,
            list(args),
            kwargs,
            self.streamWindow,
            timeout,
            self._reactor,
            None if span is None else span.ended,
        )
        if span is not None:
            call.sending = self._sending(options or _NO_OPTIONS, method, timeout)
            call.sending.trace = span.metadata
        elif options is not None:
            call.sending = self._sending(options, method, timeout)
        if self._closed:
            call.fail(ClientClosed(f"{method}(): the client is closed"))
            return call.stream
        refused = self._refusal(method, options or _NO_OPTIONS)
        if refused is not None:
            call.fail(refused)
            return call.stream
        pending = self.pending
        if pending >= self.maxPending:
            call.fail(self._queueFull(method, pending))
            return call.stream
        call.client = self
        self._submit(call)
        return call.stream

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """
        Send a notification: C{method} runs on the server and nothing is
        answered, so nothing reports whether it ran.  It is queued like a call
        while no connection is ready.

        @raise ClientClosed: if the client is closed.
        @raise QueueFull: if the queue is full.
        """
        self._notifyWith(None, method, args, kwargs)

    def _notifyWith(
        self,
        options: CallOptions | None,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        span: ClientSpan | None = None,
    ) -> None:
        """
        L{notify}, with C{options}: only their metadata matters; C{span}:
        its trace span, given when the client traces calls.
        """
        if span is None and self._tracing is not None:
            # The span ends when the notification is sent or queued.
            span = self._tracing.start(method)
            try:
                self._notifyWith(options, method, args, kwargs, span)
            except BaseException as e:
                span.failed(e)
                raise
            finally:
                span.span.end()
            return
        if self._closed:
            raise ClientClosed(f"{method}(): the client is closed")
        if len(self._queue) >= self.maxPending:
            raise QueueFull(f"{method}(): {len(self._queue)} calls are queued")
        call = _Call(method, list(args), kwargs, None)
        if options is not None and options.metadata:
            call.sending = _Sending(None, options.metadata, None, options.metadataSize)
        if span is not None:
            if call.sending is None:
                call.sending = _Sending(None)
            call.sending.trace = span.metadata
        self._submit(call)

    @property
    def pending(self) -> int:
        """
        How many calls are unanswered: queued, in flight on a connection, or
        waiting to be sent again after a loss.
        """
        count = len(self._queue) + len(self._retrying)
        for protocol in self._connections:
            count += len(protocol.core.calls)
        return count

    def _submit(self, call: _Call) -> None:
        ready = self._readyList
        if ready and not self._queue:
            if len(ready) < self._slots:
                self._connect()
            index = self._next
            if index >= len(ready):
                index = 0
            self._next = index + 1
            ready[index].sendCall(call)
        else:
            # Not connected, or connected and still sending the queue (a
            # call made from a callback while it drains): keep the order.
            self._queue[call] = None
            self._connect()

    def _cancel(self, call: _Call) -> None:
        self.stats.cancelled += 1
        if call in self._queue:
            del self._queue[call]
        elif call in self._retrying:
            self._retrying.pop(call).cancel()
        elif call.connection is not None:
            call.connection.cancelCall(call)

    # -- retries ------------------------------------------------------------

    def _lostInFlight(self, call: _Call, why: str) -> None:
        """
        C{call} was in flight when its connection was lost (C{why}): send it
        again after its backoff if it is idempotent and the policy allows,
        else fail it with L{CallLost}.
        """
        call.connection = None
        sending = call.sending
        idempotent = None if sending is None else sending.idempotent
        if idempotent is None:
            idempotent = call.method in self.idempotent
        # A stream whose items came is never restarted: the caller would see
        # them twice.  (A call without a Deferred is never in flight; were
        # one lost, sending it again would make it a notification.)
        if (
            not idempotent
            or self._closed
            or call.deferred is None
            or (type(call) is _StreamCall and call.received)
        ):
            self.stats.lost += 1
            call.fail(
                CallLost(
                    f"{call.method}() (msgid {call.msgid}): {why} while it was in "
                    "flight: it may or may not have run on the server, so it was "
                    "not resent"
                )
            )
            return
        if sending is None:
            sending = call.sending = _Sending(None, None, True)
        lost = sending.lost = sending.lost + 1
        policy = self.retryPolicy
        delay = policy.retryDelay(lost, self._reactor.seconds(), sending.expires)
        if delay is None:
            self.stats.lost += 1
            call.fail(
                CallLost(
                    f"{call.method}() (msgid {call.msgid}): {why} while it was in "
                    "flight: it may or may not have run on the server; "
                    + policy.giveUp(lost)
                )
            )
            return
        _log.debug(
            "{method}() (msgid {msgid}) lost in flight ({why}); sending it again "
            "in {delay:.3f} s (attempt {attempt} of {most})",
            method=call.method,
            msgid=call.msgid,
            why=why,
            delay=delay,
            attempt=lost + 1,
            most=policy.maxAttempts,
        )
        call.msgid = -1
        self._retrying[call] = self._reactor.callLater(delay, self._resubmit, call)

    def _resubmit(self, call: _Call) -> None:
        """
        C{call}'s backoff is over: send it again, before the calls queued
        after it was first made.
        """
        del self._retrying[call]
        self.stats.retries += 1
        queue = self._queue
        queue[call] = None
        queue.move_to_end(call, last=False)
        self._drain()
        self._connect()

    def connect(self) -> None:
        """
        Connect now instead of on the first call (calls still wait for the
        connection's hello).  Does nothing if connected or connecting.
        """
        if self._closed:
            raise ClientClosed("the client is closed")
        self._connect()

    @property
    def queued(self) -> int:
        """
        How many calls wait for a connection.
        """
        return len(self._queue)

    @property
    def connected(self) -> bool:
        """
        Whether a connection is ready to take calls now.
        """
        return bool(self._readyList)

    @property
    def endpoints(self) -> Sequence[tuple[str, int]]:
        """
        The servers, as C{(host, port)} pairs.
        """
        return [(e.host, e.port) for e in self._endpoints]

    @property
    def endpointStates(self) -> Sequence[EndpointState]:
        """
        The state of each endpoint, in order.
        """
        return [e.state for e in self._endpoints]

    @property
    def factories(self) -> Sequence[RpcClientFactory]:
        """
        The factory of each endpoint, in order: each holds that endpoint's
        backoff settings (C{initialDelay}, C{factor}, C{maxDelay}, C{jitter}).
        """
        return [e.factory for e in self._endpoints]

    @property
    def readyEndpoints(self) -> Sequence[tuple[str, int]]:
        """
        The servers with a connection ready to take calls now.
        """
        return [(e.host, e.port) for e in self._endpoints if e.ready is not None]

    # -- changing the endpoints ---------------------------------------------

    def setEndpoints(
        self,
        endpoints: Iterable[str | tuple[str, int] | tuple[str, int, Any]],
        weights: Sequence[int] | None = None,
    ) -> None:
        """
        Change the servers, at run time: for a directory of your own (Consul's
        HTTP API, etcd); a client made with C{service} or C{hostname} calls it
        after each resolution.

        An endpoint in both the old and the new list keeps its connection.  A
        new one is dialled like the others: at once if calls are queued, else
        on the next call.  A removed one is drained, never cut: its
        connections take no new call, the calls in flight on them are
        answered there, and each closes once it owes nothing.

        @param endpoints: as the constructor takes them: C{(host, port)}
            pairs, C{"host:port"} strings or C{(host, port, tls)} triples; at
            least one.
        @param weights: each endpoint's share of the calls, in proportion
            (as SRV weights: 0 is the smallest share), when they are all
            ready; by default equal shares.
        @raise ClientClosed: if the client is closed.
        @raise ValueError: for an empty list, or an endpoint that is not one,
            or weights that are not one non-negative integer per endpoint.
        """
        if self._closed:
            raise ClientClosed("the client is closed")
        addresses = self._addresses(endpoints)
        if not addresses:
            raise ValueError("RpcClient needs at least one endpoint")
        if weights is not None:
            weights = list(weights)
            if len(weights) != len(addresses) or not all(
                type(w) is int and w >= 0 for w in weights
            ):
                raise ValueError(
                    f"weights must be one integer >= 0 per endpoint, not {weights!r}"
                )
        self._replaceEndpoints(addresses, weights)

    def _replaceEndpoints(
        self, addresses: list[tuple[str, int, Any]], weights: list[int] | None = None
    ) -> None:
        places = slots(weights) if weights is not None else [1] * len(addresses)
        current = {(e.host, e.port): e for e in self._endpoints}
        endpoints: list[_Endpoint] = []
        for (host, port, tls), count in zip(addresses, places, strict=True):
            endpoint = current.pop((host, port), None)
            if endpoint is None:
                if any(e.host == host and e.port == port for e in endpoints):
                    continue
                endpoint = self._newEndpoint(host, port, tls)
            endpoint.slots = count
            endpoints.append(endpoint)
        added = [e for e in endpoints if e not in self._endpoints]
        self._endpoints = endpoints
        self._slots = sum(e.slots for e in endpoints)
        self._readyList[:] = [
            e.ready for e in endpoints if e.ready is not None for _ in range(e.slots)
        ]
        if added or current:
            _log.info(
                "endpoints: {added} added, {removed} removed; now {now}",
                added=", ".join(f"{e.host}:{e.port}" for e in added) or "none",
                removed=", ".join(f"{h}:{p}" for h, p in current) or "none",
                now=", ".join(f"{e.host}:{e.port}" for e in endpoints),
            )
        for endpoint in current.values():
            self._retire(endpoint)
        if self._queue:
            self._connect()

    def _resolvedEndpoints(
        self, endpoints: list[tuple[str, int]], weights: list[int]
    ) -> None:
        self._replaceEndpoints(
            [(host, port, self._tls) for host, port in endpoints], weights
        )

    def _newEndpoint(self, host: str, port: int, tls: Any) -> _Endpoint:
        """
        An endpoint whose backoff settings are those of L{factory}.
        """
        endpoint = _Endpoint(self, host, port, tls, self._reactor)
        template, factory = self.factory, endpoint.factory
        factory.initialDelay = factory.delay = template.initialDelay
        factory.maxDelay = template.maxDelay
        factory.factor = template.factor
        factory.jitter = template.jitter
        factory.maxRetries = template.maxRetries
        return endpoint

    def _retire(self, endpoint: _Endpoint) -> None:
        """
        C{endpoint} was removed: stop dialling it and drain its connections.
        """
        endpoint.removed = True
        endpoint.factory.stopTrying()  # type: ignore[no-untyped-call]
        if (
            endpoint.state is EndpointState.CONNECTING
            and endpoint.connector is not None
        ):
            with suppress(Exception):
                endpoint.connector.stopConnecting()
        for protocol in list(self._connections):
            if protocol.endpoint is endpoint:
                self._unready(protocol)
                if protocol.core.hello is None:
                    protocol.transport.loseConnection()
                else:
                    protocol.drain()
        endpoint.state = EndpointState.IDLE

    # -- connecting ---------------------------------------------------------

    def _connect(self) -> None:
        """
        Dial every idle endpoint; one whose last connection failed waits for
        its backoff delay first.
        """
        if self._closed:
            return
        if self._discovery is not None:
            self._discovery.start()
        for endpoint in self._endpoints:
            if endpoint.state is EndpointState.IDLE:
                self._connectEndpoint(endpoint)

    def _connectEndpoint(self, endpoint: _Endpoint) -> None:
        if endpoint.failed:
            endpoint.state = EndpointState.BACKING_OFF
            endpoint.factory.retry(_Redial(self, endpoint))  # type: ignore[no-untyped-call]
        else:
            self._dial(endpoint)

    def _redial(self, endpoint: _Endpoint) -> None:
        if endpoint.state is not EndpointState.BACKING_OFF:
            return
        if self._closed:
            endpoint.state = EndpointState.IDLE
            return
        self._dial(endpoint)

    def _dial(self, endpoint: _Endpoint) -> None:
        endpoint.state = EndpointState.CONNECTING
        if endpoint.tls is not None:
            endpoint.connector = self._reactor.connectSSL(
                endpoint.host,
                endpoint.port,
                endpoint.factory,
                endpoint.tls,
                timeout=self.connectTimeout,
            )
        else:
            endpoint.connector = self._reactor.connectTCP(
                endpoint.host,
                endpoint.port,
                endpoint.factory,
                timeout=self.connectTimeout,
            )

    def _attemptFailed(self, reason: Failure, endpoint: _Endpoint) -> None:
        self.stats.connectFailures += 1
        endpoint.state = EndpointState.IDLE
        endpoint.failed = True
        if endpoint.removed or self._closed:
            return
        if self._discovery is not None:
            self._discovery.connectionFailed()
        if not self._queue:
            return
        if _isTLSFailure(reason):
            self._tlsRefused(reason, endpoint)
            return
        _log.info(
            "cannot connect to {host}:{port} ({why}); {count} calls queued, retrying",
            host=endpoint.host,
            port=endpoint.port,
            why=reason.getErrorMessage(),
            count=len(self._queue),
        )
        self._connectEndpoint(endpoint)

    def _tlsRefused(self, reason: Failure, endpoint: _Endpoint) -> None:
        """
        The TLS handshake with C{endpoint} failed: it is not retried until
        the next call, and unless another endpoint may still take them, the
        queued calls fail with L{TLSRefused}.
        """
        _log.error(
            "TLS handshake with {host}:{port} failed: {why}",
            host=endpoint.host,
            port=endpoint.port,
            why=reason.getErrorMessage(),
        )
        for other in self._endpoints:
            if other.state is EndpointState.READY or (
                other.state is EndpointState.CONNECTING and not other.failed
            ):
                return
        queued = list(self._queue)
        self._queue.clear()
        for call in queued:
            call.fail(
                TLSRefused(
                    f"{call.method}(): the TLS handshake with {endpoint.host}:"
                    f"{endpoint.port} failed ({reason.getErrorMessage()}); "
                    "the call was not sent"
                )
            )

    # -- what connections tell the client -----------------------------------

    def _connectionMade(self, protocol: RpcClientProtocol) -> None:
        self._connections.add(protocol)

    def _connectionReady(self, protocol: RpcClientProtocol) -> None:
        endpoint = protocol.endpoint
        endpoint.failed = False
        endpoint.factory.resetDelay()  # type: ignore[no-untyped-call]
        if self._closed or endpoint.removed:
            endpoint.state = EndpointState.IDLE
            protocol.transport.loseConnection()
            return
        self.stats.connects += 1
        endpoint.state = EndpointState.READY
        endpoint.ready = protocol
        self._readyList.extend([protocol] * endpoint.slots)
        self._drain()

    def _drain(self) -> None:
        """
        Send the queue, in order, round-robin over the ready connections.
        """
        queue = self._queue
        ready = self._readyList
        while queue and ready:
            call, _ = queue.popitem(last=False)
            index = self._next
            if index >= len(ready):
                index = 0
            self._next = index + 1
            ready[index].sendCall(call)

    def _unready(self, protocol: RpcClientProtocol) -> None:
        """
        C{protocol} takes no more calls.
        """
        endpoint = protocol.endpoint
        if endpoint.ready is protocol:
            endpoint.ready = None
            endpoint.state = EndpointState.IDLE
        if protocol in self._readyList:
            self._readyList[:] = [p for p in self._readyList if p is not protocol]

    def _connectionGoingAway(
        self, protocol: RpcClientProtocol, unrun: list[_Call]
    ) -> None:
        self._unready(protocol)
        queue = self._queue
        for call in reversed(unrun):
            queue[call] = None
            queue.move_to_end(call, last=False)
        self._drain()
        if queue:
            self._connect()

    def _connectionRefused(
        self, protocol: RpcClientProtocol, inflight: list[_Call], error: Unauthorized
    ) -> None:
        """
        The server refused C{protocol}: fail C{inflight} and every queued
        call with C{error}.  Nothing reconnects until the next call.
        """
        self._unready(protocol)
        queued = list(self._queue)
        self._queue.clear()
        for call in inflight + queued:
            call.fail(Unauthorized(f"{call.method}(): {error.message}", error.data))

    def _connectionLost(self, protocol: RpcClientProtocol, reason: Failure) -> None:
        self._connections.discard(protocol)
        self._unready(protocol)
        endpoint = protocol.endpoint
        if protocol.core.hello is None:
            # It never became ready: a failed attempt.
            if endpoint.state is EndpointState.CONNECTING:
                if reason.check(ConnectionDone):
                    reason = Failure(ConnectionDone("closed before the hello"))
                self._attemptFailed(reason, endpoint)
        else:
            if not protocol.wentAway:
                endpoint.failed = True
                if self._discovery is not None and not endpoint.removed:
                    self._discovery.connectionFailed()
            if self._queue and not self._closed:
                self._connect()
        if self._closing is not None and not self._connections:
            self._finishClose()

    # -- closing ------------------------------------------------------------

    def close(self, grace: float = 10.0) -> Deferred[None]:
        """
        Stop: fail every queued call with L{ClientClosed}, stop reconnecting,
        let in-flight calls finish for up to C{grace} seconds, then
        disconnect.

        @return: fires when every connection is closed.
        """
        if self._closing is not None:
            return self._closing
        self._closed = True
        self._closing = Deferred()
        if self._discovery is not None:
            self._discovery.stop()
        for endpoint in self._endpoints:
            endpoint.factory.stopTrying()  # type: ignore[no-untyped-call]
            if (
                endpoint.state is EndpointState.CONNECTING
                and endpoint.connector is not None
            ):
                with suppress(Exception):
                    endpoint.connector.stopConnecting()
        queued = list(self._queue)
        self._queue.clear()
        for call in queued:
            call.fail(
                ClientClosed(
                    f"{call.method}(): the client was closed before it was sent"
                )
            )
        retrying = list(self._retrying.items())
        self._retrying.clear()
        for call, delayed in retrying:
            delayed.cancel()
            assert call.sending is not None
            call.fail(
                ClientClosed(
                    f"{call.method}(): the client was closed before it was sent "
                    f"again; it was lost in flight {times(call.sending.lost)}, "
                    "and may or may not have run"
                )
            )
        if not self._connections:
            self._finishClose()
            return self._closing
        for protocol in list(self._connections):
            protocol._closeIfDone()
        if self._connections:
            self._closeDeadline = self._reactor.callLater(grace, self._abortAll)
        return self._closing

    def _abortAll(self) -> None:
        self._closeDeadline = None
        for protocol in list(self._connections):
            protocol.transport.abortConnection()

    def _finishClose(self) -> None:
        if self._closeDeadline is not None and self._closeDeadline.active():
            self._closeDeadline.cancel()
        self._closeDeadline = None
        closing = self._closing
        if closing is not None and not closing.called:
            closing.callback(None)

    def __repr__(self) -> str:
        where = ", ".join(f"{e.host}:{e.port}" for e in self._endpoints)
        if self._discovery is not None:
            return f"<RpcClient {self._discovery.name} ({where or 'unresolved'})>"
        return f"<RpcClient {where}>"
