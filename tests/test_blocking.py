"""
Tests for L{agilerpc.TcpRpcClient}, the blocking client, on real sockets:
reading and writing, TLS-free timeouts, threads, connecting and closing.
Its protocol rules are tested in memory in C{test_blocking_rules}.

Most tests connect the client to a scripted fake server (from
L{tests.blockinghelpers}): each connection the client opens is one end of a
C{socketpair()}, and a thread plays a script on the other end.  Every read on
either side is bounded by a socket timeout, and every thread is joined in the
test's cleanup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import agilerpc
from agilerpc import _wire
from agilerpc._blocking import TcpRpcClient
from tests.blockinghelpers import (
    WAIT,
    FakeClient,
    FakeConnection,
    FakeServer,
    Script,
    serveForever,
)
from tests.serverprocess import ServerProcess


def request(msgid: int, method: str, args: list[Any]) -> list[Any]:
    """
    A request message as the client sends it.
    """
    return [0, msgid, method, args]


class Harness:
    """
    Mixin: make a fake server and a client connected to it, closed in
    cleanup.
    """

    def fake(
        self: Any,
        *scripts: Script,
        timeout: float | None = WAIT,
        connectRetry: float | None = None,
    ) -> tuple[FakeServer, FakeClient]:
        server = FakeServer(self, *scripts)
        client = FakeClient(server, timeout, connectRetry)
        self.addCleanup(client.close)
        return server, client


class CallTests(Harness, SynchronousTestCase):
    """
    L{TcpRpcClient.call} on a connection that stays open.
    """

    def test_helloThenCall(self) -> None:
        """
        The client reads the hello, sends exactly one request frame with
        msgid 0, and returns the result.
        """
        frames: list[bytes] = []

        def script(c: FakeConnection) -> None:
            c.hello()
            header = c._read(4)
            assert header is not None
            payload = c._read(_wire.HEADER.unpack(header)[0])
            assert payload is not None
            frames.append(header + payload)
            c.respond(0, "hello zhangsan")
            frames.append(c._read(1) or b"")

        server, client = self.fake(script)
        self.assertEqual(
            client.call(func="sayHello", args=("zhangsan",)), "hello zhangsan"
        )
        client.close()
        server.join()
        self.assertEqual(
            frames,
            [_wire.frame(_wire.pack([0, 0, "sayHello", ["zhangsan"]])), b""],
        )

    def test_responseSentByteByByte(self) -> None:
        """
        A response that arrives in many small pieces is reassembled.
        """

        def script(c: FakeConnection) -> None:
            c.hello()
            r = c.receiveRequest()
            for byte in _wire.frame(_wire.pack([1, r[1], None, "x" * 300])):
                c.sendRaw(bytes([byte]))
            c.readToEnd()

        server, client = self.fake(script)
        self.assertEqual(client.call("echo", ("x",)), "x" * 300)
        client.close()
        server.join()

    def test_largeResponse(self) -> None:
        """
        A response much larger than one read is reassembled whole.
        """
        big = bytes(range(256)) * 4096  # 1 MiB

        def script(c: FakeConnection) -> None:
            c.hello()
            r = c.receiveRequest()
            c.respond(r[1], big)
            c.readToEnd()

        server, client = self.fake(script)
        self.assertEqual(client.call("echo", ("big",)), big)
        client.close()
        server.join()


class SendTests(Harness, SynchronousTestCase):
    """
    Requests too large to be sent in one go.
    """

    def test_largeRequest(self) -> None:
        """
        A request much larger than the socket's buffer is sent whole.
        """
        big = bytes(range(256)) * 16384  # 4 MiB

        def script(c: FakeConnection) -> None:
            c.hello()
            r = c.receiveRequest()
            c.respond(r[1], len(r[3][0]) if r[3][0] == big else -1)
            c.readToEnd()

        server, client = self.fake(script)
        self.assertEqual(client.call("echo", (big,)), len(big))
        client.close()
        server.join()

    def test_sendTimeout(self) -> None:
        """
        A request that cannot be sent whole before the timeout raises
        L{TimeoutError} and closes the connection (half a frame is never
        dispatched); the next call uses a new connection.
        """
        big = b"x" * (8 * 1024 * 1024 - 100)
        received: list[int] = []
        gaveUp = threading.Event()

        def stuck(c: FakeConnection) -> None:
            c.hello()
            # Read nothing until the client gives up, then count the bytes.
            gaveUp.wait(WAIT)
            total = 0
            while chunk := c.sock.recv(65536):
                total += len(chunk)
            received.append(total)

        server, client = self.fake(stuck, serveForever, timeout=0.3)
        self.assertRaises(TimeoutError, client.call, "echo", (big,))
        gaveUp.set()
        self.assertIsNone(client._connection)
        self.assertEqual(client.call("echo", ("small",)), "small")
        client.close()
        server.join()
        self.assertEqual(len(received), 1)
        self.assertTrue(0 < received[0] < len(big), received)
        self.assertEqual(server.executed, [(1, "echo", ["small"])])


class ConnectTests(Harness, SynchronousTestCase):
    """
    Opening connections: lazily, retried only while nothing was sent.
    """

    def test_lazyConnect(self) -> None:
        """
        Making a client connects nothing; the first call does, with the
        call's timeout.
        """
        server, client = self.fake(serveForever, timeout=3)
        self.assertEqual(server.attempts, 0)
        client.call("echo", (1,))
        self.assertEqual(server.attempts, 1)
        self.assertEqual(len(client.openTimeouts), 1)
        timeout = client.openTimeouts[0]
        assert timeout is not None
        self.assertTrue(0 < timeout <= 3)

    def test_refusedRetriedWithinTimeout(self) -> None:
        """
        A refused connect is retried while the call's timeout allows: the
        server starting a little late costs nothing.
        """
        server, client = self.fake(serveForever)
        server.refuse = 2
        self.assertEqual(client.call("echo", ("x",)), "x")
        self.assertEqual(server.attempts, 3)
        self.assertEqual(len(server.executed), 1)

    def test_refusedNoRetry(self) -> None:
        """
        With C{connectRetry=0}, or without a timeout, a refused connect
        raises L{ConnectionRefusedError} at once.
        """
        for timeout, retry in [(WAIT, 0.0), (None, None)]:
            server, client = self.fake(
                serveForever, timeout=timeout, connectRetry=retry
            )
            server.refuse = 1
            self.assertRaises(ConnectionRefusedError, client.call, "echo", ("x",))
            self.assertEqual(server.attempts, 1)
            # The next call connects.
            self.assertEqual(client.call("echo", ("y",)), "y")

    def test_refusedUntilRetryRunsOut(self) -> None:
        """
        A connect refused for longer than C{connectRetry} raises the
        refusal.
        """
        server, client = self.fake(serveForever, connectRetry=0.1)
        server.refuse = 1000
        self.assertRaises(ConnectionRefusedError, client.call, "echo", ("x",))
        self.assertTrue(1 < server.attempts < 10, server.attempts)

    def test_closedBeforeHelloRetried(self) -> None:
        """
        A connection closed before its hello is retried like a refused one:
        nothing was sent on it.
        """

        def closeAtOnce(c: FakeConnection) -> None:
            pass

        server, client = self.fake(closeAtOnce, serveForever)
        self.assertEqual(client.call("echo", ("x",)), "x")
        self.assertEqual(server.attempts, 2)
        client.close()
        server.join()
        self.assertEqual(server.connections[0].received, [])

    def test_closedBeforeHelloNoRetry(self) -> None:
        """
        Without retries, a connection closed before its hello raises
        L{ConnectionResetError}.
        """

        def closeAtOnce(c: FakeConnection) -> None:
            pass

        server, client = self.fake(closeAtOnce, connectRetry=0)
        e = self.assertRaises(ConnectionResetError, client.call, "echo", ("x",))
        self.assertIn("before its hello", str(e))
        self.assertEqual(server.attempts, 1)

    def test_tcpNoDelay(self) -> None:
        """
        The client's TCP socket has C{TCP_NODELAY} on.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(WAIT)
        port = listener.getsockname()[1]
        nodelay: list[int] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                c = FakeConnection(FakeServer(self), conn, 0)
                c.hello()
                c.serve(c.receiveRequest())
                c.readToEnd()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        self.addCleanup(thread.join, WAIT)
        client = TcpRpcClient("127.0.0.1", port, timeout=WAIT)
        self.addCleanup(client.close)
        self.assertEqual(client.call("echo", ("x",)), "x")
        connection = client._connection
        assert connection is not None
        nodelay.append(
            connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        )
        client.close()
        thread.join(WAIT)
        self.assertNotEqual(nodelay, [0])


