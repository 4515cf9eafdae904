"""
Fakes shared by the tests of the blocking client, L{agilerpc.TcpRpcClient}, on
real sockets: a scripted server that plays one script per connection in a
thread, on the other end of a C{socketpair()} (or a TCP pair), and a client
whose connections go to it.  Every read on either side is bounded by a socket
timeout, and every thread is joined in the test's cleanup.

(The in-memory, thread-free fakes for the same client are in
L{tests.clienthelpers}.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import _wire
from agilerpc._blocking import TcpRpcClient

# The bound on every wait in these tests.
WAIT = 5.0


class FakeConnection:
    """
    The server's end of one connection, for a script to play on.

    @ivar received: every message this end received, in order.
    """

    def __init__(self, server: FakeServer, sock: socket.socket, index: int) -> None:
        self.server = server
        self.sock = sock
        self.index = index
        self.received: list[list[Any]] = []
        self._buffer = b""
        sock.settimeout(WAIT)

    def sendRaw(self, data: bytes) -> None:
        """
        Send C{data} as it is.
        """
        self.sock.sendall(data)

    def send(self, message: list[Any]) -> None:
        """
        Send one message as a frame.
        """
        self.sendRaw(_wire.frame(_wire.pack(message)))

    def hello(
        self,
        maxMessageSize: int = _wire.DEFAULT_MAX_MESSAGE_SIZE,
        features: list[str] | None = None,
    ) -> None:
        """
        Send the hello a real server sends (one that lists C{features}, if
        given).
        """
        info: dict[str, Any] = {
            "protocol": 1,
            "keepalive": 75,
            "max_message_size": maxMessageSize,
        }
        if features is not None:
            info["features"] = features
        self.send([3, "hello", info])

    def respond(self, msgid: int, result: Any) -> None:
        """
        Answer C{msgid} with C{result}.
        """
        self.send([1, msgid, None, result])

    def goaway(self, lastMsgid: int | None, reason: str = "idle") -> None:
        """
        Send a goaway.
        """
        self.send([3, "goaway", lastMsgid, reason])

    def halfClose(self) -> None:
        """
        Close the sending side, as a server does after a goaway.
        """
        self.sock.shutdown(socket.SHUT_WR)

    def _read(self, n: int) -> bytes | None:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def receive(self) -> list[Any] | None:
        """
        The next message, or L{None} at end-of-stream.
        """
        header = self._read(4)
        if header is None:
            assert self._buffer == b"", f"EOF inside a header: {self._buffer!r}"
            return None
        (length,) = _wire.HEADER.unpack(header)
        payload = self._read(length)
        assert payload is not None, "EOF inside a frame"
        message = _wire.unpack(payload)
        self.received.append(message)
        return message

    def receiveRequest(self) -> list[Any]:
        """
        The next message, which must be a request.
        """
        message = self.receive()
        assert message is not None and message[0] == 0, message
        return message

    def run(self, request: list[Any]) -> Any:
        """
        "Run" C{request}: record it as executed, and return its first
        argument.
        """
        self.server.executed.append((self.index, request[2], request[3]))
        return request[3][0] if request[3] else None

    def serve(self, request: list[Any]) -> None:
        """
        Run C{request} and answer it.
        """
        self.respond(request[1], self.run(request))

    def readToEnd(self) -> list[list[Any]]:
        """
        Every message until end-of-stream.
        """
        messages = []
        while (message := self.receive()) is not None:
            messages.append(message)
        return messages


Script = Callable[[FakeConnection], None]


def tcpPair() -> tuple[socket.socket, socket.socket]:
    """
    Two TCP sockets connected to each other on 127.0.0.1.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(WAIT)
        client = socket.create_connection(listener.getsockname(), WAIT)
        server, _ = listener.accept()
    return client, server


class FakeServer:
    """
    Plays one script per connection the client opens, each in a thread.

    @ivar connections: the server ends of the connections opened so far.
    @ivar executed: C{(connection index, method, args)} of every request a
        script ran.
    @ivar refuse: how many connects to refuse before the scripts start.
    @ivar tcp: connect over TCP on 127.0.0.1 rather than a Unix socketpair
        (a reset needs TCP).
    """

    def __init__(self, testCase: SynchronousTestCase, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.connections: list[FakeConnection] = []
        self.executed: list[tuple[int, str, list[Any]]] = []
        self.refuse = 0
        self.tcp = False
        self.attempts = 0
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        testCase.addCleanup(self._cleanup)

    def connect(self) -> socket.socket:
        """
        Open the next connection: the client's end of a socketpair, whose
        other end runs the next script.

        @raise ConnectionRefusedError: when told to refuse, or when no
            script is left.
        """
        self.attempts += 1
        if self.refuse:
            self.refuse -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        if not self.scripts:
            raise ConnectionRefusedError(111, "Connection refused (no script left)")
        script = self.scripts.pop(0)
        clientEnd, serverEnd = tcpPair() if self.tcp else socket.socketpair()
        connection = FakeConnection(self, serverEnd, len(self.connections))
        self.connections.append(connection)
        thread = threading.Thread(target=self._play, args=(script, connection))
        thread.daemon = True
        self._threads.append(thread)
        thread.start()
        return clientEnd

    def _play(self, script: Script, connection: FakeConnection) -> None:
        try:
            script(connection)
        except BaseException as e:
            self._errors.append(e)
        finally:
            connection.sock.close()

    def join(self) -> None:
        """
        Wait for every script to finish, and raise the first error one of
        them raised.
        """
        for thread in self._threads:
            thread.join(WAIT * 2)
            assert not thread.is_alive(), "a fake server script did not finish"
        if self._errors:
            raise self._errors[0]

    def _cleanup(self) -> None:
        for connection in self.connections:
            # Unblock a script still reading, then wait for its thread.
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(WAIT * 2)


class FakeClient(TcpRpcClient):
    """
    A L{TcpRpcClient} whose connections go to a L{FakeServer}.
    """

    def __init__(
        self,
        server: FakeServer,
        timeout: float | None = WAIT,
        connectRetry: float | None = None,
    ) -> None:
        super().__init__(
            "fake.invalid",
            9988,
            timeout,
            connectRetry=connectRetry,
            socketFactory=self._connectFake,
        )
        self.server = server
        self.openTimeouts: list[float | None] = []

    def _connectFake(
        self, address: tuple[str, int], timeout: float | None
    ) -> socket.socket:
        self.openTimeouts.append(timeout)
        return self.server.connect()


def serveForever(connection: FakeConnection) -> None:
    """
    A script: say hello, then run and answer every request until the client
    closes.
    """
    connection.hello()
    while (message := connection.receive()) is not None:
        if message[0] == 0:
            connection.serve(message)
