"""
The Twisted client: L{RpcClient}, a Deferred-returning caller that queues
calls while it (re)connects and never loses or repeats one.

The rules (docs/PROTOCOL.md has the wire side):

 - A call made while no connection is ready waits in a bounded queue and is
   sent, in order, as soon as a connection says hello.
 - On a goaway, requests sent after the goaway's last msgid provably did not
   run: they go back to the front of the queue and are sent again on the next
   connection.  Requests up to it get their answers on the old connection,
   which is closed once they have.
 - On an unexpected loss (no goaway), calls in flight fail with
   L{ConnectionLost}: they may have run, so resending them could run them
   twice.  Queued calls stay queued, and the factory reconnects with backoff
   while anything is queued.
 - After a goaway with nothing queued, the client reconnects lazily, on the
   next call: reconnecting at once would keep every idle client connected
   forever and defeat the server's keepalive.
 - With a token, each connection sends C{[3, "auth", token]} first.  A server
   that refuses it (an C{Unauthorized} error, or a goaway whose reason is
   C{"Unauthorized"}) fails every call in flight on that connection and every
   queued call with L{Unauthorized}, and the client does not reconnect until
   the next call: a wrong token stays wrong.

With several endpoints (C{RpcClient(reactor, endpoints=[(host, port),
...])}) the client keeps a connection to each, and the same rules hold per
connection, over one shared queue:

 - Calls go round-robin over the connections that are ready; queued calls go
   to whichever connection says hello first.
 - Calls a goaway proves unrun go back to the front of the shared queue and
   are sent on any ready connection (or the next one to be ready).
 - Calls in flight on a lost connection fail with L{ConnectionLost}, as with
   one endpoint; the other connections carry on.
 - Each endpoint has its own backoff.  An endpoint whose connection failed
   or was lost is retried after its backoff delay: at once while calls are
   queued, otherwise when the next call is made, so that a dead host costs
   at most one attempt per delay and an idle client none.  An endpoint that
   went away idle (a goaway) reconnects on the next call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IConnector, IDelayedCall
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from . import _wire
from ._errors import (
    ClientClosed,
    ConnectionLost,
    InvalidResponse,
    MessageTooLarge,
    QueueFull,
    RemoteError,
    Unauthorized,
)
from ._framing import FrameReceiver, writeFrame

_log = Logger(namespace="agilerpc.client")

# The goaway reason (and error type) of a server refusing a connection that
# did not authenticate.
_UNAUTHORIZED = "Unauthorized"

_HALF = 2**31
_WRAP = 2**32


class ClientStats:
    """
    Counters of an L{RpcClient} since it was made (plain integers: counting
    costs nothing measurable; L{agilerpc.ClientCollector} exports them).

    @ivar connects: connections that said hello.
    @ivar connectFailures: attempts that failed before a hello.
    @ivar answered: calls answered with a result.
    @ivar remoteErrors: calls answered with an error.
    @ivar lost: calls failed with L{ConnectionLost} (they may have run).
    @ivar resent: calls a goaway proved unrun, sent again.
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
    )

    def __init__(self) -> None:
        self.connects = 0
        self.connectFailures = 0
        self.answered = 0
        self.remoteErrors = 0
        self.lost = 0
        self.resent = 0
        self.cancelled = 0


