"""
C{TcpRpcClient}: a blocking client on plain sockets, with the call API of
agileutil's TCP RPC client::

    from agilerpc import TcpRpcClient
    cli = TcpRpcClient('127.0.0.1', 9988, timeout=2)
    resp = cli.call(func='sayHello', args=('zhangsan',))

With several servers (agileutil's C{servers=[...]}) it fails over::

    cli = TcpRpcClient(servers=["10.0.0.1:9988", "10.0.0.2:9988"], timeout=2)

It needs no reactor, so it works in scripts, threads and web applications
that do not run Twisted.  It keeps the promise of the Twisted client: the
server's idle close is invisible, and no call is ever run twice, unless
its caller declared it idempotent (see L{TcpRpcClient}).

TLS (C{ssl_context}) wraps the socket with the standard library's L{ssl}.
The socket stays non-blocking, which changes three things: decrypted bytes
can wait inside the TLS object where C{poll()} cannot see them (so
C{pending()} is checked first), and a read or write that needs the other
direction first raises L{ssl.SSLWantReadError} or L{ssl.SSLWantWriteError}
(L{OSError}s, not L{BlockingIOError}s), after which it is retried once the
socket is ready that way.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from math import ceil as _ceil
from typing import TYPE_CHECKING, Any

from zope.interface import implementer

from ._address import parseAddress
from ._calloptions import CallOptions
from ._clientconnection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_STREAM_BUFFER,
    ClientConnection,
    IClientEvents,
    State,
)
from ._discovery import checkNameArguments
from ._errors import (
    CallLost,
    CallTimeout,
    ClientClosed,
    InvalidResponse,
    NotServed,
    RpcError,
    Unauthorized,
)
from ._retry import (
    RetryPolicy,
    checkMethods,
    describedIdempotence,
    refusal,
    retryable,
)
from ._wire import HEADER

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from ._dnsquery import ResolvedServers
    from ._otel import ClientTracing

# How many goaways, at most, one call follows that prove it was not run
# before giving up: only a server that closes every new connection before
# dispatching anything gets there.
_MAX_RESENDS = 16

# Backoff between connection attempts while a connect is retried.
_FIRST_RETRY_DELAY = 0.02
_MAX_RETRY_DELAY = 0.25

_RECV_SIZE = 65536
_LARGE_RECV_SIZE = 1024 * 1024

# Failures to connect that say the server is not (or not yet) there, or did
# not serve the connection (a goaway before its hello).
_RETRIED_CONNECT_ERRORS = (
    ConnectionRefusedError,
    ConnectionResetError,
    ConnectionAbortedError,
)

_packHeader = HEADER.pack
_HAS_POLL = hasattr(select, "poll")

# What a non-blocking read or write raises when it cannot go on yet: plain
# sockets raise BlockingIOError, TLS sockets one of the SSLWant errors (a
# TLS read may need a write first, and a write a read).
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _DeadlinePassed(TimeoutError):
    """
    The call's deadline passed (as opposed to a C{TimeoutError} the system
    raises for a dead connection).
    """


class _NotRun(Exception):
    """
    The connection ended in a way that proves the request was not run (a
    goaway naming an earlier msgid, or a send that failed): send it again on
    a new connection.
    """


# The one call a connection has in flight at a time, as the core knows it.
_CALL = "call"

# The options of a call that sets none (most calls).
_NO_OPTIONS = CallOptions()


@implementer(IClientEvents)
class _Connection:
    """
    One connection: its non-blocking socket, its L{ClientConnection} core,
    and what the core reported about the call in flight.

    @ivar outcome: L{None} while the call is in flight; then C{(True,
        result)}, or C{(False, exception)} (L{_NotRun} for a call a goaway
        proved unrun).
    """

    __slots__ = (
        "core",
        "items",
        "notServed",
        "outcome",
        "pending",
        "poller",
        "refusal",
        "sock",
        "violation",
    )

    def __init__(
        self,
        sock: socket.socket,
        token: bytes | None,
        limit: int,
        streamBuffer: int = DEFAULT_STREAM_BUFFER,
    ) -> None:
        sock.settimeout(0.0)
        self.sock = sock
        self.core = ClientConnection(self, token, limit, streamBuffer)
        self.outcome: tuple[bool, Any] | None = None
        self.items: deque[Any] = deque()
        self.notServed: str | None = None
        self.refusal: Unauthorized | None = None
        self.violation: str | None = None
        # Bytes already decrypted by TLS are invisible to poll(): a TLS
        # socket's pending() counts them.
        self.pending: Callable[[], int] | None = getattr(sock, "pending", None)
        self.poller: Any = None

    # -- what the core reports (IClientEvents) ------------------------------

    def connectionReady(self, info: dict[str, Any]) -> None:
        pass

    def callAnswered(self, call: Any, result: Any) -> None:
        self.outcome = (True, result)

    def callFailed(self, call: Any, error: RpcError) -> None:
        self.outcome = (False, error)

    def itemReceived(self, call: Any, item: Any) -> None:
        self.items.append(item)

    def goawayReceived(self, reason: str | None, unrun: list[Any]) -> None:
        if unrun:
            self.outcome = (False, _NotRun())

    def connectionRefused(self, calls: list[Any], error: Unauthorized) -> None:
        self.refusal = error
        if calls:
            self.outcome = (
                False,
                Unauthorized(f"{error.message}; the call was not run", error.data),
            )

    def connectionNotServed(self, reason: str | None) -> None:
        self.notServed = reason or "no reason"

    def protocolViolation(self, why: str, lost: list[Any]) -> None:
        self.violation = why
        if lost:
            self.outcome = (
                False,
                CallLost(
                    f"the server broke the protocol ({why}) while the call was in "
                    "flight; it may or may not have run"
                ),
            )

    def serverError(self, error: RpcError) -> None:
        pass

    # -- the socket ---------------------------------------------------------

    def readable(self, timeout: float | None) -> bool:
        """
        Wait up to C{timeout} seconds (L{None}: for ever) until there is
        something to read, or the connection ended.
        """
        pending = self.pending
        if pending is not None and pending():
            return True
        if _HAS_POLL:
            poller = self.poller
            if poller is None:
                poller = self.poller = select.poll()
                poller.register(self.sock, select.POLLIN)
            return bool(
                poller.poll(-1 if timeout is None else math.ceil(timeout * 1000))
            )
        readable, _, _ = select.select([self.sock], [], [], timeout)  # pragma: no cover
        return bool(readable)  # pragma: no cover

    def writable(self, timeout: float | None) -> bool:
        """
        Wait up to C{timeout} seconds until the socket can take more data.
        """
        _, writable, _ = select.select([], [self.sock], [], timeout)
        return bool(writable)

    def wait(self, blocked: BaseException, timeout: float | None) -> None:
        """
        Wait up to C{timeout} seconds until the socket is ready for the
        operation that raised C{blocked} to go on: a TLS read that must write
        first waits to write, a TLS write that must read first waits to read.
        """
        if isinstance(blocked, ssl.SSLWantWriteError):
            self.writable(timeout)
        elif isinstance(blocked, ssl.SSLWantReadError):
            self.readable(timeout)

    def receive(self, deadline: float | None) -> bool:
        """
        Wait for bytes (until C{deadline}) and give them to the core.

        @return: L{False} if the server closed the connection.
        @raise TimeoutError: (L{_DeadlinePassed}) if the deadline passes
            first; what was read so far stays with the core.
        @raise OSError: if the connection fails.
        """
        sock = self.sock
        while True:
            remaining = _remaining(deadline)
            poller = self.poller
            if poller is not None and self.pending is None:
                # readable(), inline, for a plain socket whose poller is made.
                if not poller.poll(
                    -1 if remaining is None else _ceil(remaining * 1000)
                ):
                    continue
            elif not self.readable(remaining):
                continue
            wanted = self.core.awaiting
            size = _RECV_SIZE if wanted <= _RECV_SIZE else min(wanted, _LARGE_RECV_SIZE)
            try:
                chunk = sock.recv(size)
            except _WOULD_BLOCK as e:
                self.wait(e, _remaining(deadline))
                continue
            if not chunk:
                return False
            self.core.dataReceived(chunk)
            return True


class TcpRpcClient:
    """
    A blocking agilerpc client.

    L{call} connects on first use and reconnects by itself after the server
    closed an idle connection.  A call is sent again, on a new connection,
    only when the server proved that it did not run it: a goaway naming an
    earlier msgid, or a connection that failed before the whole request was
    sent.  Every other failure is raised, so no call ever runs twice.

    Thread safety: calls are serialized by a lock, so one call is in flight
    per client object and several threads may share one client.  For calls
    in parallel, use one client per thread.

    With C{servers}, the client still has one connection at a time (calls are
    serialized), and spreads connections, not calls: each new connection
    goes to the next server in turn, and a server that refuses it (or cannot
    be reached) is skipped for the next one, so calls fail over to the
    servers that are up.  A new connection is opened when the server closes
    the current one (idle, or a goaway when it stops), so connections rotate
    over the servers as they come and go.  The resend rules are the same: a
    call goes to another server only when its server proved it did not run
    it.  With C{connectRetry}, the whole list is retried after each round in
    which no server could be reached.

    After a call timed out its connection is kept: a cancel is sent for the
    call, and its late response, if one comes, is recognized by its msgid
    and dropped, so it is never returned as the answer to a later call.  The
    timed-out call is never sent again (it may or may not have run).

    A call declared idempotent (C{call(..., idempotent=True)}, or a method
    in the C{idempotent} set) that is lost in flight is sent again on a new
    connection instead of raising L{CallLost}, as C{retryPolicy} says:
    after a backoff (C{time.sleep}, holding the client's lock), a few times
    at most, never past its deadline: the same rules as L{RpcClient}'s
    (L{agilerpc._retry}).

    @param host: the server's host name or address (or give C{servers}).
    @param port: its TCP port.
    @param servers: instead of C{host} and C{port}, several servers, each a
        C{"host:port"} string (as agileutil takes them) or a C{(host, port)}
        pair.  C{host} and C{port} then name the server of the current (or
        last) connection.
    @param service: instead, a DNS name whose SRV records list the servers
        (C{_agilerpc._tcp.billing.service.consul}), resolved when the client
        connects and again when a new connection is opened after the
        records' TTL (at least C{resolveInterval}, at most 300 s) or after a
        round in which no server could be reached.  The targets of the
        lowest priority with addresses are the servers, in RFC 2782 order
        (weighted random).  A resolution that
        fails keeps the last servers; with none ever found the call raises
        L{socket.gaierror}.
    @param hostname: instead, a name whose A and AAAA records are the
        servers (a Kubernetes headless service), each on C{port}; with TLS
        the certificate must match it unless C{server_hostname} says
        otherwise.
    @param nameservers: with C{service} or C{hostname}, the DNS servers to
        ask, C{(address, port)} pairs, in turn.  By default a service is
        asked of the name servers of C{/etc/resolv.conf}, and a host name
        is resolved by the system (C{getaddrinfo}).
    @param resolveInterval: the shortest time between two resolutions that
        succeeded, in seconds.
    @param timeout: seconds a call may take from start to finish (connect,
        send and wait together), or L{None} for no limit.
    @param connectRetry: seconds to keep retrying a connect that is refused
        or reset (the server is restarting, say), within the call's timeout.
        L{None} (the default) retries for as long as the timeout allows, and
        not at all without a timeout; 0 never retries.
    @param ssl_context: connect with TLS using this L{ssl.SSLContext}, e.g.
        C{ssl.create_default_context(cafile="ca.pem")} (which verifies the
        server's certificate and host name; add
        C{load_cert_chain("client.pem", "client.key")} for mutual TLS).
        L{None}: plain TCP.
    @param server_hostname: the name the server's certificate must match
        (and the SNI sent); defaults to C{host}.
    @param token: the server's auth token (C{twistd agilerpc
        --auth-token-file}), sent as the first frame of every connection.  A
        server that refuses it (or wants one and got none) makes calls raise
        L{Unauthorized}; they are never sent again.  Without TLS the token
        crosses the network in the clear.
    @param maxMessageSize: the largest frame the client accepts from a
        server, in bytes (the server's hello never raises it); a larger frame
        header is a protocol violation.
    @param streamBuffer: the bytes of a stream's items the server may send
        ahead of the caller, once their size is known (L{callStream}).
    @param socketFactory: opens the connection to C{(host, port)} within a
        timeout (seconds, or L{None}) and returns the socket; by default a TCP
        connection with C{TCP_NODELAY} on.  Anything with the socket methods
        the client uses will do: tests pass in-memory sockets.
    @param idempotent: names of methods that are safe to run twice, retried
        after a loss in flight; C{call(idempotent=...)} overrides it.  Empty
        by default: nothing is retried unless a caller says so.
    @param retryPolicy: how often and how soon they are sent again
        (L{RetryPolicy}: by default 3 attempts in all, 0.05 s then 0.1 s
        apart, with jitter).

    @param tracing: start an OpenTelemetry CLIENT span for each call and
        stream (the child of the current span), and send its trace context
        with it as metadata, to a server that takes metadata (needs
        C{agilerpc[otel]}).  A stream's span runs from its first item asked
        for to its end, or to its generator's close (C{CancelledError}).
    @param tracerProvider: with C{tracing}, where the spans go; L{None}:
        OpenTelemetry's global provider.
    @raise ImportError: with C{tracing}, if opentelemetry-api is not
        installed.

    @ivar idempotent: the C{idempotent} method names, a frozenset.
    @ivar retryPolicy: the L{RetryPolicy}.
    @ivar retries: how many times calls were sent again after a loss in
        flight, since the client was made (a call sent three times counts
        two).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        timeout: float | None = None,
        *,
        connectRetry: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        token: str | bytes | None = None,
        servers: Iterable[str | tuple[str, int]] | None = None,
        service: str | None = None,
        hostname: str | None = None,
        nameservers: Iterable[str | tuple[str, int]] | None = None,
        resolveInterval: float = 30.0,
        maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
        socketFactory: Callable[[tuple[str, int], float | None], socket.socket]
        | None = None,
        streamBuffer: int = DEFAULT_STREAM_BUFFER,
        idempotent: Iterable[str] = (),
        retryPolicy: RetryPolicy | None = None,
        tracing: bool = False,
        tracerProvider: TracerProvider | None = None,
    ) -> None:
        self._resolved: ResolvedServers | None = None
        if service is not None or hostname is not None:
            checkNameArguments(
                "TcpRpcClient",
                service,
                hostname,
                port,
                "servers"
                if servers is not None
                else "a host"
                if host is not None
                else None,
            )
            if hostname is not None:
                server_hostname = server_hostname or hostname
            from ._dnsquery import ResolvedServers

            self._resolved = ResolvedServers(
                service=service,
                hostname=hostname,
                port=port,
                nameservers=None
                if nameservers is None
                else [parseAddress(n) for n in nameservers],
                interval=resolveInterval,
            )
            addresses: list[tuple[str, int]] = []
        elif servers is None:
            if host is None or port is None:
                raise TypeError("TcpRpcClient needs a host and a port, or servers")
            addresses = [parseAddress((host, port))]
        else:
            if host is not None or port is not None:
                raise TypeError(
                    "TcpRpcClient takes a host and a port, or servers, not both"
                )
            addresses = [parseAddress(server) for server in servers]
            if not addresses:
                raise ValueError("TcpRpcClient needs at least one server")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 or None, not {timeout!r}")
        if connectRetry is not None and not connectRetry >= 0:
            raise ValueError(f"connectRetry must be >= 0 or None, not {connectRetry!r}")
        self.servers: list[tuple[str, int]] = addresses
        self._nextServer = 0
        # After a round in which no server could be reached: resolve again
        # (if the name was not resolved a short while ago).
        self._unreached = False
        if self._resolved is not None:
            self.host, self.port = self._resolved.name, port or 0
        else:
            self.host, self.port = addresses[0]
        self.timeout = timeout
        self.connectRetry = connectRetry
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        if isinstance(token, str):
            token = token.encode("utf-8")
        self._token = token
        self.maxMessageSize = maxMessageSize
        self.streamBuffer = streamBuffer
        self._socketFactory = socketFactory or _openTCP
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._closed = False
        self.idempotent = checkMethods(idempotent)
        if retryPolicy is not None and not isinstance(retryPolicy, RetryPolicy):
            raise TypeError(f"retryPolicy must be a RetryPolicy, not {retryPolicy!r}")
        # Each client its own: tests tune it, as they tune the factory.
        self.retryPolicy = RetryPolicy() if retryPolicy is None else retryPolicy
        self.retries = 0
        # What system.describe said of each method's idempotence (describe()).
        self._described: dict[str, bool] = {}
        # Waits for a retry's backoff (tests record the delays instead).
        self._sleep: Callable[[float], None] = time.sleep
        self._tracing: ClientTracing | None = None
        if tracing:
            from ._otel import ClientTracing

            self._tracing = ClientTracing(tracerProvider, addresses)

    def __repr__(self) -> str:
        where = ", ".join(f"{host}:{port}" for host, port in self.servers)
        if self._resolved is not None:
            return f"<TcpRpcClient {self._resolved.name} ({where or 'unresolved'})>"
        return f"<TcpRpcClient {where}>"

    # -- the public API -----------------------------------------------------

    def call(
        self,
        func: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str | bytes] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """
        Call C{func(*args, **kwargs)} on the server and return its result.

        @param args: a tuple or a list.
        @param timeout: seconds this call may take, instead of the client's
            C{timeout}.  The server is told the time left when the request
            goes out, and cancels the call when it runs out.
        @param metadata: str keys to str or bytes values sent with the
            request (see L{agilerpc.currentCall}).
        @param idempotent: the call may run twice: if its connection is lost
            while it is in flight, it is sent again on a new connection, as
            the client's C{retryPolicy} says.  L{None}: whether C{func} is in
            the client's C{idempotent} set.
        @raise NotIdempotent: if the call asks to be retried (C{idempotent})
            and the server's description (L{describe}) says C{func} is not
            idempotent.  Nothing was sent.
        @raise FeatureNotSupported: with C{metadata}, if the server does not
            take metadata.  Nothing was sent.
        @raise MetadataTooLarge: if C{metadata} is larger than the server
            takes.  Nothing was sent.
        @raise RemoteError: (or a subclass such as L{MethodNotFound}) if the
            call failed on the server.
        @raise RequestTooLarge: (a L{MessageTooLarge}) without sending
            anything, if the request is larger than the server's maximum
            message size.
        @raise CallTimeout: (a L{TimeoutError}) if the call took longer than
            the timeout.  It may or may not have run.
        @raise CallLost: if the connection closed (or the server broke the
            protocol) while the call was in flight, without the server saying
            whether it ran (for an idempotent call: each time it was sent).
        @raise InvalidResponse: if the server's response to the call cannot
            be decoded (it may have run), or the server broke the protocol
            before its hello (nothing was sent).
        @raise ConnectionRefusedError: (or another L{OSError}; L{NotServed}
            for a server that sent a goaway before its hello) if the client
            cannot connect.  Nothing was sent.
        @raise ClientClosed: if the client is, or gets, closed.
        @raise TypeError: (or L{ValueError} or L{OverflowError}, as msgpack
            raises them) if the arguments cannot be encoded.  Nothing was
            sent.
        """
        kwargs = _checkCall(func, args, kwargs)
        options = (
            _NO_OPTIONS
            if timeout is None and metadata is None and idempotent is None
            else CallOptions(timeout, metadata, idempotent)
        )
        if self._tracing is not None:
            with self._tracing.start(func) as span:
                return self._callWith(func, args, kwargs, options, span.metadata)
        return self._callWith(func, args, kwargs, options)

    def _callWith(
        self,
        func: str,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        options: CallOptions,
        trace: dict[str, str | bytes] | None = None,
    ) -> Any:
        """
        L{call}, its arguments checked; C{trace}: metadata that carries its
        trace context, sent only to a server that takes metadata.
        """
        timeout = self.timeout if options.timeout is None else options.timeout
        retried = options.idempotent
        if retried is None:
            retried = func in self.idempotent
        if retried:
            refused = refusal(func, self._described)
            if refused is not None:
                raise refused
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._closed:
                raise ClientClosed(f"{self!r} is closed")
            try:
                if not retried:
                    return self._attempt(
                        func, args, kwargs, deadline, options.metadata, trace
                    )
                return self._call(
                    func, args, kwargs, deadline, options.metadata, True, trace
                )
            except TimeoutError as e:
                if timeout is None or e.errno is not None or isinstance(e, RpcError):
                    raise
                raise CallTimeout(
                    f"{func}() on {self.host}:{self.port} timed out after "
                    f"{timeout:g} s; it may or may not have run"
                ) from None
            except (OSError, CallLost) as e:
                if self._closed:
                    raise ClientClosed(
                        f"{self!r} was closed during the call to {func}(); "
                        "it may or may not have run"
                    ) from e
                raise

    def describe(self) -> dict[str, Any]:
        """
        Call C{system.describe} (PROTOCOL.md 7.2) and remember which methods
        the server says are idempotent: from then on a call that asks to be
        retried of a method described as not idempotent raises
        L{NotIdempotent}, unsent.  It never makes a call retried that its
        caller did not ask for.

        @return: C{system.describe}'s result.
        """
        description: dict[str, Any] = self.call("system.describe", idempotent=True)
        self._described = describedIdempotence(description)
        return description

    def callStream(
        self,
        func: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        window: int = 16,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str | bytes] | None = None,
    ) -> Generator[Any, None, None]:
        """
        Call C{func}, a streaming method, and iterate over its items::

            for item in cli.callStream(func="ticks", args=(5, 0.1)):
                ...

        The server sends at most C{window} items ahead of those taken at
        first, then as many as hold about the client's C{streamBuffer}
        bytes (from 2 to 4096 items).
        Closing the generator early (C{break} out of a C{for} loop drops it)
        cancels the stream on the server.  The client's other calls wait
        until the stream ends or is closed.  The client's timeout applies to
        each wait for the next item; C{timeout} here is the whole stream's,
        which the server is told, as a call's deadline.  C{metadata} is sent
        with the request, as L{call} sends it.

        @raise StreamsNotSupported: if the server does not announce streams.
        @raise CallLost: if the connection ends in the middle of the stream,
            after the items received; the stream is not restarted.
        @raise CallTimeout: if an item took longer than the timeout (the
            stream is cancelled).
        @raise RemoteError: the stream's error, after the items before it.
        """
        kwargs = _checkCall(func, args, kwargs)
        if not 1 <= window <= 2**32 - 1:
            raise ValueError("window must be from 1 to 2**32 - 1")
        options = CallOptions(timeout, metadata)
        if self._tracing is not None:
            return self._tracedStream(func, args, kwargs, window, options)
        return self._stream(func, args, kwargs, window, options)

    def _tracedStream(
        self,
        func: str,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        window: int,
        options: CallOptions,
    ) -> Generator[Any, None, None]:
        """
        L{_stream}, in a span from its first item asked for to its end.
        """
        assert self._tracing is not None
        with self._tracing.start(func) as span:
            yield from self._stream(func, args, kwargs, window, options, span.metadata)

    def _stream(
        self,
        func: str,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        window: int,
        options: CallOptions,
        trace: dict[str, str | bytes] | None = None,
    ) -> Generator[Any, None, None]:
        end = None if options.timeout is None else time.monotonic() + options.timeout
        with self._lock:
            if self._closed:
                raise ClientClosed(f"{self!r} is closed")
            for _ in range(_MAX_RESENDS):
                connection = self._usableConnection(_earliest(self._deadline(), end))
                connection.outcome = None
                connection.items.clear()
                core = connection.core
                sendOptions = core.options(
                    func,
                    None if end is None else end - time.monotonic(),
                    options.metadata,
                    trace,
                    options.metadataSize,
                )
                msgid, payload = core.sendStream(
                    _CALL, func, args, kwargs, window, sendOptions
                )
                try:
                    self._send(connection, _packHeader(len(payload)) + payload, None)
                except _NotRun:
                    self._disconnect()
                    continue
                try:
                    yield from self._items(connection, func, msgid, end)
                except _NotRun:
                    self._disconnect()
                    continue
                return
            raise NotServed(
                f"{self.host}:{self.port} closed {_MAX_RESENDS} connections in a "
                f"row before running {func}(); it was not run",
            )

    def _streamLost(self, func: str, what: str) -> CallLost:
        """
        Close the connection, lost in the middle of the stream C{func}: the
        error to raise, saying C{what} happened.
        """
        self._disconnect()
        return CallLost(
            f"{what} in the middle of the stream {func}(); it was not restarted"
        )

    def _deadline(self, timeout: float | None = None) -> float | None:
        """
        When a call started now must end: after C{timeout} seconds, or the
        client's C{timeout}.
        """
        if timeout is None:
            timeout = self.timeout
        return None if timeout is None else time.monotonic() + timeout

    def _items(
        self, connection: _Connection, func: str, msgid: int, end: float | None
    ) -> Generator[Any, None, None]:
        """
        The items of the stream C{msgid} as they come, granting the server
        more as they are taken, until C{end} (in L{time.monotonic}) if set;
        then its end.
        """
        items = connection.items
        done = False
        try:
            while True:
                while items:
                    item = items.popleft()
                    credit = connection.core.consumed(msgid)
                    if credit is not None:
                        try:
                            self._send(
                                connection, _packHeader(len(credit)) + credit, None
                            )
                        except _NotRun:
                            done = True
                            raise self._streamLost(
                                func,
                                f"the connection to {self.host}:{self.port} failed",
                            ) from None
                    yield item
                if connection.outcome is not None:
                    break
                try:
                    open = connection.receive(_earliest(self._deadline(), end))
                except _DeadlinePassed:
                    if end is not None and time.monotonic() >= end:
                        raise CallTimeout(
                            f"{func}() on {self.host}:{self.port}: the stream did "
                            "not end within its timeout; it was cancelled"
                        ) from None
                    raise CallTimeout(
                        f"{func}() on {self.host}:{self.port}: no item for "
                        f"{self.timeout:g} s; the stream was cancelled"
                    ) from None
                except OSError as e:
                    done = True
                    raise self._streamLost(
                        func, f"the connection to {self.host}:{self.port} failed ({e})"
                    ) from None
                if not open:
                    done = True
                    raise self._streamLost(
                        func, f"{self.host}:{self.port} closed the connection"
                    )
            done = True
            self._outcome(connection)
        finally:
            if not done and self._connection is connection:
                # Closed early, timed out or failed: stop the stream.
                self._cancel(connection, msgid)
                connection.items.clear()

    def close(self) -> None:
        """
        Close the connection; later calls raise L{ClientClosed}, and so does
        a call in flight in another thread.
        """
        self._closed = True
        connection = self._connection
        if connection is not None:
            # Wake a thread waiting in poll() before taking the lock: closing
            # the descriptor under it would not.
            # (socket.socket's own shutdown: SSLSocket.shutdown would drop
            # the TLS object under the reading thread, which would then read
            # raw TLS records as frames.)
            with contextlib.suppress(OSError):
                sock = connection.sock
                if isinstance(sock, socket.socket):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._disconnect()

    def __enter__(self) -> TcpRpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one call -----------------------------------------------------------

    def _call(
        self,
        func: str,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        deadline: float | None,
        metadata: dict[str, str | bytes] | None = None,
        idempotent: bool = False,
        trace: dict[str, str | bytes] | None = None,
    ) -> Any:
        """
        Make the call, and send it again after a loss in flight if it is
        C{idempotent} and the retry policy allows.
        """
        lost = 0
        while True:
            try:
                return self._attempt(func, args, kwargs, deadline, metadata, trace)
            except RpcError as e:
                if not (idempotent and retryable(e)) or self._closed:
                    raise
                lost += 1
                policy = self.retryPolicy
                delay = policy.retryDelay(lost, time.monotonic(), deadline)
                if delay is None:
                    raise CallLost(f"{e.message}; {policy.giveUp(lost)}") from None
                self._sleep(delay)
                if self._closed:
                    raise
                self.retries += 1

    def _attempt(
        self,
        func: str,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        deadline: float | None,
        metadata: dict[str, str | bytes] | None,
        trace: dict[str, str | bytes] | None = None,
    ) -> Any:
        """
        Send the call, and again on a new connection each time a goaway
        proves it did not run, until it is answered or lost.
        """
        for _ in range(_MAX_RESENDS):
            connection = self._usableConnection(deadline)
            connection.outcome = None
            core = connection.core
            options = (
                None
                if deadline is None and metadata is None and trace is None
                else core.options(
                    func,
                    None if deadline is None else deadline - time.monotonic(),
                    metadata,
                    trace,
                )
            )
            msgid, payload = core.sendRequest(_CALL, func, args, kwargs, options)
            try:
                self._send(connection, _packHeader(len(payload)) + payload, deadline)
                return self._waitFor(connection, msgid, deadline)
            except _NotRun:
                self._disconnect()
        raise NotServed(
            f"{self.host}:{self.port} closed {_MAX_RESENDS} connections in a row "
            f"before running {func}(); it was not run",
        )

    def _send(
        self, connection: _Connection, data: bytes, deadline: float | None
    ) -> None:
        """
        Send all of C{data}.

        @raise _NotRun: if the connection failed first.
        @raise TimeoutError: if the deadline passed first; the connection is
            then closed, as part of a frame may be sent.  (The server never
            dispatches a frame cut off by a close.)
        """
        try:
            if connection.pending is None:
                # The usual case first: a plain socket takes it all at once.
                try:
                    sent = connection.sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            _sendAll(connection, data, deadline)
        except _DeadlinePassed:
            self._disconnect()
            raise
        except OSError:
            raise _NotRun() from None

    def _waitFor(
        self, connection: _Connection, msgid: int, deadline: float | None
    ) -> Any:
        """
        Read until the core reports the outcome of the call C{msgid}, and
        return its result.
        """
        while connection.outcome is None:
            try:
                open = connection.receive(deadline)
            except _DeadlinePassed:
                self._cancel(connection, msgid)
                raise
            except OSError as e:
                self._disconnect()
                raise CallLost(
                    f"the connection to {self.host}:{self.port} failed ({e}) while "
                    "the call was in flight; it may or may not have run"
                ) from None
            if not open:
                self._disconnect()
                raise CallLost(
                    f"{self.host}:{self.port} closed the connection while the call "
                    "was in flight; it may or may not have run"
                )
        return self._outcome(connection)

    def _outcome(self, connection: _Connection) -> Any:
        """
        The result of the call (or stream) the core reported ended, or its
        error raised; the connection is closed if nothing more comes of it.
        """
        outcome, connection.outcome = connection.outcome, None
        assert outcome is not None
        answered, value = outcome
        if connection.core.state is not State.READY and not connection.core.inflight:
            # Going away, refused or broken: nothing more comes of it.
            self._disconnect()
        if answered:
            return value
        raise value

    def _cancel(self, connection: _Connection, msgid: int) -> None:
        """
        Ask the server to cancel a call that timed out.  If the cancel cannot
        be sent whole at once, close the connection instead: half a frame
        would break the stream.
        """
        payload = connection.core.cancel(msgid)
        if payload is None:
            return
        data = _packHeader(len(payload)) + payload
        try:
            sent = connection.sock.send(data)
        except OSError:
            sent = 0
        if sent != len(data):
            self._disconnect()

    # -- connections --------------------------------------------------------

    def _usableConnection(self, deadline: float | None) -> _Connection:
        """
        The connection to send the next request on: the current one if the
        server has not closed or abandoned it meanwhile, else a new one.
        """
        connection = self._connection
        if connection is not None and not self._stillOpen(connection):
            self._disconnect()
            connection = None
        if connection is None:
            connection = self._connect(deadline)
        return connection

    def _stillOpen(self, connection: _Connection) -> bool:
        """
        Give the core, without blocking, whatever the server sent since the
        last call: late responses (dropped), a goaway, or the end of the
        connection.  Is the connection still good for a new request?
        """
        core = connection.core
        while core.state is State.READY:
            poller = connection.poller
            if poller is not None and connection.pending is None:
                # readable(0), inline, for a plain socket whose poller is made.
                if not poller.poll(0):
                    return True
            elif not connection.readable(0):
                return True
            try:
                chunk = connection.sock.recv(_RECV_SIZE)
            except _WOULD_BLOCK:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            core.dataReceived(chunk)
        return False

    def _connect(self, deadline: float | None) -> _Connection:
        """
        Open a connection and read the server's hello, retrying a refused or
        reset connect, or one the server did not serve, as L{connectRetry}
        says.
        """
        retryUntil: float | None = deadline
        if self.connectRetry is not None:
            retryUntil = time.monotonic() + self.connectRetry
            if deadline is not None:
                retryUntil = min(retryUntil, deadline)
        delay = _FIRST_RETRY_DELAY
        while True:
            try:
                connection = self._connectAny(deadline)
            except _RETRIED_CONNECT_ERRORS:
                if self._closed or retryUntil is None:
                    raise
                if time.monotonic() + delay >= retryUntil:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_DELAY)
                continue
            if self._closed:
                connection.sock.close()
                raise ClientClosed(f"{self!r} is closed")
            self._connection = connection
            return connection

    def _connectAny(self, deadline: float | None) -> _Connection:
        """
        Connect to the next server in turn; with several, skip those that
        refuse or cannot be reached, once round the list.

        @raise OSError: the last server's error if none could be reached (a
            refusal, which L{_connect} retries, only if every server refused).
        """
        if self._resolved is not None:
            self.servers = self._resolved.refresh(self._unreached, _remaining(deadline))
            self._unreached = False
            if self._nextServer >= len(self.servers):
                self._nextServer = 0
        servers = self.servers
        if len(servers) == 1:
            self.host, self.port = servers[0]
            try:
                return self._connectOnce(deadline)
            except OSError:
                self._unreached = True
                raise
        refusedOnly = True
        for _ in servers:
            self.host, self.port = servers[self._nextServer]
            self._nextServer = (self._nextServer + 1) % len(servers)
            try:
                return self._connectOnce(deadline)
            except _DeadlinePassed:
                raise
            except _RETRIED_CONNECT_ERRORS as e:
                error: OSError = e
            except ssl.SSLError:
                # A certificate that does not verify is not an outage.
                raise
            except OSError as e:
                refusedOnly = False
                error = e
                if deadline is not None and time.monotonic() >= deadline:
                    raise
        self._unreached = True
        if refusedOnly:
            raise error
        raise OSError(
            error.errno,
            f"no server could be reached; the last, {self.host}:{self.port}: {error}",
        ) from error

    def _connectOnce(self, deadline: float | None) -> _Connection:
        sock = self._socketFactory((self.host, self.port), _remaining(deadline))
        try:
            if self.ssl_context is not None:
                sock.settimeout(_remaining(deadline))
                # The handshake happens here, within the call's deadline; a
                # certificate that does not verify raises
                # ssl.SSLCertVerificationError.
                sock = self.ssl_context.wrap_socket(
                    sock, server_hostname=self.server_hostname or self.host
                )
            connection = _Connection(
                sock, self._token, self.maxMessageSize, self.streamBuffer
            )
            core = connection.core
            while core.state is State.AWAITING_HELLO:
                if not connection.receive(deadline):
                    raise ConnectionResetError(
                        f"{self.host}:{self.port} closed the connection before its "
                        "hello"
                    )
            if core.state is State.NOT_SERVED:
                raise NotServed(
                    f"{self.host}:{self.port} did not serve the connection (a "
                    f"{connection.notServed} goaway before its hello); nothing "
                    "was sent",
                )
            if connection.refusal is not None:
                raise Unauthorized(
                    f"{self.host}:{self.port}: {connection.refusal.message}; nothing "
                    "was sent",
                    connection.refusal.data,
                )
            if core.state is not State.READY:
                raise InvalidResponse(
                    f"{self.host}:{self.port}: {connection.violation}; nothing was sent"
                )
            auth = core.connectionMade()
            if auth is not None:
                # Nothing answers a right token: the first request follows at
                # once, and the server reads them in order.
                _sendAll(connection, _packHeader(len(auth)) + auth, deadline)
        except BaseException:
            sock.close()
            raise
        return connection

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.core.connectionLost()
            connection.sock.close()