class LostTests(Harness, SynchronousTestCase):
    """
    The connection lost while a call is in flight.
    """

    def test_resetMidCall(self) -> None:
        """
        A reset while a call is in flight raises L{agilerpc.CallLost}.
        """

        def first(c: FakeConnection) -> None:
            c.hello()
            c.receiveRequest()
            # A zero linger time makes close() send a reset.
            c.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )

        server, client = self.fake(first)
        server.tcp = True
        e = self.assertRaises(agilerpc.CallLost, client.call, "incr", ("a",))
        self.assertIn("Connection reset by peer", str(e))
        self.assertIn("may or may not have run", str(e))
        server.join()
        self.assertEqual(server.attempts, 1)

    def test_closeFromAnotherThread(self) -> None:
        """
        L{TcpRpcClient.close} from another thread wakes a call in flight,
        which raises L{agilerpc.ClientClosed}.
        """
        received = threading.Event()

        def first(c: FakeConnection) -> None:
            c.hello()
            c.receiveRequest()
            received.set()
            c.readToEnd()

        server, client = self.fake(first, timeout=None)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                client.call("sleep", (10,))
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        self.addCleanup(thread.join, WAIT)
        self.assertTrue(received.wait(WAIT))
        client.close()
        thread.join(WAIT)
        self.assertFalse(thread.is_alive())
        self.assertEqual([type(e) for e in errors], [agilerpc.ClientClosed])
        server.join()