class _Call:
    """
    One call (or notification, when C{deferred} is L{None}) from the moment
    it is made until it is answered or fails.
    """

    __slots__ = (
        "args",
        "client",
        "connection",
        "deferred",
        "kwargs",
        "method",
        "msgid",
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
        self.msgid = 0

    def cancel(self, deferred: Deferred[Any]) -> None:
        """
        The canceller of C{deferred}: take the call back from the client.
        """
        if self.client is not None:
            self.client._cancel(self)


def _after(msgid: int, last: int) -> bool:
    """
    Was C{msgid} sent after C{last}?  msgids count up from 0 on each
    connection and wrap at 2**32; fewer than 2**31 are ever in flight.
    """
    return 0 < (msgid - last) % _WRAP < _HALF


class RpcClientProtocol(FrameReceiver, Int32StringReceiver):
    """
    One client connection: sends calls with increasing msgids and matches
    the answers, in any order.
    """

    # Always connected to a stream transport while it runs.
    transport: Any

    def __init__(self, client: RpcClient, endpoint: _Endpoint | None = None) -> None:
        self.client = client
        self.endpoint = endpoint if endpoint is not None else client._endpoints[0]
        self.MAX_LENGTH = _wire.DEFAULT_MAX_MESSAGE_SIZE
        self.hello: dict[str, Any] | None = None
        self.goaway = False
        self._inflight: dict[int, _Call] = {}
        self._nextMsgid = 0
        self._disconnected = False
        self.unauthorized = False

    def connectionMade(self) -> None:
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            with suppress(OSError):
                setNoDelay(True)
        token = self.client._token
        if token is not None:
            # First, before any request: the server reads frames in order,
            # and answers a right token with nothing.
            auth = _wire.pack([_wire.CONTROL, "auth", token])
            writeFrame(self.transport, auth)
        self.client._connectionMade(self)

    @property
    def inflight(self) -> int:
        """
        How many calls were sent on this connection and not yet answered.
        """
        return len(self._inflight)

    # -- sending ------------------------------------------------------------

    def sendCall(self, call: _Call) -> None:
        """
        Send C{call}; a call that cannot be encoded, or is larger than the
        server accepts, fails at once and the connection is untouched.
        """
        deferred = call.deferred
        if deferred is None:
            self._sendNotification(call)
            return
        msgid = self._nextMsgid
        try:
            payload = _wire.encodeRequest(msgid, call.method, call.args, call.kwargs)
        except Exception as e:
            deferred.errback(
                TypeError(f"cannot encode the arguments of {call.method}(): {e}")
            )
            return
        if len(payload) > self.MAX_LENGTH:
            deferred.errback(self._tooLarge(call, len(payload)))
            return
        self._nextMsgid = (msgid + 1) & _wire.MAX_MSGID
        call.msgid = msgid
        call.connection = self
        self._inflight[msgid] = call
        writeFrame(self.transport, payload)

    def _sendNotification(self, call: _Call) -> None:
        try:
            payload = _wire.encodeNotification(call.method, call.args, call.kwargs)
        except Exception:
            _log.failure("cannot encode the notification {method}", method=call.method)
            return
        if len(payload) > self.MAX_LENGTH:
            _log.error("{error}", error=self._tooLarge(call, len(payload)))
            return
        writeFrame(self.transport, payload)

    def _tooLarge(self, call: _Call, size: int) -> MessageTooLarge:
        return MessageTooLarge(
            f"{call.method}(): the request is {size} bytes, more than the server's "
            f"maximum message size of {self.MAX_LENGTH} bytes"
        )

    def cancelCall(self, call: _Call) -> None:
        """
        Forget an in-flight call (its late answer will be dropped) and ask
        the server to cancel it.
        """
        del self._inflight[call.msgid]
        call.connection = None
        if not self._disconnected:
            cancel = _wire.encodeCancel(call.msgid)
            writeFrame(self.transport, cancel)
        self._closeIfDone()

    # -- receiving ----------------------------------------------------------

    def stringReceived(self, payload: bytes) -> None:
        try:
            message = _wire.parseServerMessage(payload)
        except InvalidResponse as e:
            self._protocolError(str(e))
            return
        if type(message) is _wire.Response:
            self._response(message)
        else:
            assert type(message) is _wire.Control
            if message.kind == "hello":
                self._hello(message.body)
            elif message.kind == "goaway":
                self._goaway(message.body)
            # Other control kinds are ignored, as the protocol asks.

    def lengthLimitExceeded(self, length: int) -> None:
        self._protocolError(
            f"the server sent a frame of {length} bytes, more than the maximum "
            f"message size of {self.MAX_LENGTH} bytes"
        )

    def _protocolError(self, why: str) -> None:
        _log.error(
            "{peer}: protocol error, closing the connection: {why}",
            peer=self.transport.getPeer(),
            why=why,
        )
        self.discardInput()
        self.transport.abortConnection()

    def _hello(self, body: list[Any]) -> None:
        info = body[0] if body else None
        if self.hello is not None or not isinstance(info, dict):
            self._protocolError(f"unexpected hello {body!r}")
            return
        if info.get("protocol") != _wire.PROTOCOL_VERSION:
            self._protocolError(
                f"unsupported protocol version {info.get('protocol')!r}"
            )
            return
        maxSize = info.get("max_message_size")
        if type(maxSize) is int and maxSize > 0:
            self.MAX_LENGTH = maxSize
        self.hello = info
        self.client._connectionReady(self)

    def _response(self, response: _wire.Response) -> None:
        if self.hello is None:
            self._protocolError("a response before the hello")
            return
        msgid = response.msgid
        if (
            isinstance(response.error, dict)
            and response.error.get("type") == _UNAUTHORIZED
            and (msgid is None or msgid in self._inflight)
        ):
            self._refused(RemoteError.fromWire(response.error))
            return
        if msgid is None:
            # An error the server could not attribute to a call (e.g. a frame
            # it refused): nothing to answer, but worth knowing.
            _log.warn(
                "{peer}: the server reported an error: {error}",
                peer=self.transport.getPeer(),
                error=RemoteError.fromWire(response.error),
            )
            return
        call = self._inflight.pop(msgid, None)
        if call is None:
            # The answer to a call that was cancelled or timed out.
            return
        call.connection = None
        deferred = call.deferred
        assert deferred is not None
        # Break the call <-> Deferred cycle (the canceller is the call's) so
        # reference counting frees both at once, without the cyclic GC.
        call.deferred = None
        if response.error is None:
            self.client.stats.answered += 1
            deferred.callback(response.result)
        else:
            self.client.stats.remoteErrors += 1
            deferred.errback(RemoteError.fromWire(response.error))
        self._closeIfDone()

    def _refused(self, error: RemoteError) -> None:
        """
        The server refused this connection's token (or its lack of one):
        fail everything in flight here, and everything queued, with C{error}.
        """
        if self.unauthorized:
            return
        self.unauthorized = True
        self.goaway = True
        _log.error(
            "{peer}: the server refused the connection: {error}",
            peer=self.transport.getPeer(),
            error=error,
        )
        inflight = list(self._inflight.values())
        self._inflight.clear()
        for call in inflight:
            call.connection = None
        self.client._connectionRefused(self, inflight, error)
        self._closeIfDone()

    def _goaway(self, body: list[Any]) -> None:
        if len(body) > 1 and body[1] == _UNAUTHORIZED:
            self._refused(
                Unauthorized(
                    "the server refused the connection: wrong or missing token"
                )
            )
            return
        if self.goaway:
            return
        last = body[0] if body else None
        if last is not None and not _wire.isMsgid(last):
            # Without a valid last msgid nothing can be proved unrun: resending
            # could run calls twice, so treat it as a lost connection.
            self._protocolError(f"goaway with an invalid last msgid {last!r}")
            return
        self.goaway = True
        unrun = [
            call
            for msgid, call in self._inflight.items()
            if last is None or _after(msgid, last)
        ]
        for call in unrun:
            del self._inflight[call.msgid]
            call.connection = None
        self.client.stats.resent += len(unrun)
        reason = body[1] if len(body) > 1 else None
        _log.debug(
            "{peer}: goaway ({reason}), last msgid {last}; {count} calls to resend",
            peer=self.transport.getPeer(),
            reason=reason,
            last=last,
            count=len(unrun),
        )
        self.client._connectionGoingAway(self, unrun)
        self._closeIfDone()

    def _closeIfDone(self) -> None:
        if not self._inflight and (self.goaway or self.client._closed):
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self._disconnected = True
        inflight = list(self._inflight.values())
        self._inflight.clear()
        self.client.stats.lost += len(inflight)
        self.client._connectionLost(self)
        for call in inflight:
            call.connection = None
            assert call.deferred is not None
            call.deferred.errback(
                ConnectionLost(
                    f"the connection was lost while {call.method}() was in flight "
                    f"({reason.getErrorMessage()}): it may or may not have run on the "
                    "server, so it was not resent"
                )
            )


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
    The L{ReconnectingClientFactory} of an L{RpcClient}: it supplies the
    backoff (C{initialDelay}, C{factor}, C{maxDelay}, C{jitter}, C{clock});
    the client decides when to connect and reconnect.
    """

    protocol = RpcClientProtocol
    initialDelay = 0.1
    maxDelay = 10.0  # type: ignore[assignment]
    noisy = False

    def __init__(
        self, client: RpcClient, clock: Any, endpoint: _Endpoint | None = None
    ) -> None:
        self.client = client
        self.clock = clock
        self.endpoint = endpoint

    def buildProtocol(self, addr: IAddress | None) -> RpcClientProtocol:
        return RpcClientProtocol(self.client, self.endpoint)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        endpoint = self.endpoint
        self.client._attemptFailed(
            reason, endpoint if endpoint is not None else self.client._endpoints[0]
        )

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        # RpcClientProtocol.connectionLost has already told the client.
        pass


class _Endpoint:
    """
    One server of an L{RpcClient}: its address, its backoff (the factory),
    and the state of its connection.

    @ivar ready: the connection that takes new calls, if any.
    @ivar connecting: an attempt (or a backoff delay before one) is under way.
    @ivar failed: the last attempt failed or the last connection was lost:
        with several endpoints, the next attempt waits for the backoff delay
        (with one, a new call dials at once, as it always did).
    @ivar tls: the TLS connection creator to connect with, or L{None}.
    """

    __slots__ = (
        "connecting",
        "connector",
        "factory",
        "failed",
        "host",
        "port",
        "ready",
        "tls",
    )

    def __init__(
        self, client: RpcClient, host: str, port: int, tls: Any, clock: Any
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.factory = RpcClientFactory(client, clock, self)
        self.ready: RpcClientProtocol | None = None
        self.connecting = False
        self.connector: IConnector | None = None
        self.failed = False


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
        C{(host, port)} pairs: the client keeps a connection to each and
        spreads calls round-robin over those that are ready (see the module
        docstring for what happens when one goes away).  A C{(host, port,
        tls)} triple connects to that server with its own TLS connection
        creator (C{optionsForClientTLS} checks one host name) instead of
        C{tls}.
    @param timeout: the default deadline of each call in seconds, counting the
        time it waits for a connection; L{None} for none.  Calls past it fail
        with L{twisted.internet.defer.TimeoutError}.
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
        endpoints: Iterable[tuple[str, int] | tuple[str, int, Any]] | None = None,
    ) -> None:
        if endpoints is None:
            if host is None or port is None:
                raise TypeError("RpcClient needs a host and a port, or endpoints")
            addresses: list[tuple[str, int, Any]] = [(host, port, tls)]
        else:
            if host is not None or port is not None:
                raise TypeError(
                    "RpcClient takes a host and a port, or endpoints, not both"
                )
            addresses = [(e[0], e[1], e[2] if len(e) > 2 else tls) for e in endpoints]
            if not addresses:
                raise ValueError("RpcClient needs at least one endpoint")
        self._endpoints = [_Endpoint(self, h, p, t, reactor) for h, p, t in addresses]
        self._many = len(self._endpoints) > 1
        # With several endpoints: the ready connections, and where the next
        # call goes among them.
        self._readyList: list[RpcClientProtocol] = []
        self._next = 0
        first = self._endpoints[0]
        self.host = first.host
        self.port = first.port
        self.timeout = timeout
        self.maxPending = maxPending
        self.connectTimeout = connectTimeout
        self._reactor = reactor
        if isinstance(token, str):
            token = token.encode("utf-8")
        self._token = token
        # The first endpoint's factory (the only one with one endpoint): its
        # backoff settings are the ones tests tune.
        self.factory = first.factory
        self._queue: OrderedDict[_Call, None] = OrderedDict()
        # A ready connection (with several endpoints, one of them), or None.
        self._ready: RpcClientProtocol | None = None
        self._connections: set[RpcClientProtocol] = set()
        self._closed = False
        self.stats = ClientStats()
        self._closing: Deferred[None] | None = None
        self._closeDeadline: IDelayedCall | None = None

    # -- the caller's side --------------------------------------------------

    def callRemote(self, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Call C{method} on the server.

        @return: a L{Deferred} that fires with the result, or fails with a
            L{RemoteError} (e.g. L{MethodNotFound}), L{ConnectionLost} (it may
            have run), L{ClientClosed}, L{QueueFull}, L{MessageTooLarge} or a
            timeout.  Cancelling it removes a queued call, or abandons an
            in-flight one and asks the server to cancel it.
        """
        if self._closed:
            return fail(ClientClosed(f"{method}(): the client is closed"))
        pending = self.pending
        if pending >= self.maxPending:
            return fail(
                QueueFull(
                    f"{method}(): {pending} calls are already pending "
                    f"(maxPending={self.maxPending})"
                )
            )
        call = _Call(method, list(args), kwargs, None)
        d: Deferred[Any] = Deferred(call.cancel)
        call.deferred = d
        call.client = self
        if self.timeout is not None:
            d.addTimeout(self.timeout, self._reactor)
        self._submit(call)
        return d

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """
        Send a notification: C{method} runs on the server and nothing is
        answered, so nothing reports whether it ran.  It is queued like a call
        while no connection is ready.

        @raise ClientClosed: if the client is closed.
        @raise QueueFull: if the queue is full.
        """
        if self._closed:
            raise ClientClosed(f"{method}(): the client is closed")
        if len(self._queue) >= self.maxPending:
            raise QueueFull(f"{method}(): {len(self._queue)} calls are queued")
        self._submit(_Call(method, list(args), kwargs, None))

    @property
    def pending(self) -> int:
        """
        How many calls are unanswered: queued, or in flight on a connection.
        """
        count = len(self._queue)
        for protocol in self._connections:
            count += len(protocol._inflight)
        return count

    def _submit(self, call: _Call) -> None:
        ready = self._ready
        if ready is not None and not self._queue:
            if self._many:
                ready = self._pick()
            ready.sendCall(call)
        else:
            # Not connected, or connected and still sending the queue (a
            # call made from a callback while it drains): keep the order.
            self._queue[call] = None
            self._connect()

    def _pick(self) -> RpcClientProtocol:
        """
        With several endpoints, the ready connection the next call goes to:
        the next one round-robin.  Endpoints without a connection are dialled
        (lazily, as with one endpoint, and after their backoff delay if their
        last connection failed).
        """
        ready = self._readyList
        if len(ready) < len(self._endpoints):
            self._connect()
        index = self._next
        if index >= len(ready):
            index = 0
        self._next = index + 1
        return ready[index]

    def _cancel(self, call: _Call) -> None:
        self.stats.cancelled += 1
        if call in self._queue:
            del self._queue[call]
        elif call.connection is not None:
            call.connection.cancelCall(call)

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
        return self._ready is not None

    @property
    def endpoints(self) -> Sequence[tuple[str, int]]:
        """
        The servers, as C{(host, port)} pairs.
        """
        return [(e.host, e.port) for e in self._endpoints]

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

    # -- connecting ---------------------------------------------------------

    def _connect(self) -> None:
        """
        Dial every endpoint that has no connection and no attempt under way;
        one whose last connection failed waits for its backoff delay first
        (with several endpoints: with one, a call dials at once).
        """
        if self._closed:
            return
        for endpoint in self._endpoints:
            if endpoint.ready is None and not endpoint.connecting:
                self._connectEndpoint(endpoint, endpoint.failed and self._many)

    def _connectEndpoint(self, endpoint: _Endpoint, backoff: bool) -> None:
        endpoint.connecting = True
        if backoff:
            endpoint.factory.retry(_Redial(self, endpoint))  # type: ignore[no-untyped-call]
        else:
            self._dial(endpoint)

    def _redial(self, endpoint: _Endpoint) -> None:
        if self._closed or endpoint.ready is not None:
            endpoint.connecting = False
            return
        self._dial(endpoint)

    def _dial(self, endpoint: _Endpoint) -> None:
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
        endpoint.connecting = False
        endpoint.failed = True
        if self._queue and not self._closed:
            _log.info(
                "cannot connect to {host}:{port} ({why}); {count} calls queued, retrying",
                host=endpoint.host,
                port=endpoint.port,
                why=reason.getErrorMessage(),
                count=len(self._queue),
            )
            self._connectEndpoint(endpoint, True)

    # -- what connections tell the client -----------------------------------

    def _connectionMade(self, protocol: RpcClientProtocol) -> None:
        self._connections.add(protocol)

    def _connectionReady(self, protocol: RpcClientProtocol) -> None:
        endpoint = protocol.endpoint
        endpoint.connecting = False
        endpoint.failed = False
        endpoint.factory.resetDelay()  # type: ignore[no-untyped-call]
        if self._closed:
            protocol.transport.loseConnection()
            return
        self.stats.connects += 1
        endpoint.ready = protocol
        if self._many:
            self._readyList.append(protocol)
            self._ready = self._readyList[0]
            self._drain()
            return
        self._ready = protocol
        queue = self._queue
        while queue and self._ready is protocol:
            call, _ = queue.popitem(last=False)
            protocol.sendCall(call)

    def _drain(self) -> None:
        """
        With several endpoints: send the queue, in order, round-robin over
        the ready connections.
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
        if self._many:
            if protocol in self._readyList:
                self._readyList.remove(protocol)
                self._ready = self._readyList[0] if self._readyList else None
        elif self._ready is protocol:
            self._ready = None

    def _connectionGoingAway(
        self, protocol: RpcClientProtocol, unrun: list[_Call]
    ) -> None:
        self._unready(protocol)
        if protocol.hello is None:
            return  # refused before it was ready: connectionLost retries
        queue = self._queue
        for call in reversed(unrun):
            queue[call] = None
            queue.move_to_end(call, last=False)
        if queue and self._many:
            self._drain()
        if queue:
            self._connect()

    def _connectionRefused(
        self, protocol: RpcClientProtocol, inflight: list[_Call], error: RemoteError
    ) -> None:
        """
        The server refused C{protocol} (see L{RpcClientProtocol._refused}):
        fail C{inflight} and every queued call with C{error}.  Nothing
        reconnects until the next call.
        """
        self._unready(protocol)
        queued = list(self._queue)
        self._queue.clear()
        for call in inflight + queued:
            if call.deferred is not None:
                call.deferred.errback(
                    Unauthorized(f"{call.method}(): {error.message}", error.data)
                )

    def _connectionLost(self, protocol: RpcClientProtocol) -> None:
        self._connections.discard(protocol)
        self._unready(protocol)
        endpoint = protocol.endpoint
        if protocol.hello is None:
            # It never became ready: a failed attempt.
            self._attemptFailed(
                Failure(ConnectionDone("closed before the hello")), endpoint
            )
            return
        if not protocol.goaway:
            endpoint.failed = True
        if (
            self._queue
            and not self._closed
            and endpoint.ready is None
            and not endpoint.connecting
        ):
            self._connectEndpoint(endpoint, not protocol.goaway)
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
        for endpoint in self._endpoints:
            endpoint.factory.stopTrying()  # type: ignore[no-untyped-call]
            if endpoint.connecting and endpoint.connector is not None:
                with suppress(Exception):
                    endpoint.connector.stopConnecting()
        queued = list(self._queue)
        self._queue.clear()
        for call in queued:
            if call.deferred is not None:
                call.deferred.errback(
                    ClientClosed(
                        f"{call.method}(): the client was closed before it was sent"
                    )
                )
        if not self._connections:
            self._finishClose()
            return self._closing
        for protocol in list(self._connections):
            protocol._closeIfDone()
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
        return f"<RpcClient {where}>"