def _checkCall(
    func: object, args: object, kwargs: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """
    Check a call's method name and arguments as the agileutil API takes
    them; its keyword arguments as a dict.

    @raise TypeError: if C{func} is not a str or C{args} not a tuple or list.
    """
    if type(func) is not str:
        raise TypeError(f"func must be a string, not {type(func).__name__}")
    if not isinstance(args, (list, tuple)):
        raise TypeError(f"args must be a tuple or list, not {type(args).__name__}")
    if kwargs is not None and type(kwargs) is not dict:
        return dict(kwargs)
    return kwargs


def _earliest(a: float | None, b: float | None) -> float | None:
    """
    The earlier of two deadlines, either of which may be L{None} (none).
    """
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _openTCP(address: tuple[str, int], timeout: float | None) -> socket.socket:
    """
    Open a TCP connection to C{address}, with C{TCP_NODELAY} on.
    """
    sock = socket.create_connection(address, timeout)
    with contextlib.suppress(OSError):  # not a TCP socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _sendAll(connection: _Connection, data: bytes, deadline: float | None) -> None:
    """
    Send all of C{data} on the non-blocking socket of C{connection}.

    @raise TimeoutError: (L{_DeadlinePassed}) if the deadline passes first.
    @raise OSError: if the connection fails.
    """
    sock = connection.sock
    sent = 0
    total = len(data)
    view: memoryview | None = None
    while True:
        blocked: BaseException | None = None
        try:
            if view is None:
                sent = sock.send(data)
            else:
                # After an SSLWantWriteError, TLS needs the same bytes again.
                sent += sock.send(view[sent:])
        except _WOULD_BLOCK as e:
            blocked = e
        if sent == total:
            return
        if view is None:
            view = memoryview(data)
        remaining = _remaining(deadline)
        if isinstance(blocked, ssl.SSLWantReadError):
            connection.readable(remaining)
        else:
            connection.writable(remaining)


def _remaining(deadline: float | None) -> float | None:
    """
    The seconds left until C{deadline}: L{None} for no deadline.

    @raise TimeoutError: if it has passed.
    """
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _DeadlinePassed("timed out")
    return remaining