class TimeoutTests(Harness, SynchronousTestCase):
    """
    The per-call timeout.
    """

    def test_lateResponseDropped(self) -> None:
        """
        A call that times out raises L{TimeoutError} and sends a cancel; the
        next call gets its own answer even though the late answer to the first
        arrives first, on the same connection.
        """
        cancels: list[list[Any]] = []

        def script(c: FakeConnection) -> None:
            c.hello()
            first = c.receiveRequest()
            cancel = c.receive()
            assert cancel is not None
            cancels.append(cancel)
            second = c.receiveRequest()
            c.respond(first[1], "late")
            c.serve(second)
            c.readToEnd()

        server, client = self.fake(script, timeout=0.2)
        e = self.assertRaises(TimeoutError, client.call, "sleep", ("first",))
        self.assertEqual(
            str(e),
            "sleep() on fake.invalid:9988 timed out after 0.2 s; it may or may not have run",
        )
        self.assertEqual(client.call("echo", ("second",)), "second")
        client.close()
        server.join()
        self.assertEqual(cancels, [[3, "cancel", 0]])
        self.assertEqual(server.attempts, 1)

    def test_lateLargeResponseDropped(self) -> None:
        """
        A call that times out while a large response is half read keeps what
        was read; the rest arrives later, is dropped, and the next call gets
        its own answer.
        """
        big = b"x" * 300000
        halfSent = threading.Event()

        def script(c: FakeConnection) -> None:
            c.hello()
            first = c.receiveRequest()
            frame = _wire.frame(_wire.pack([1, first[1], None, big]))
            c.sendRaw(frame[:150000])
            halfSent.set()
            c.receive()  # the cancel
            second = c.receiveRequest()
            c.sendRaw(frame[150000:])
            c.serve(second)
            c.readToEnd()

        server, client = self.fake(script, timeout=0.3)
        self.assertRaises(TimeoutError, client.call, "echo", ("first",))
        self.assertTrue(halfSent.is_set())
        self.assertEqual(client.call("echo", ("second",)), "second")
        client.close()
        server.join()
        self.assertEqual(server.attempts, 1)

    def test_timeoutWhileBuffering(self) -> None:
        """
        A call's timeout is not late while a large frame trickles in: the
        deadline is checked between reads.
        """
        stop = threading.Event()

        def script(c: FakeConnection) -> None:
            c.hello()
            c.receiveRequest()
            c.sendRaw(_wire.HEADER.pack(8 * 1024 * 1024))
            while not stop.wait(0.01):
                with contextlib.suppress(OSError):
                    c.sendRaw(b"x" * 4096)

        server, client = self.fake(script, timeout=0.3)
        started = time.monotonic()
        self.assertRaises(TimeoutError, client.call, "echo", ("x",))
        self.assertLess(time.monotonic() - started, 0.6)
        stop.set()
        client.close()
        server.join()

    def test_lateResponseBetweenCalls(self) -> None:
        """
        A late response that arrives while no call is in flight is dropped
        before the next call is sent.
        """
        lateSent = threading.Event()

        def script(c: FakeConnection) -> None:
            c.hello()
            first = c.receiveRequest()
            c.receive()  # the cancel
            c.respond(first[1], "late")
            lateSent.set()
            c.serve(c.receiveRequest())
            c.readToEnd()

        server, client = self.fake(script, timeout=0.2)
        self.assertRaises(TimeoutError, client.call, "sleep", ("first",))
        self.assertTrue(lateSent.wait(WAIT))
        self.assertEqual(client.call("echo", ("second",)), "second")
        client.close()
        server.join()

    def test_connectTimeout(self) -> None:
        """
        The timeout covers the connect: a server that never says hello makes
        the call raise L{TimeoutError}, and nothing is sent.
        """
        seen: list[list[list[Any]]] = []

        def silent(c: FakeConnection) -> None:
            seen.append(c.readToEnd())

        server, client = self.fake(silent, timeout=0.2)
        self.assertRaises(TimeoutError, client.call, "echo", ("x",))
        server.join()
        self.assertEqual(seen, [[]])

    def test_invalidTimeout(self) -> None:
        """
        A timeout that is not a positive number, or a negative connectRetry,
        is refused.
        """
        self.assertRaises(ValueError, TcpRpcClient, "h", 1, 0)
        self.assertRaises(ValueError, TcpRpcClient, "h", 1, -1)
        self.assertRaises(ValueError, TcpRpcClient, "h", 1, None, connectRetry=-1)


