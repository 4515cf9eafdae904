# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Integration tests against C{twistd agilerpc} for the hostile inputs of issue
13 whose deterministic tests live with the code they test (C{test_server},
C{test_limits}, C{test_peerlog}, C{test_examples}, C{test_cli}): a frame
dribbled while a call is outstanding (item 4), a message of millions of
empty arrays (item 5), notifications that would amplify the log (item 6),
and the small ones (item 7).  Full size under C{AGILERPC_STRESS=1}
(C{tox -e stress}).
"""

from __future__ import annotations

import io
import struct
import time
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import _cli, _wire

from .serverprocess import RawClient, ServerProcess, rssKiB, scale


def _untilGoaway(client: RawClient, timeout: float) -> list[object]:
    """
    The goaway the server sends next, skipping probes.
    """
    client.sock.settimeout(timeout)
    while True:
        message = client.receive()
        if message[:2] == [3, "goaway"]:
            return message


class FrameTimeoutIntegrationTests(SynchronousTestCase):
    """
    Item 4: a started frame must complete within C{--frame-timeout}, even
    while a call is outstanding on its connection.
    """

    def test_dribblersCutWhileCallOutstanding(self) -> None:
        """
        Connections that each hold most of a large frame, with a slow call
        outstanding, get a C{FrameTimeout} goaway after the frame timeout
        though the keepalive is longer, and their memory is released.
        """
        count = scale(5, 20)
        held = scale(256 * 1024, int(7.2 * 1024 * 1024))
        server = ServerProcess.start(
            self, "--frame-timeout", "1", "--max-message-size", str(8 * 2**20)
        )
        before = rssKiB(server.pid)
        clients = []
        for _ in range(count):
            client = server.connect(self)
            client.receiveHello()
            slow = client.request("sleep", 30)
            # Most of a frame announced as 8 MiB.
            client.sendRaw(struct.pack(">I", 8 * 2**20) + b"\x00" * held)
            clients.append((client, slow))
        started = time.monotonic()
        for client, slow in clients:
            goaway = _untilGoaway(client, 10)
            self.assertEqual(goaway, [3, "goaway", slow, "FrameTimeout"])
        took = time.monotonic() - started
        self.assertLess(took, 5.0, "not cut by the frame timeout")
        other = server.connect(self)
        other.receiveHello()
        self.assertEqual(other.call("echo", "served")[3], "served")
        # The memory they held goes back to the system (--max-input-total's
        # trim, a second after a burst is freed).
        bound = max(16 * 1024, count * held // 1024 // 10)
        deadline = time.monotonic() + 5
        while rssKiB(server.pid) - before > bound and time.monotonic() < deadline:
            time.sleep(0.1)
        after = rssKiB(server.pid)
        print(
            f"{count} x {held} bytes held: cut after {took:.2f}s; "
            f"RSS {before} KiB before, {after} after"
        )
        self.assertLess(after - before, bound)


class ContainersIntegrationTests(SynchronousTestCase):
    """
    Item 5: a message of millions of empty arrays is refused before it is
    built, and stalls nobody.
    """

    def test_millionsOfEmptyArrays(self) -> None:
        """
        An 8 MiB request holding about eight million empty arrays is refused
        with C{InvalidRequest} naming its msgid; the server's memory hardly
        moves and another client's call is answered promptly meanwhile.
        """
        server = ServerProcess.start(self)
        other = server.connect(self)
        other.receiveHello()
        other.call("echo", "warm")
        before = rssKiB(server.pid)
        hostile = server.connect(self)
        hostile.receiveHello()
        count = 8 * 2**20 - 32
        # [0, 7, "echo", [[], [], ...]] with an array32 header.
        payload = b"\x94\x00\x07\xa4echo\xdd" + struct.pack(">I", count)
        payload += b"\x90" * count
        started = time.monotonic()
        hostile.sendRaw(_wire.frame(payload))
        response = hostile.receive()
        refusedAfter = time.monotonic() - started
        self.assertEqual(response[:2], [1, 7])
        self.assertEqual(response[2]["type"], "InvalidRequest")
        started = time.monotonic()
        self.assertEqual(other.call("echo", "still")[3], "still")
        answeredAfter = time.monotonic() - started
        grown = rssKiB(server.pid) - before
        print(
            f"refused after {refusedAfter:.3f}s (sending included); "
            f"another call then took {answeredAfter:.3f}s; RSS +{grown} KiB"
        )
        self.assertLess(answeredAfter, 1.0)
        self.assertLess(grown, 64 * 1024)


class LogAmplificationIntegrationTests(SynchronousTestCase):
    """
    Item 6: hostile input makes fewer log bytes than it sends.
    """

    def test_unknownNotificationsLogLessThanSent(self) -> None:
        """
        Many 12-byte notifications to an unknown method, from many
        connections of one host, make the server log fewer bytes than they
        took to send.
        """
        connections = scale(10, 100)
        each = scale(100, 1000)
        server = ServerProcess.start(self)
        probe = server.connect(self)
        probe.receiveHello()
        probe.call("echo", "warm")
        logged = len(server.output())
        notification = _wire.frame(_wire.pack([2, "nope", []]))
        sent = 0
        for _ in range(connections):
            client = server.connect(self)
            client.receiveHello()
            client.sendRaw(notification * each)
            sent += len(notification) * each
            self.assertEqual(client.call("echo", "after")[3], "after")
            client.close()
        probe.call("echo", "done")
        written = len(server.output()) - logged
        print(f"sent {sent} bytes of notifications; the server logged {written}")
        self.assertLess(written, sent)


class SmallOnesIntegrationTests(SynchronousTestCase):
    """
    Item 7, through the README's server and command line.
    """

    def _cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = _cli.main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def test_sleepRefusesNaN(self) -> None:
        """
        The example server's C{sleep} refuses C{nan} and C{-1} with
        C{InvalidParams} and logs no traceback.
        """
        server = ServerProcess.start(self, module="agilerpc.examples.hello")
        address = f"127.0.0.1:{server.port}"
        for value in ("nan", "-1"):
            status, _, err = self._cli("call", address, "sleep", value)
            self.assertEqual(status, 1)
            self.assertIn("InvalidParams", err)
        self.assertEqual(self._cli("call", address, "sleep", "0")[:2], (0, "0\n"))
        self.assertNotIn("Traceback", server.output())

    def test_deepResultPrinted(self) -> None:
        """
        C{agilerpc call} prints a result nested as deep as the protocol
        allows, without a RecursionError.
        """
        server = ServerProcess.start(self)
        status, out, err = self._cli(
            "call", f"127.0.0.1:{server.port}", "nested", "1022"
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, "[" * 1022 + "]" * 1022 + "\n")
