# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Integration tests: a real C{twistd -n agilerpc} subprocess, started from the
installed package, called over loopback sockets with a raw frame client.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import __version__, _wire

from .serverprocess import ServerProcess


class ServerTests(SynchronousTestCase):
    """
    Calls to a server serving C{tests/handlers.py}.
    """

    def setUp(self) -> None:
        self.server = ServerProcess.start(self)
        self.client = self.server.connect(self)

    def test_hello(self) -> None:
        """
        The server's first frame is a hello with the protocol version, the
        keepalive, the maximum message size, the server's version and the
        features it supports beyond the base protocol.
        """
        self.assertEqual(
            self.client.receive(),
            [
                3,
                "hello",
                {
                    "protocol": 1,
                    "keepalive": 75.0,
                    "max_message_size": 8 * 1024 * 1024,
                    "server": f"agilerpc/{__version__}",
                    "features": ["stream", "deadline", "metadata"],
                    "max_metadata_size": 8192,
                },
            ],
        )

    def test_sayHello(self) -> None:
        """
        A request is answered with its result.
        """
        self.client.receiveHello()
        self.client.send([0, 42, "sayHello", ["zhangsan"]])
        self.assertEqual(self.client.receive(), [1, 42, None, "hello zhangsan"])

    def test_runsInServerProcess(self) -> None:
        """
        The handlers run in the server process, not in the test's.
        """
        self.assertEqual(self.client.call("pid"), [1, 1, None, self.server.pid])
        self.assertNotEqual(self.server.pid, os.getpid())

    def test_manyPipelined(self) -> None:
        """
        Many requests written at once are each answered once, with their own
        msgid and result.
        """
        self.client.receiveHello()
        count = 200
        self.client.sendRaw(
            b"".join(
                _wire.frame(_wire.encodeRequest(i, "add", [i, 1000]))
                for i in range(count)
            )
        )
        responses = [self.client.receive() for _ in range(count)]
        self.assertEqual(
            sorted(responses), [[1, i, None, i + 1000] for i in range(count)]
        )

    def test_outOfOrder(self) -> None:
        """
        Each response goes out when its call finishes: a slow call does not
        hold back faster calls sent after it.
        """
        self.client.receiveHello()
        self.client.sendRaw(
            _wire.frame(_wire.encodeRequest(1, "sleep", [0.4]))
            + _wire.frame(_wire.encodeRequest(2, "sleep", [0.1]))
            + _wire.frame(_wire.encodeRequest(3, "echo", ["now"]))
        )
        self.assertEqual(
            [self.client.receive() for _ in range(3)],
            [[1, 3, None, "now"], [1, 2, None, 0.1], [1, 1, None, 0.4]],
        )

    def test_methodNotFound(self) -> None:
        """
        A call to a method that is not served gets a C{MethodNotFound} error.
        """
        self.assertEqual(
            self.client.call("nope"),
            [
                1,
                1,
                {"type": "MethodNotFound", "message": "no method named 'nope'"},
                None,
            ],
        )

    def test_handlerRaises(self) -> None:
        """
        An exception raised by a handler is sent as its class name and
        message, without a traceback.
        """
        self.assertEqual(
            self.client.call("fail", "boom"),
            [1, 1, {"type": "ValueError", "message": "boom"}, None],
        )

    def test_malformedFrame(self) -> None:
        """
        A frame that is not msgpack gets an C{InvalidRequest} error with a nil
        msgid, and the connection stays usable.
        """
        self.client.receiveHello()
        self.client.sendRaw(_wire.frame(b"\xc1"))
        response = self.client.receive()
        self.assertEqual(response[:2], [1, None])
        self.assertEqual(response[2]["type"], "InvalidRequest")
        self.assertIsNone(response[3])
        self.assertEqual(self.client.call("sayHello", "x"), [1, 1, None, "hello x"])

    def test_malformedRequest(self) -> None:
        """
        A request of the wrong shape gets an C{InvalidRequest} error for its
        msgid, and the connection stays usable.
        """
        self.client.receiveHello()
        self.client.send([0, 5, "sayHello", "not an array"])
        self.assertEqual(
            self.client.receive(),
            [
                1,
                5,
                {
                    "type": "InvalidRequest",
                    "message": "args must be an array",
                    "data": {"msgid": 5},
                },
                None,
            ],
        )
        self.assertEqual(self.client.call("echo", 7), [1, 1, None, 7])

    def test_oversizedFrame(self) -> None:
        """
        A frame header above the maximum message size gets a
        C{MessageTooLarge} error and a goaway, then the server closes that
        connection; other connections go on working.
        """
        other = self.server.connect(self)
        other.receiveHello()
        self.client.receiveHello()
        self.client.sendRaw(struct.pack(">I", 8 * 1024 * 1024 + 1))
        error = self.client.receive()
        self.assertEqual(error[:2], [1, None])
        self.assertEqual(error[2]["type"], "MessageTooLarge")
        self.assertEqual(self.client.receive(), [3, "goaway", None, "MessageTooLarge"])
        self.assertTrue(self.client.atEOF())
        self.client.close()
        self.assertEqual(other.call("sayHello", "y"), [1, 1, None, "hello y"])


