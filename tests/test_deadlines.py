# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Deadlines against a real C{twistd agilerpc} (issue 15, item 1): the server
stops a call at its deadline even when its client was killed and nobody is
left to hear, and a caller past the server's C{--max-call-time} gets
C{DeadlineExceeded}.

The killed client is a subprocess running L{agilerpc.TcpRpcClient}, killed
with SIGKILL by its own pid.  Killed on this machine, its kernel closes its
socket, and the server finds it gone at once (its probe, PROTOCOL.md 7.4);
through L{SilentProxy}, which forwards bytes but never passes on an end of
connection, the server sees what it would across a network partition or a
powered-off host: nothing at all.  Only the deadline ends the call there.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import CallTimeout, DeadlineExceeded, TcpRpcClient

from .serverprocess import ServerProcess

#: Seconds the handler would wait if nobody stopped it.
LONG = 30.0


class SilentProxy:
    """
    A TCP proxy on 127.0.0.1 that forwards bytes both ways and, when a
    client's side ends, keeps the server's side open and says nothing: the
    server never learns the client went.

    @ivar port: where it listens.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            threading.Thread(
                target=self._copy, args=(client, server), daemon=True
            ).start()
            threading.Thread(
                target=self._copy, args=(server, client), daemon=True
            ).start()

    def _copy(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                # An end of connection: not passed on.
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._closed = True
        for s in self._sockets:
            s.close()


def _killedClient(
    testCase: SynchronousTestCase, port: int, tag: str, timeout: float
) -> subprocess.Popen[bytes]:
    """
    Start a client process that calls C{waitToBeCancelled(tag, LONG)} with
    a C{timeout}-second deadline on the server at C{port}; the test kills it
    (by its own pid) in its cleanup if it is still running.
    """
    code = (
        "import sys\n"
        "from agilerpc import TcpRpcClient\n"
        f"TcpRpcClient('127.0.0.1', {port}, timeout={timeout!r})"
        f".call('waitToBeCancelled', ({tag!r}, {LONG!r}))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def kill() -> None:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)

    testCase.addCleanup(kill)
    return process


def _waitFor(client: TcpRpcClient, tag: str, key: str, within: float) -> dict[str, Any]:
    """
    Poll the server until what C{waitToBeCancelled} recorded under C{tag}
    has C{key}.
    """
    end = time.monotonic() + within
    while True:
        record = client.call("waitRecord", (tag,))
        if record is not None and key in record:
            return record  # type: ignore[no-any-return]
        if time.monotonic() > end:
            raise AssertionError(f"no {key!r} within {within} s: {record!r}")
        time.sleep(0.01)


class KilledClientTests(SynchronousTestCase):
    """
    A client killed with SIGKILL while its call with a 1 s deadline runs a
    30 s handler: the handler is cancelled, by 1 s.
    """

    def killDuringCall(self, port: int, tag: str, observer: TcpRpcClient) -> None:
        """
        Start a client calling through C{port}, and SIGKILL it as soon as
        the server runs its call.
        """
        process = _killedClient(self, port, tag, 1.0)
        record = _waitFor(observer, tag, "deadline", 10)
        os.kill(process.pid, signal.SIGKILL)
        self.assertEqual(process.wait(10), -signal.SIGKILL)
        # The handler read the deadline its caller sent: 1 s less the
        # moments the request took to arrive.
        self.assertTrue(0.5 < record["deadline"] <= 1.0, record)

    def test_partitionedClientCancelledAtDeadline(self) -> None:
        """
        Through a proxy that never passes on the client's end, the server
        cannot tell the client is gone: the handler is cancelled at its 1 s
        deadline, not at 30 s.
        """
        server = ServerProcess.start(self)
        proxy = SilentProxy(("127.0.0.1", server.port))
        self.addCleanup(proxy.close)
        observer = TcpRpcClient("127.0.0.1", server.port, timeout=10)
        self.addCleanup(observer.close)
        self.killDuringCall(proxy.port, "partitioned", observer)
        record = _waitFor(observer, "partitioned", "cancelledAfter", 10)
        self.assertTrue(0.5 < record["cancelledAfter"] < 3.0, record)

    def test_killedClientCancelledByItsDeadline(self) -> None:
        """
        Killed on this host, the client's kernel closes its connection, and
        the handler is cancelled within its deadline at the latest.
        """
        server = ServerProcess.start(self)
        observer = TcpRpcClient("127.0.0.1", server.port, timeout=10)
        self.addCleanup(observer.close)
        self.killDuringCall(server.port, "killed", observer)
        record = _waitFor(observer, "killed", "cancelledAfter", 10)
        self.assertTrue(record["cancelledAfter"] < 1.5, record)


class MaxCallTimeTests(SynchronousTestCase):
    """
    C{twistd agilerpc --max-call-time}.
    """

    def test_deadlineExceeded(self) -> None:
        """
        A call whose caller set no deadline stops at C{--max-call-time}; the
        caller gets L{DeadlineExceeded}, and the handler was cancelled.
        """
        server = ServerProcess.start(self, "--max-call-time", "0.5")
        client = TcpRpcClient("127.0.0.1", server.port)
        self.addCleanup(client.close)
        with self.assertRaises(DeadlineExceeded) as e:
            client.call("waitToBeCancelled", ("max", LONG))
        self.assertIn(
            "waitToBeCancelled() did not finish within its deadline", str(e.exception)
        )
        record = client.call("waitRecord", ("max",))
        self.assertTrue(0.4 < record["deadline"] <= 0.5, record)
        self.assertTrue(0.4 < record["cancelledAfter"] < 2.0, record)

    def test_callerTimeoutWins(self) -> None:
        """
        A caller's shorter timeout is its deadline on the server too: the
        caller gets L{CallTimeout} from its own clock, and the server
        cancels the handler then.
        """
        server = ServerProcess.start(self, "--max-call-time", "60")
        client = TcpRpcClient("127.0.0.1", server.port)
        self.addCleanup(client.close)
        with self.assertRaises(CallTimeout):
            client.call("waitToBeCancelled", ("short", LONG), timeout=0.5)
        record = _waitFor(client, "short", "cancelledAfter", 10)
        self.assertTrue(record["deadline"] <= 0.5, record)