class ThreadTests(Harness, SynchronousTestCase):
    """
    Several threads sharing one client.
    """

    def test_eightThreads(self) -> None:
        """
        8 threads making 50 calls each on one client all get their own
        answers, and every call runs once.
        """
        server, client = self.fake(serveForever)
        failures: list[str] = []

        def work(n: int) -> None:
            try:
                for i in range(50):
                    value = f"{n}-{i}"
                    result = client.call("echo", (value,))
                    if result != value:
                        failures.append(f"{value} got {result!r}")
            except BaseException as e:
                failures.append(repr(e))

        threads = [
            threading.Thread(target=work, args=(n,), daemon=True) for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 4)
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertEqual(failures, [])
        client.close()
        server.join()
        self.assertEqual(len(server.executed), 400)
        self.assertEqual(
            sorted(args[0] for _, _, args in server.executed),
            sorted(f"{n}-{i}" for n in range(8) for i in range(50)),
        )


class CloseTests(Harness, SynchronousTestCase):
    """
    close() and the context manager.
    """

    def test_contextManagerCloses(self) -> None:
        """
        Leaving a C{with} block closes the connection (the server reads
        end-of-stream) and later calls raise L{agilerpc.ClientClosed}.
        """
        server = FakeServer(self, serveForever)
        with FakeClient(server) as client:
            self.assertEqual(client.call("echo", ("x",)), "x")
        server.join()
        self.assertEqual(server.connections[0].received, [[0, 0, "echo", ["x"]]])
        self.assertRaises(agilerpc.ClientClosed, client.call, "echo", ("y",))
        self.assertEqual(server.attempts, 1)

    def test_closeIdempotent(self) -> None:
        """
        close() may be called more than once, and before any call.
        """
        server, client = self.fake(serveForever)
        client.close()
        client.close()
        self.assertRaises(agilerpc.ClientClosed, client.call, "echo", ("y",))
        self.assertEqual(server.attempts, 0)

    def test_exported(self) -> None:
        """
        C{TcpRpcClient} is exported from the package root.
        """
        self.assertIs(agilerpc.TcpRpcClient, TcpRpcClient)
        self.assertIn("TcpRpcClient", agilerpc.__all__)


