"""
C{TcpRpcClient}: a blocking client on plain sockets, with the call API of
agileutil's TCP RPC client.

    from agilerpc import TcpRpcClient
    cli = TcpRpcClient('127.0.0.1', 9988, timeout=2)
    resp = cli.call(func='sayHello', args=('zhangsan',))

With several servers (agileutil's C{servers=[...]}) it fails over:

    cli = TcpRpcClient(servers=["10.0.0.1:9988", "10.0.0.2:9988"], timeout=2)

It needs no reactor, so it works in scripts, threads and web applications
that do not run Twisted.  It keeps the promise of the Twisted client: the
server's idle close is invisible, and no call is ever run twice.

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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _wire
from ._errors import (
    ClientClosed,
    ConnectionLost,
    InvalidResponse,
    MessageTooLarge,
    RemoteError,
    Unauthorized,
)

# How many goaways, at most, one call follows that prove it was not run
# before giving up: only a server that closes every new connection before
# dispatching anything gets there.
_MAX_RESENDS = 16

# Backoff between connection attempts while a connect is retried.
_FIRST_RETRY_DELAY = 0.02
_MAX_RETRY_DELAY = 0.25

_RECV_SIZE = 65536
_LARGE_RECV_SIZE = 1024 * 1024

# Failures to connect that say the server is not (or not yet) there.
_RETRIED_CONNECT_ERRORS = (
    ConnectionRefusedError,
    ConnectionResetError,
    ConnectionAbortedError,
)

_unpackHeader = _wire.HEADER.unpack_from
_packHeader = _wire.HEADER.pack
_HAS_POLL = hasattr(select, "poll")

# What a non-blocking read or write raises when it cannot go on yet: plain
# sockets raise BlockingIOError, TLS sockets one of the SSLWant errors (a
# TLS read may need a write first, and a write a read).
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

# The goaway reason (and error type) of a server refusing a connection that
# did not authenticate.
_UNAUTHORIZED = "Unauthorized"


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


class _Connection:
    """
    One connection: its non-blocking socket, what was read but not yet
    parsed, and the next msgid to send on it.
    """

    __slots__ = ("buffer", "goingAway", "maxMessageSize", "nextMsgid", "poller", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(0.0)
        self.sock = sock
        self.buffer = bytearray()
        # Strictly increasing, so that a goaway's last_msgid splits the
        # requests sent on this connection by a comparison.
        self.nextMsgid = 1
        self.maxMessageSize = _wire.DEFAULT_MAX_MESSAGE_SIZE
        # Set by a goaway: the server dispatches nothing more on this
        # connection.
        self.goingAway = False
        self.poller: Any = None
        if _HAS_POLL:
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)

    def readable(self, timeout: float | None) -> bool:
        """
        Wait up to C{timeout} seconds (L{None}: for ever) until there is
        something to read, or the connection ended.
        """
        # Bytes already decrypted by TLS are invisible to poll().
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending():
            return True
        if self.poller is not None:
            ms = -1 if timeout is None else math.ceil(timeout * 1000)
            return bool(self.poller.poll(ms))
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

    @param host: the server's host name or address (or give C{servers}).
    @param port: its TCP port.
    @param servers: instead of C{host} and C{port}, several servers, each a
        C{"host:port"} string (as agileutil takes them) or a C{(host, port)}
        pair.  C{host} and C{port} then name the server of the current (or
        last) connection.
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
    ) -> None:
        if servers is None:
            if host is None or port is None:
                raise TypeError("TcpRpcClient needs a host and a port, or servers")
            addresses = [(host, port)]
        else:
            if host is not None or port is not None:
                raise TypeError(
                    "TcpRpcClient takes a host and a port, or servers, not both"
                )
            addresses = [_parseServer(server) for server in servers]
            if not addresses:
                raise ValueError("TcpRpcClient needs at least one server")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 or None, not {timeout!r}")
        if connectRetry is not None and not connectRetry >= 0:
            raise ValueError(f"connectRetry must be >= 0 or None, not {connectRetry!r}")
        self.servers: list[tuple[str, int]] = addresses
        self._nextServer = 0
        self.host, self.port = addresses[0]
        self.timeout = timeout
        self.connectRetry = connectRetry
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        if isinstance(token, str):
            token = token.encode("utf-8")
        self._token = token
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        where = ", ".join(f"{host}:{port}" for host, port in self.servers)
        return f"<TcpRpcClient {where}>"

    # -- the public API -----------------------------------------------------

    def call(
        self,
        func: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """
        Call C{func(*args, **kwargs)} on the server and return its result.

        @param args: a tuple or a list.
        @raise RemoteError: (or a subclass such as L{MethodNotFound}) if the
            call failed on the server.
        @raise MessageTooLarge: without sending anything, if the request is
            larger than the server's maximum message size.
        @raise TimeoutError: if the call took longer than the timeout.  It
            may or may not have run.
        @raise ConnectionLost: if the connection closed while the call was in
            flight, without the server saying whether it ran.
        @raise ConnectionRefusedError: (or another L{OSError}) if the client
            cannot connect.  Nothing was sent.
        @raise ClientClosed: if the client is, or gets, closed.
        @raise TypeError: (or L{ValueError} or L{OverflowError}, as msgpack
            raises them) if the arguments cannot be encoded.  Nothing was
            sent.
        """
        if type(func) is not str:
            raise TypeError(f"func must be a string, not {type(func).__name__}")
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a tuple or list, not {type(args).__name__}")
        if kwargs is not None and type(kwargs) is not dict:
            kwargs = dict(kwargs)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with self._lock:
            if self._closed:
                raise ClientClosed(f"{self!r} is closed")
            try:
                return self._call(func, args, kwargs, deadline)
            except TimeoutError as e:
                if self.timeout is None or e.errno is not None:
                    raise
                raise TimeoutError(
                    f"{func}() on {self.host}:{self.port} did not finish within "
                    f"{self.timeout:g} s"
                ) from None
            except (OSError, ConnectionLost) as e:
                if self._closed:
                    raise ClientClosed(
                        f"{self!r} was closed during the call to {func}(); "
                        "it may or may not have run"
                    ) from e
                raise

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
                socket.socket.shutdown(connection.sock, socket.SHUT_RDWR)
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
    ) -> Any:
        for _ in range(_MAX_RESENDS):
            connection = self._usableConnection(deadline)
            msgid = connection.nextMsgid
            payload = _wire.encodeRequest(msgid, func, args, kwargs)
            if len(payload) > connection.maxMessageSize:
                raise MessageTooLarge(
                    f"the request to {func}() is {len(payload)} bytes, more than "
                    "the server's maximum message size of "
                    f"{connection.maxMessageSize} bytes"
                )
            connection.nextMsgid = msgid + 1
            try:
                self._send(connection, _packHeader(len(payload)) + payload, deadline)
                return self._waitFor(connection, msgid, deadline)
            except _NotRun:
                self._disconnect()
        raise ConnectionLost(
            f"{self.host}:{self.port} closed {_MAX_RESENDS} connections in a row "
            f"before running {func}(); it was not run"
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
        Read until the response to C{msgid} comes and return its result.
        """
        refusal: RemoteError | None = None
        while True:
            try:
                payload = self._readFrame(connection, deadline)
            except _DeadlinePassed:
                self._cancel(connection, msgid)
                raise
            except InvalidResponse:
                self._disconnect()
                raise
            except OSError as e:
                self._disconnect()
                raise ConnectionLost(
                    f"the connection to {self.host}:{self.port} failed ({e}) while "
                    "the call was in flight; it may or may not have run"
                ) from None
            if payload is None:
                self._disconnect()
                raise ConnectionLost(
                    f"{self.host}:{self.port} closed the connection while the call "
                    "was in flight; it may or may not have run"
                )
            try:
                message = _wire.parseServerMessage(payload)
            except InvalidResponse:
                self._disconnect()
                raise
            if type(message) is _wire.Response:
                if message.msgid == msgid:
                    if message.error is not None:
                        error = RemoteError.fromWire(message.error)
                        if connection.goingAway or isinstance(error, Unauthorized):
                            # The server waits for us to close (PROTOCOL.md
                            # 8.3), or is closing: it dispatches nothing
                            # unauthenticated.
                            self._disconnect()
                        raise error
                    if connection.goingAway:
                        self._disconnect()
                    return message.result
                if message.msgid is None and message.error is not None:
                    # An error the server could not tie to a request (a frame
                    # it refused): keep it to explain the goaway that follows.
                    refusal = RemoteError.fromWire(message.error)
                # Any other msgid: the late answer to a call that timed out.
            elif isinstance(message, _wire.Control) and message.kind == "goaway":
                connection.goingAway = True
                lastMsgid = message.body[0] if message.body else None
                if lastMsgid is None or (type(lastMsgid) is int and lastMsgid < msgid):
                    # The server proves it did not run our request.
                    if refusal is not None:
                        # It refused our frame: sending it again would only
                        # be refused again.
                        self._disconnect()
                        raise refusal
                    if len(message.body) > 1 and message.body[1] == _UNAUTHORIZED:
                        # Refused for want of a (right) token: so would the
                        # next connection be.
                        self._disconnect()
                        raise Unauthorized(
                            f"{self.host}:{self.port} refused the connection: "
                            "wrong or missing token; the call was not run"
                        )
                    raise _NotRun()
                # Otherwise our request was dispatched: its response follows.

    def _cancel(self, connection: _Connection, msgid: int) -> None:
        """
        Ask the server to cancel a call that timed out.  If the cancel cannot
        be sent whole at once, close the connection instead: half a frame
        would break the stream.
        """
        payload = _wire.encodeCancel(msgid)
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
        if connection is not None and (
            connection.nextMsgid > _wire.MAX_MSGID or not self._stillOpen(connection)
        ):
            self._disconnect()
            connection = None
        if connection is None:
            connection = self._connect(deadline)
        return connection

    def _stillOpen(self, connection: _Connection) -> bool:
        """
        Read, without blocking, whatever the server sent since the last call:
        late responses (dropped), a goaway, or the end of the connection.  Is
        the connection still good for a new request?
        """
        while True:
            try:
                while (payload := _takeFrame(connection)) is not None:
                    message = _wire.parseServerMessage(payload)
                    if type(message) is _wire.Control and message.kind == "goaway":
                        connection.goingAway = True
            except InvalidResponse:
                return False
            if connection.goingAway:
                return False
            if not connection.readable(0):
                return True
            try:
                chunk = connection.sock.recv(_RECV_SIZE)
            except _WOULD_BLOCK:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            connection.buffer += chunk

    def _connect(self, deadline: float | None) -> _Connection:
        """
        Open a connection and read the server's hello, retrying a refused or
        reset connect as L{connectRetry} says.
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
        servers = self.servers
        if len(servers) == 1:
            return self._connectOnce(deadline)
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
        if refusedOnly:
            raise error
        raise OSError(
            error.errno,
            f"no server could be reached; the last, {self.host}:{self.port}: {error}",
        ) from error

    def _connectOnce(self, deadline: float | None) -> _Connection:
        sock = self._openSocket(_remaining(deadline))
        try:
            if self.ssl_context is not None:
                sock.settimeout(_remaining(deadline))
                # The handshake happens here, within the call's deadline; a
                # certificate that does not verify raises
                # ssl.SSLCertVerificationError.
                sock = self.ssl_context.wrap_socket(
                    sock, server_hostname=self.server_hostname or self.host
                )
            connection = _Connection(sock)
            payload = self._readFrame(connection, deadline)
            if payload is None:
                raise ConnectionResetError(
                    f"{self.host}:{self.port} closed the connection before its hello"
                )
            message = _wire.parseServerMessage(payload)
            if type(message) is not _wire.Control or message.kind != "hello":
                raise InvalidResponse(
                    f"expected a hello, got {_wire.unpack(payload)!r}"
                )
            info = message.body[0] if message.body else None
            if not isinstance(info, dict):
                raise InvalidResponse(f"the hello's info is not a map: {info!r}")
            protocol = info.get("protocol")
            if protocol != _wire.PROTOCOL_VERSION:
                raise InvalidResponse(
                    f"the server speaks protocol version {protocol!r}; this client "
                    f"speaks {_wire.PROTOCOL_VERSION}"
                )
            size = info.get("max_message_size")
            if type(size) is int and size > 0:
                connection.maxMessageSize = size
            if self._token is not None:
                # Nothing answers a right token: the first request follows at
                # once, and the server reads them in order.
                auth = _wire.pack([_wire.CONTROL, "auth", self._token])
                _sendAll(connection, _packHeader(len(auth)) + auth, deadline)
        except BaseException:
            sock.close()
            raise
        return connection

    def _openSocket(self, timeout: float | None) -> socket.socket:
        """
        Open a TCP connection to the server, with C{TCP_NODELAY} on.  Tests
        override this to connect the client to a fake server.
        """
        sock = socket.create_connection((self.host, self.port), timeout)
        with contextlib.suppress(OSError):  # not a TCP socket
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.sock.close()

    # -- frames -------------------------------------------------------------

    def _readFrame(
        self, connection: _Connection, deadline: float | None
    ) -> bytes | None:
        """
        The payload of the next frame, or L{None} if the server closed the
        connection between frames.

        @raise TimeoutError: if the deadline passes first; what was read so
            far stays buffered for the next read.
        @raise InvalidResponse: if a frame is larger than the server's
            maximum message size, or the connection ends inside one.
        @raise OSError: if the connection fails.
        """
        buffer = connection.buffer
        sock = connection.sock
        while True:
            have = len(buffer)
            if have >= 4:
                end = 4 + _checkLength(connection, _unpackHeader(buffer)[0])
                if have >= end:
                    payload = bytes(buffer[4:end])
                    del buffer[:end]
                    return payload
                if end - have > _RECV_SIZE:
                    return self._readLarge(connection, end, deadline)
            if not connection.readable(_remaining(deadline)):
                continue
            try:
                chunk = sock.recv(_RECV_SIZE)
            except _WOULD_BLOCK as e:
                connection.wait(e, _remaining(deadline))
                continue
            if not chunk:
                if buffer:
                    raise InvalidResponse(
                        f"the connection closed inside a frame ({len(buffer)} bytes "
                        "of it read)"
                    )
                return None
            if not buffer and len(chunk) >= 4:
                # The usual case: exactly one whole frame, no copy to make.
                end = 4 + _checkLength(connection, _unpackHeader(chunk)[0])
                if len(chunk) == end:
                    return chunk[4:]
            buffer += chunk

    def _readLarge(
        self, connection: _Connection, end: int, deadline: float | None
    ) -> bytes:
        """
        Finish reading a frame of C{end} bytes (header included) that is far
        from complete: collect its chunks, and join them once.
        """
        buffer = connection.buffer
        sock = connection.sock
        chunks = [bytes(buffer[4:])]
        missing = end - len(buffer)
        buffer.clear()
        try:
            while missing:
                if not connection.readable(_remaining(deadline)):
                    continue
                try:
                    chunk = sock.recv(min(missing, _LARGE_RECV_SIZE))
                except _WOULD_BLOCK as e:
                    connection.wait(e, _remaining(deadline))
                    continue
                if not chunk:
                    raise InvalidResponse(
                        f"the connection closed inside a frame of {end - 4} bytes"
                    )
                chunks.append(chunk)
                missing -= len(chunk)
        except BaseException:
            # Keep what was read (a timeout leaves the connection usable).
            buffer += _packHeader(end - 4)
            for chunk in chunks:
                buffer += chunk
            raise
        return b"".join(chunks)


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


def _checkLength(connection: _Connection, length: int) -> int:
    """
    Check the length of an incoming frame against the server's maximum
    message size.

    @raise InvalidResponse: if it is larger.
    """
    if length > connection.maxMessageSize:
        raise InvalidResponse(
            f"the server sent a frame of {length} bytes, more than its maximum "
            f"message size of {connection.maxMessageSize} bytes"
        )
    return length


def _takeFrame(connection: _Connection) -> bytes | None:
    """
    Remove the first complete frame from the connection's buffer and return
    its payload, or L{None} if there is none yet.

    @raise InvalidResponse: if the frame is larger than the server's maximum
        message size.
    """
    buffer = connection.buffer
    if len(buffer) < 4:
        return None
    end = 4 + _checkLength(connection, _unpackHeader(buffer)[0])
    if len(buffer) < end:
        return None
    payload = bytes(buffer[4:end])
    del buffer[:end]
    return payload


def _parseServer(server: str | tuple[str, int]) -> tuple[str, int]:
    """
    A C{(host, port)} pair from C{"host:port"} (C{"[::1]:9988"} for an IPv6
    address) or from a pair.

    @raise ValueError: if it is neither.
    """
    if isinstance(server, str):
        host, sep, digits = server.rpartition(":")
        if not sep or not host or not digits.isdigit():
            raise ValueError(f"a server is 'host:port', not {server!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return host, int(digits)
    name, port = server
    return str(name), int(port)