class LedgerTests(SynchronousTestCase):
    """
    The C{incr} handler counts its runs, in the process and in a ledger file.
    """

    def test_incr(self) -> None:
        """
        C{incr} returns how many times this process ran it, and appends each
        token to the ledger, across a restart on the same port.
        """
        ledger = os.path.abspath(self.mktemp())
        server = ServerProcess.start(self, ledger=ledger)
        client = server.connect(self)
        self.assertEqual(client.call("incr", "a"), [1, 1, None, 1])
        self.assertEqual(client.call("incr", "b"), [1, 2, None, 2])
        client.close()
        server.stop(signal.SIGKILL)

        again = ServerProcess.start(self, ledger=ledger, port=server.port)
        self.assertEqual(again.port, server.port)
        self.assertNotEqual(again.pid, server.pid)
        client = again.connect(self)
        self.assertEqual(client.call("incr", "c"), [1, 1, None, 1])
        with open(ledger, encoding="utf-8") as f:
            self.assertEqual(f.read(), "a\nb\nc\n")


class KeepaliveTests(SynchronousTestCase):
    """
    A server with a 1 second keepalive.
    """

    def test_idleGoaway(self) -> None:
        """
        A connection idle for the keepalive gets a goaway naming the last
        msgid, then end of file.
        """
        server = ServerProcess.start(self, keepalive=1)
        client = server.connect(self)
        self.assertEqual(client.receiveHello()["keepalive"], 1.0)
        self.assertEqual(client.call("echo", 1), [1, 1, None, 1])
        answered = time.monotonic()
        self.assertEqual(client.receive(), [3, "goaway", 1, "idle"])
        idle = time.monotonic() - answered
        self.assertTrue(0.5 < idle < 4.5, f"goaway after {idle}s")
        self.assertTrue(client.atEOF())

    def test_idleFromConnect(self) -> None:
        """
        A connection that never sends anything gets a goaway with a nil
        msgid.
        """
        server = ServerProcess.start(self, keepalive=1)
        client = server.connect(self)
        client.receiveHello()
        self.assertEqual(client.receive(), [3, "goaway", None, "idle"])
        self.assertTrue(client.atEOF())


class ShutdownTests(SynchronousTestCase):
    """
    Stopping a server with SIGTERM.
    """

    def test_sigtermWithCallInFlight(self) -> None:
        """
        On SIGTERM the server sends a goaway naming the last dispatched call,
        still answers the call in flight, closes, and shuts down cleanly.
        """
        server = ServerProcess.start(self)
        client = server.connect(self)
        client.receiveHello()
        self.assertEqual(client.request("sleep", 0.5), 1)
        # Requests are dispatched in order: once 2 is answered, 1 is running.
        self.assertEqual(client.call("echo", "x"), [1, 2, None, "x"])
        os.kill(server.pid, signal.SIGTERM)
        self.assertEqual(client.receive(), [3, "goaway", 2, "shutdown"])
        self.assertEqual(client.receive(), [1, 1, None, 0.5])
        self.assertTrue(client.atEOF())
        client.close()
        # twistd exits by the signal it was stopped with, once shut down.
        self.assertEqual(server.wait(10), -signal.SIGTERM)
        self.assertIn("Server Shut Down.", server.output())
        self.assertNotIn("Traceback", server.output())


class HarnessTests(SynchronousTestCase):
    """
    L{ServerProcess} itself, as other integration tests rely on it.
    """

    def test_restartWaitsForPort(self) -> None:
        """
        Starting on a port that is still in use retries until it is free.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port: int = holder.getsockname()[1]
        mktemp = self.mktemp
        attempts: list[int] = []

        def countingMktemp() -> str:
            # Each attempt starts in a fresh directory: free the port once
            # the first attempt has failed.
            attempts.append(port)
            if len(attempts) == 2:
                holder.close()
            return str(mktemp())

        self.patch(self, "mktemp", countingMktemp)
        server = ServerProcess.start(self, port=port)
        self.assertEqual((server.port, server.attempts), (port, 2))
        client = server.connect(self)
        self.assertEqual(client.call("pid"), [1, 1, None, server.pid])

    def test_startFailureReported(self) -> None:
        """
        A server that exits before listening is reported with its output.
        """
        error = self.assertRaises(
            AssertionError,
            ServerProcess.start,
            self,
            module="agilerpc_no_such_module",
        )
        self.assertIn("exited with code 1", str(error))
        self.assertIn("--module agilerpc_no_such_module: cannot import it", str(error))