AGILEUTIL_CLIENT_SCRIPT = """\
from agilerpc import TcpRpcClient
import time
cli = TcpRpcClient('127.0.0.1', {port}, timeout = 2)
resp = cli.call(func = 'sayHello', args=('zhangsan',))
print('resp', resp)
time.sleep(1.5)
resp = cli.call(func = 'sayHello', args=('zhangsan',))
print('resp', resp)
time.sleep(1.5)
resp = cli.call(func = 'sayHello', args=('zhangsan',))
print('resp', resp)
time.sleep(1.5)
resp = cli.call(func = 'sayHello', args=('zhangsan',))
print('resp', resp)
"""


def packageEnvironment() -> dict[str, str]:
    """
    The environment for a Python subprocess that must import the same
    C{agilerpc} as the tests.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(agilerpc.__file__))
    return env


class IntegrationTests(SynchronousTestCase):
    """
    L{TcpRpcClient} against a real C{twistd -n agilerpc} subprocess.
    """

    def client(self, port: int, timeout: float = WAIT) -> TcpRpcClient:
        client = TcpRpcClient("127.0.0.1", port, timeout=timeout)
        self.addCleanup(client.close)
        return client

    def test_agileutilClientScript(self) -> None:
        """
        The agileutil article's client script, unchanged but for its import
        line, with the sleep-then-call repeated three times past a keepalive
        of 1 s: every call is answered.
        """
        server = ServerProcess.start(self, keepalive=1)
        script = self.mktemp() + ".py"
        with open(script, "w", encoding="utf-8") as f:
            f.write(AGILEUTIL_CLIENT_SCRIPT.format(port=server.port))
        done = subprocess.run(
            [sys.executable, script],
            capture_output=True,
            env=packageEnvironment(),
            timeout=30,
        )
        self.assertEqual(
            (done.returncode, done.stdout, done.stderr),
            (0, b"resp hello zhangsan\n" * 4, b""),
        )

    def test_reconnectAfterIdleClose(self) -> None:
        """
        After the server closed an idle connection with a goaway, the next
        call runs once on a new connection.
        """
        server = ServerProcess.start(self, keepalive=1)
        client = self.client(server.port)
        self.assertEqual(client.call("sayHello", ("a",)), "hello a")
        first = client._connection
        time.sleep(1.5)
        self.assertEqual(client.call("sayHello", ("b",)), "hello b")
        self.assertIsNot(client._connection, first)
        assert first is not None
        self.assertEqual(first.sock.fileno(), -1)

    def test_threads(self) -> None:
        """
        4 threads sharing one client against a real server (keepalive 1 s,
        with pauses past it) all get their own answers.
        """
        server = ServerProcess.start(self, keepalive=1)
        client = self.client(server.port)
        failures: list[str] = []

        def work(n: int) -> None:
            try:
                for i in range(100):
                    value = [n, i, b"\x00" * i]
                    result = client.call("echo", (value,))
                    if result != value:
                        failures.append(f"{value} got {result!r}")
                    if i == 50 and n == 0:
                        time.sleep(1.3)
            except BaseException as e:
                failures.append(repr(e))

        threads = [
            threading.Thread(target=work, args=(n,), daemon=True) for n in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertEqual(failures, [])

    def test_timeoutThenCall(self) -> None:
        """
        A call that times out raises L{TimeoutError}; the next call on the
        same connection gets its own answer, not the late one (here the
        server's C{Cancelled}).
        """
        server = ServerProcess.start(self)
        client = self.client(server.port, timeout=0.5)
        self.assertRaises(TimeoutError, client.call, "sleep", (1,))
        connection = client._connection
        self.assertEqual(client.call("echo", ("mine",)), "mine")
        self.assertIs(client._connection, connection)

    def test_killedMidCall(self) -> None:
        """
        A server killed while a call is in flight makes it raise
        L{agilerpc.CallLost}; it is not resent, and the next call
        reaches the server that replaced it.
        """
        ledger = os.path.abspath(self.mktemp())
        server = ServerProcess.start(self, ledger=ledger)
        client = self.client(server.port, timeout=10)
        self.assertEqual(client.call("incr", ("before",)), 1)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                client.call("sleep", (30,))
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        self.addCleanup(thread.join, WAIT)
        time.sleep(0.3)
        server.stop(signal.SIGKILL)
        thread.join(WAIT)
        self.assertEqual([type(e) for e in errors], [agilerpc.CallLost])
        replacement = ServerProcess.start(self, port=server.port, ledger=ledger)
        self.assertEqual(client.call("incr", ("after",)), 1)
        self.assertNotEqual(client.call("pid"), server.pid)
        self.assertEqual(client.call("pid"), replacement.pid)
        with open(ledger, encoding="utf-8") as f:
            self.assertEqual(f.read(), "before\nafter\n")

    def test_restartWhileCalling(self) -> None:
        """
        A client calling C{incr} with unique tokens without pause while the
        server is stopped with SIGTERM and started again on the same port,
        twice: no call fails, and every token is in the ledger exactly once.
        """
        ledger = os.path.abspath(self.mktemp())
        server = ServerProcess.start(self, ledger=ledger)
        port = server.port
        client = self.client(port, timeout=20)
        outcomes: list[tuple[str, str]] = []
        stop = threading.Event()
        progress = threading.Semaphore(0)

        def work() -> None:
            n = 0
            while not stop.is_set():
                token = f"t{n}"
                n += 1
                try:
                    client.call("incr", (token,))
                except BaseException as e:
                    outcomes.append((token, repr(e)))
                else:
                    outcomes.append((token, "ok"))
                progress.release()

        def waitForCalls(count: int) -> None:
            for _ in range(count):
                self.assertTrue(progress.acquire(timeout=30), "calls stopped")

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 30)
        self.addCleanup(stop.set)
        waitForCalls(100)
        pids = {server.pid}
        for _ in range(2):
            # twistd re-raises the signal once it has stopped cleanly.
            self.assertEqual(server.stop(signal.SIGTERM), -signal.SIGTERM)
            self.assertNotIn("Traceback", server.output())
            server = ServerProcess.start(self, port=port, ledger=ledger)
            pids.add(server.pid)
            waitForCalls(100)
        stop.set()
        thread.join(30)
        self.assertFalse(thread.is_alive())
        failed = [o for o in outcomes if o[1] != "ok"]
        self.assertEqual((len(failed), failed[:3]), (0, []))
        with open(ledger, encoding="utf-8") as f:
            ran = f.read().splitlines()
        self.assertEqual(sorted(ran), sorted(token for token, _ in outcomes))
        self.assertEqual(len(ran), len(set(ran)))
        self.assertEqual(len(pids), 3)
