"""
Safe retries in L{agilerpc.TcpRpcClient}: an idempotent call lost in flight
is sent again on a new connection, as the L{agilerpc.RetryPolicy} says, and
nothing else ever is.  In memory: a scripted server behind in-memory
sockets (L{tests.clienthelpers.MemoryServer}), the backoff recorded rather
than slept.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import (
    CallLost,
    ClientClosed,
    NotIdempotent,
    RemoteError,
    RetryPolicy,
    TcpRpcClient,
    _wire,
)

from .clienthelpers import MemoryServer, MemorySocket, echo


def losing(lose: int, runs: list[int] | None = None) -> Any:
    """
    A script: the first C{lose} connections end with the request in flight
    (after "running" it: its connection index goes to C{runs}); later ones
    echo.
    """

    def script(sock: MemorySocket, message: Any) -> None:
        if message[0] != 0:
            return
        if runs is not None:
            runs.append(sock.index)
        if sock.index < lose:
            sock.end()
        else:
            echo(sock, message)

    return script


class BlockingRetryTests(SynchronousTestCase):
    """
    L{TcpRpcClient.call} with C{idempotent}.
    """

    def client(self, server: MemoryServer, **options: Any) -> TcpRpcClient:
        options.setdefault("timeout", 5)
        options.setdefault("retryPolicy", RetryPolicy(jitter=0))
        client = TcpRpcClient("memory.invalid", 9988, socketFactory=server, **options)
        self.delays: list[float] = []
        client._sleep = self.delays.append
        return client

    def test_notRetriedWithoutIdempotent(self) -> None:
        """
        A call not declared idempotent raises CallLost and is not sent
        again.
        """
        runs: list[int] = []
        server = MemoryServer(script=losing(1, runs))
        c = self.client(server, idempotent={"other"})
        e = self.assertRaises(CallLost, c.call, "echo", ("a",))
        self.assertIn("may or may not have run", str(e))
        self.assertEqual((runs, self.delays, c.retries), ([0], [], 0))

    def test_idempotentRetried(self) -> None:
        """
        C{call(..., idempotent=True)} lost in flight is sent again on a new
        connection after the policy's backoff, and returns its answer.
        """
        runs: list[int] = []
        server = MemoryServer(script=losing(1, runs))
        c = self.client(server)
        self.assertEqual(c.call("echo", ("a",), idempotent=True), "a")
        self.assertEqual((runs, self.delays, c.retries), ([0, 1], [0.05], 1))
        self.assertEqual(
            [sock.received for sock in server.connections],
            [[[0, 0, "echo", ["a"]]], [[0, 0, "echo", ["a"]]]],
        )

    def test_clientSet(self) -> None:
        """
        A method of the client's C{idempotent} set is retried;
        C{idempotent=False} on the call overrides the set.
        """
        runs: list[int] = []
        server = MemoryServer(script=losing(2, runs))
        c = self.client(server, idempotent=["echo"])
        self.assertRaises(CallLost, c.call, "echo", ("a",), idempotent=False)
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual((runs, c.retries), ([0, 1, 2], 1))

    def test_attemptsAndBackoff(self) -> None:
        """
        The client waits the policy's backoffs between attempts (0.05, then
        0.1 s), and raises CallLost saying so when the last is lost too.
        """
        runs: list[int] = []
        server = MemoryServer(script=losing(10, runs))
        c = self.client(server)
        e = self.assertRaises(CallLost, c.call, "echo", ("a",), idempotent=True)
        self.assertIn(
            "it was sent 3 times, each time lost in flight, the most its retry "
            "policy allows (maxAttempts=3)",
            str(e),
        )
        self.assertEqual((runs, self.delays, c.retries), ([0, 1, 2], [0.05, 0.1], 2))

    def test_deadline(self) -> None:
        """
        No retry is made that would start past the call's deadline: the
        call raises CallLost at once, saying so.
        """
        runs: list[int] = []
        server = MemoryServer(script=losing(10, runs))
        c = self.client(
            server, retryPolicy=RetryPolicy(initialBackoff=2, maxBackoff=2, jitter=0)
        )
        e = self.assertRaises(
            CallLost, c.call, "echo", ("a",), idempotent=True, timeout=1
        )
        self.assertIn("its deadline would pass", str(e))
        self.assertEqual((runs, self.delays), ([0], []))

    def test_remoteErrorNotRetried(self) -> None:
        """
        An idempotent call the server answered with an error raises it, and
        is sent once.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            sock.send_([1, message[1], {"type": "ValueError", "message": "no"}, None])

        server = MemoryServer(script=script)
        c = self.client(server)
        self.assertRaises(RemoteError, c.call, "echo", ("a",), idempotent=True)
        self.assertEqual((len(server.connections), self.delays), (1, []))

    def test_protocolViolationRetried(self) -> None:
        """
        A server that breaks the protocol with the call in flight loses it:
        an idempotent one is sent again on a new connection.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            if sock.index == 0:
                sock.sendRaw(_wire.frame(_wire.pack([9, "what"])))
            else:
                echo(sock, message)

        server = MemoryServer(script=script)
        c = self.client(server)
        self.assertEqual(c.call("echo", ("a",), idempotent=True), "a")
        self.assertEqual((len(server.connections), c.retries), (2, 1))

    def test_closedDuringBackoff(self) -> None:
        """
        A client closed (by another thread) while a call waits for its
        backoff raises ClientClosed, and does not send it again.
        """
        server = MemoryServer(script=losing(10))
        c = self.client(server)
        closer = threading.Thread(target=c.close)

        def sleep(delay: float) -> None:
            # close() marks the client closed at once, then waits for the
            # lock this thread holds.
            closer.start()
            for _ in range(500):
                if c._closed:
                    return
                time.sleep(0.01)
            raise AssertionError("close() did not start")

        c._sleep = sleep
        e = self.assertRaises(ClientClosed, c.call, "echo", ("a",), idempotent=True)
        closer.join(5)
        self.assertIn("may or may not have run", str(e))
        self.assertEqual((len(server.connections), c.retries), (1, 0))


class BlockingDescribeTests(SynchronousTestCase):
    """
    L{TcpRpcClient.describe}.
    """

    def test_refusesNotIdempotent(self) -> None:
        """
        After describe(), a call asking to be retried of a method the server
        described as not idempotent raises NotIdempotent and is not sent;
        without the option it goes out.
        """
        description = {
            "get": {"signature": "()", "doc": "", "idempotent": True},
            "put": {"signature": "()", "doc": "", "idempotent": False},
        }

        def script(sock: MemorySocket, message: Any) -> None:
            if message[2] == "system.describe":
                sock.send_([1, message[1], None, description])
            else:
                echo(sock, message)

        server = MemoryServer(script=script)
        c = TcpRpcClient(
            "memory.invalid", 9988, timeout=5, socketFactory=server, idempotent={"put"}
        )
        self.assertEqual(c.describe(), description)
        self.assertRaises(NotIdempotent, c.call, "put", ("x",))
        self.assertRaises(NotIdempotent, c.call, "put", ("x",), idempotent=True)
        self.assertEqual(c.call("get", ("y",), idempotent=True), "y")
        self.assertEqual(c.call("put", ("z",), idempotent=False), "z")
        self.assertEqual(
            [m[2:4] for m in server.connections[0].received],
            [["system.describe", []], ["get", ["y"]], ["put", ["z"]]],
        )

    def test_badArguments(self) -> None:
        """
        A bare string as the idempotent set, or a policy that is not a
        RetryPolicy, is a TypeError.
        """
        with self.assertRaises(TypeError):
            TcpRpcClient("h", 1, idempotent="get")
        with self.assertRaises(TypeError):
            TcpRpcClient("h", 1, retryPolicy=0.5)  # type: ignore[arg-type]
