# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for the total budget of buffered input (C{maxInputTotal},
C{--max-input-total}): what connections hold of unfinished frames is counted
together, and past the budget the connections holding the most lose it with
a C{ServerBusy} goaway.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from typing import Any
from unittest import SkipTest

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import LogLevel
from twisted.python import log
from twisted.trial.unittest import SynchronousTestCase, TestCase

from agilerpc import RpcClient, RpcServerFactory, _wire
from agilerpc._heap import TRIM, HeapTrimmer
from agilerpc.metrics import ServerMetrics

from .serverhelpers import Connection, ServerTestCase, encode
from .serverprocess import STRESS, ServerProcess, rssKiB, scale

MiB = 1024 * 1024


def partial(size: int, msgid: int = 1) -> tuple[bytes, bytes]:
    """
    A request frame of C{size} bytes in all, split after 4 bytes less than
    its end: the first part, the last 4 bytes.
    """
    for overhead in range(10, 20):
        frame = encode([0, msgid, "echo", ["x" * (size - overhead)]])
        if len(frame) == size:
            return frame[:-4], frame[-4:]
    raise ValueError(size)  # pragma: no cover


class InputBudgetTests(ServerTestCase):
    """
    Connections of one factory share the budget of buffered input.
    """

    def held(self, connection: Connection) -> int:
        return connection.protocol.factory.inputBudget.held(connection.protocol)

    def test_largestHolderRefused(self) -> None:
        """
        When a chunk takes the buffered input of all connections past the
        budget, the connection holding the most gets a C{ServerBusy} goaway
        and its input is dropped; the others keep theirs and are served.
        """
        self.makeFactory(maxInputTotal=1004, keepalive=0)
        a, b, c = (
            Connection(self.factory),
            Connection(self.factory),
            Connection(self.factory),
        )
        headA, tailA = partial(304, 1)
        headB, _ = partial(404, 2)
        headC, tailC = partial(354, 3)
        a.sendBytes(headA)
        b.sendBytes(headB)
        self.assertEqual(self.factory.inputBudget.total, 700)
        c.sendBytes(headC)
        self.assertEqual(b.received(), [[3, "goaway", None, "ServerBusy"]])
        self.assertEqual(b.transport.closes, ["loseWriteConnection"])
        self.assertEqual(self.factory.inputBudget.total, 650)
        self.assertEqual((self.held(a), self.held(b), self.held(c)), (300, 0, 350))
        a.sendBytes(tailA)
        c.sendBytes(tailC)
        self.assertEqual([m[:2] for m in a.received()], [[1, 1]])
        self.assertEqual([m[:2] for m in c.received()], [[1, 3]])
        self.assertEqual(self.factory.inputBudget.total, 0)

    def test_chunkThatTipsItselfRefused(self) -> None:
        """
        The connection whose own chunk passes the budget is refused when it
        is the one holding the most.
        """
        self.makeFactory(maxInputTotal=504, maxMessageSize=500, keepalive=0)
        a, b = Connection(self.factory), Connection(self.factory)
        a.sendBytes(partial(204)[0])
        b.sendBytes(partial(504)[0][:400])
        self.assertEqual(a.received(), [])
        self.assertEqual(b.received(), [[3, "goaway", None, "ServerBusy"]])
        self.assertEqual(self.factory.inputBudget.total, 200)

    def test_heldCountsEveryChunk(self) -> None:
        """
        A frame arriving in many chunks is charged as its bytes stay
        buffered, chunk by chunk, so a connection dribbling a frame is
        refused once it passes the budget.
        """
        self.makeFactory(maxInputTotal=504, maxMessageSize=500, keepalive=0)
        other = Connection(self.factory)
        other.sendBytes(partial(104)[0])
        connection = Connection(self.factory)
        head = partial(504)[0]
        for start in range(0, 400, 100):
            connection.sendBytes(head[start : start + 100])
            self.assertEqual(self.held(connection), start + 100)
        self.assertEqual(connection.received(), [])
        connection.sendBytes(head[400:405])
        self.assertEqual(connection.received(), [[3, "goaway", None, "ServerBusy"]])
        self.assertEqual(self.factory.inputBudget.total, 100)
        connection.sendBytes(head[405:])
        self.assertEqual(self.factory.inputBudget.total, 100)

    def test_goawayNamesLastDispatched(self) -> None:
        """
        The goaway names the last request dispatched: the refused frame was
        never dispatched, so its client may resend it.  Calls outstanding
        are still answered, then the connection half-closes.
        """
        self.makeFactory(maxInputTotal=304, maxMessageSize=300, keepalive=0)
        Connection(self.factory).sendBytes(partial(104)[0])
        connection = Connection(self.factory)
        connection.request(1, "later", "a")
        connection.sendBytes(partial(304, 2)[0])
        self.assertEqual(connection.received(), [[3, "goaway", 1, "ServerBusy"]])
        self.assertEqual(connection.transport.closes, [])
        self.pending["a"].callback("done")
        self.assertEqual(connection.received(), [[1, 1, None, "done"]])
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])
        self.assertEqual(self.calls, ["a"])

    def test_wholeFramesNotCharged(self) -> None:
        """
        Frames that arrive whole are never charged, however large: a budget
        smaller than one chunk does not touch a client that sends whole
        frames, several per chunk or one.
        """
        self.makeFactory(maxInputTotal=604, maxMessageSize=600, keepalive=0)
        connection = Connection(self.factory)
        frames = [encode([0, i, "echo", ["x" * 500]]) for i in range(1, 4)]
        connection.sendBytes(b"".join(frames[:2]))
        connection.sendBytes(frames[2])
        self.assertEqual([m[1] for m in connection.received()], [1, 2, 3])
        self.assertEqual(self.factory.inputBudget.evictions, 0)
        self.assertEqual(len(self.factory.inputBudget), 0)

    def test_releasedOnCompletion(self) -> None:
        """
        A completed frame gives its bytes back; what follows it in the same
        chunk is charged instead.
        """
        self.makeFactory(maxInputTotal=1004, keepalive=0)
        connection = Connection(self.factory)
        head, tail = partial(304, 1)
        nextHead = partial(204, 2)[0]
        connection.sendBytes(head)
        self.assertEqual(self.factory.inputBudget.total, 300)
        connection.sendBytes(tail + nextHead)
        self.assertEqual(self.factory.inputBudget.total, 200)
        self.assertEqual([m[1] for m in connection.received()], [1])

    def test_releasedOnClose(self) -> None:
        """
        A connection lost with part of a frame gives it back.
        """
        self.makeFactory(maxInputTotal=1004, keepalive=0)
        connection = Connection(self.factory)
        connection.sendBytes(partial(304)[0])
        connection.lost()
        self.assertEqual(self.factory.inputBudget.total, 0)
        self.assertEqual(len(self.factory.inputBudget), 0)

    def test_releasedOnEndOfInput(self) -> None:
        """
        A client that closes its side with part of a frame sent gives it
        back at once (the part is dropped).
        """
        self.makeFactory(maxInputTotal=1004, keepalive=0)
        connection = Connection(self.factory)
        connection.sendBytes(partial(304)[0])
        connection.clientCloses()
        self.assertEqual(self.factory.inputBudget.total, 0)

    def test_releasedOnFrameTimeout(self) -> None:
        """
        A frame dropped for its frame timeout gives its bytes back.
        """
        self.makeFactory(maxInputTotal=1004, keepalive=0, frameTimeout=3.0)
        connection = Connection(self.factory)
        connection.sendBytes(partial(304)[0])
        self.reactor.advance(3.0)
        self.assertEqual(connection.received(), [[3, "goaway", None, "FrameTimeout"]])
        self.assertEqual(self.factory.inputBudget.total, 0)

    def test_releasedOnRefusedFrame(self) -> None:
        """
        A frame refused for its size drops what was buffered before it.
        """
        self.makeFactory(maxInputTotal=1004, keepalive=0)
        connection = Connection(self.factory)
        connection.sendBytes(partial(304)[0])
        connection.sendBytes(b"\x00" * 4 + b"\x00\x01\x00\x00")
        self.assertEqual(self.factory.inputBudget.total, 0)

    def test_pausedInputCharged(self) -> None:
        """
        Whole frames kept while the server does not read (calls in flight at
        the limit) are held input too, and given back once parsed.
        """
        self.makeFactory(maxInputTotal=1004, keepalive=0, maxInFlight=1)
        connection = Connection(self.factory)
        connection.request(1, "later", "a")
        waiting = encode([0, 2, "echo", [2]])
        connection.sendBytes(waiting)
        self.assertEqual(self.factory.inputBudget.total, len(waiting))
        self.pending["a"].callback("done")
        self.assertEqual([m[1] for m in connection.received()], [1, 2])
        self.assertEqual(self.factory.inputBudget.total, 0)

    def test_noLimit(self) -> None:
        """
        Without a budget (L{None}), buffered input is still counted, and
        nothing is refused.
        """
        self.makeFactory(maxInputTotal=None, keepalive=0)
        connections = [Connection(self.factory) for _ in range(5)]
        for connection in connections:
            connection.sendBytes(partial(904)[0])
        self.assertEqual(self.factory.inputBudget.total, 4500)
        self.assertEqual(self.factory.inputBudget.evictions, 0)

    def test_defaultLimit(self) -> None:
        """
        The default budget is 1 GiB.
        """
        self.assertEqual(self.makeFactory().inputBudget.limit, 1024**3)

    def test_invalidLimit(self) -> None:
        """
        A budget that cannot hold one frame of the maximum size (its header
        included) is a configuration error: a client sending such a frame
        would be refused on every attempt.  L{None}: no limit.
        """
        for limit in [-1, 0, 1003]:
            e = self.assertRaises(
                ValueError, self.makeFactory, maxInputTotal=limit, maxMessageSize=1000
            )
            self.assertIn("maxMessageSize + 4", str(e))
        self.makeFactory(maxInputTotal=1004, maxMessageSize=1000)

    def test_loggedAndCounted(self) -> None:
        """
        A refusal is logged as a warning naming the option, counted by the
        observers as an C{InputBudget} refusal, and its goaway as
        C{ServerBusy}.
        """
        events = self.captureLogs()
        metrics = ServerMetrics()
        self.makeFactory(
            maxInputTotal=304, maxMessageSize=300, keepalive=0, observers=[metrics]
        )
        Connection(self.factory).sendBytes(partial(104)[0])
        connection = Connection(self.factory)
        connection.sendBytes(partial(304)[0])
        self.assertEqual(metrics.refused["InputBudget"], 1)
        self.assertEqual(metrics.goaways, {"ServerBusy": 1})
        [event] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn("--max-input-total", event["log_format"])

    def test_stats(self) -> None:
        """
        C{system.stats} says how many bytes of input connections hold now.
        """
        self.makeFactory(maxInputTotal=1004, keepalive=0)
        holder = Connection(self.factory)
        holder.sendBytes(partial(304)[0])
        [[_, _, _, stats]] = Connection(self.factory).call(1, "system.stats")
        self.assertEqual(stats["buffered_input_bytes"], 300)


class InputBudgetMetricsTests(ServerTestCase):
    """
    The Prometheus collector reports the buffered input as a gauge.
    """

    def test_gauge(self) -> None:
        """
        C{agilerpc_server_buffered_input_bytes} is what the open connections
        hold now.
        """
        from prometheus_client import CollectorRegistry

        from agilerpc.metrics import ServerCollector

        metrics = ServerMetrics()
        self.makeFactory(maxInputTotal=1004, keepalive=0, observers=[metrics])
        Connection(self.factory).sendBytes(partial(304)[0])
        Connection(self.factory).sendBytes(partial(204)[0])
        registry = CollectorRegistry()
        registry.register(ServerCollector(metrics))
        value: Any = registry.get_sample_value("agilerpc_server_buffered_input_bytes")
        self.assertEqual(value, 500)


class HeapTrimTests(ServerTestCase):
    """
    Once a large amount of buffered input is freed, the heap is trimmed so
    that its memory goes back to the system.
    """

    def setUp(self) -> None:
        super().setUp()
        self.trimmed: list[None] = []
        self.makeFactory(maxInputTotal=None, keepalive=0)
        self.factory.heapTrimmer = HeapTrimmer(
            self.factory.inputBudget,
            self.reactor,
            lambda: self.trimmed.append(None),
            threshold=1000,
            delay=1.0,
        )

    def hold(self, count: int) -> list[Connection]:
        connections = [Connection(self.factory) for _ in range(count)]
        for connection in connections:
            connection.sendBytes(partial(304)[0])
        return connections

    def test_trimmedAfterBurst(self) -> None:
        """
        When connections that held at least the threshold together close,
        leaving half or less of the peak, the heap is trimmed once, after
        the delay.
        """
        connections = self.hold(5)
        for connection in connections[:3]:
            connection.lost()
        self.reactor.advance(0.999)
        self.assertEqual(self.trimmed, [])
        for connection in connections[3:]:
            connection.lost()
        self.reactor.advance(0.001)
        self.assertEqual(len(self.trimmed), 1)
        self.reactor.advance(10)
        self.assertEqual(len(self.trimmed), 1)
        self.assertEqual(self.factory.heapTrimmer.trims, 1)

    def test_notBelowThreshold(self) -> None:
        """
        Buffered input that never reached the threshold is left to the
        allocator.
        """
        for connection in self.hold(3):
            connection.lost()
        self.reactor.advance(10)
        self.assertEqual(self.trimmed, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_notWhileHalfHeld(self) -> None:
        """
        No trim while more than half of the peak is still held.
        """
        connections = self.hold(5)
        connections[0].lost()
        self.reactor.advance(10)
        self.assertEqual(self.trimmed, [])

    def test_notWhenHeldAgain(self) -> None:
        """
        Input held again before the delay passes reuses the memory: no trim.
        """
        connections = self.hold(5)
        for connection in connections:
            connection.lost()
        self.hold(3)
        self.reactor.advance(1.0)
        self.assertEqual(self.trimmed, [])

    def test_evictionsRelease(self) -> None:
        """
        Shares given up to the budget count as freed too.
        """
        self.factory.inputBudget.limit = 1200
        connections = self.hold(5)
        self.assertEqual(self.factory.inputBudget.total, 1200)
        for connection in connections:
            connection.lost()
        self.reactor.advance(1.0)
        self.assertEqual(len(self.trimmed), 1)

    def test_shutdownCancels(self) -> None:
        """
        A trim due when the server shuts down is cancelled.
        """
        for connection in self.hold(5):
            connection.lost()
        self.factory.shutdown()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_defaultTrim(self) -> None:
        """
        By default the factory trims with glibc's C{malloc_trim(0)} (this
        process's C library has it), after 64 MiB.
        """
        trimmer = RpcServerFactory(self.registry, self.reactor).heapTrimmer
        self.assertIs(trimmer.trim, TRIM)
        assert trimmer.trim is not None
        self.assertIsInstance(trimmer.trim(), int)
        self.assertEqual(trimmer.threshold, 64 * 1024 * 1024)

    def test_noTrim(self) -> None:
        """
        Without a trim function (a C library other than glibc), nothing is
        scheduled.
        """
        self.factory.heapTrimmer.trim = None
        for connection in self.hold(5):
            connection.lost()
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class InputBudgetIntegrationTests(SynchronousTestCase):
    """
    A real C{twistd agilerpc} flooded with connections that each hold most
    of a maximum-size frame (issue 13: 850 such connections took a server
    to +6 GiB, which it kept after they were gone).
    """

    def raiseFileLimit(self, needed: int) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < needed:
            wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
            raise SkipTest(f"needs {needed} file descriptors")  # pragma: no cover

    def test_floodOfUnfinishedFrames(self) -> None:
        """
        Connections each sending 90% of an 8 MiB frame, interleaved: the
        server's RSS stays within the budget plus a margin, the connections
        holding the most are refused (C{system.stats} counts them), another
        client is served all along, and once they close the RSS comes back.
        """
        count = scale(60, 1000)
        # The default budget (1 GiB) at full size; short, a smaller one.
        budget = scale(256 * MiB, 1024 * MiB)
        options = () if STRESS else ("--max-input-total", str(budget))
        self.raiseFileLimit(count + 100)
        server = ServerProcess.start(self, *options)
        other = server.connect(self)
        other.receiveHello()
        self.assertEqual(other.call("echo", "warm")[3], "warm")
        before = rssKiB(server.pid) * 1024

        frame = _wire.frame(_wire.encodeRequest(1, "echo", [b"x" * (8 * MiB - 64)]))
        part = frame[: len(frame) * 9 // 10]
        holders: list[socket.socket | None] = []
        for _ in range(count):
            holder = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            self.addCleanup(holder.close)
            holders.append(holder)
        peak = before
        slowest = 0.0
        step = 256 * 1024
        for offset in range(0, len(part), step):
            for i, sock in enumerate(holders):
                if sock is None:
                    continue
                try:
                    sock.sendall(part[offset : offset + step])
                except OSError:
                    # Refused a while ago: the server stopped lingering.
                    sock.close()
                    holders[i] = None
            started = time.monotonic()
            self.assertEqual(other.call("echo", offset)[3], offset)
            slowest = max(slowest, time.monotonic() - started)
            peak = max(peak, rssKiB(server.pid) * 1024)

        # Wait for the server to have read it all: what it holds stops moving.
        stats = other.call("system.stats")[3]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            peak = max(peak, rssKiB(server.pid) * 1024)
            latest = other.call("system.stats")[3]
            if latest == {**stats, "uptime": latest["uptime"]}:
                break
            stats = latest
        held = stats["buffered_input_bytes"]
        refusals = stats["buffered_input_refusals"]

        for sock in holders:
            if sock is not None:
                sock.close()
        deadline = time.monotonic() + 30
        while other.call("system.stats")[3]["connections"] > 1:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        # The trim runs once the held input has settled for a second.
        deadline = time.monotonic() + 10
        after = rssKiB(server.pid) * 1024
        while after - before > 48 * MiB and time.monotonic() < deadline:
            time.sleep(0.2)
            after = rssKiB(server.pid) * 1024
        self.assertEqual(other.call("echo", "after")[3], "after")
        report = (
            f"{count} connections x {len(part)} bytes, budget {budget}: "
            f"RSS before {before // MiB} MiB, peak +{(peak - before) // MiB} MiB, "
            f"{refusals} refused, held {held // MiB} MiB, "
            f"after +{(after - before) // MiB} MiB; slowest echo {slowest:.3f}s"
        )
        if STRESS:
            print("\n" + report)
        else:
            log.msg(report)
        self.assertLessEqual(held, budget, report)
        # Each refusal freed at most one holder's part.
        self.assertGreaterEqual(refusals, (count * len(part) - budget) // len(part))
        # What the heap needs besides the bytes held, under churn: a quarter.
        self.assertLess(peak - before, budget * 5 // 4, report)
        self.assertLess(peak, 2 * 1024 * MiB, report)
        self.assertLess(slowest, 2.0, report)
        self.assertIn("--max-input-total", server.output())
        self.assertLess(after - before, 48 * MiB, report)


class EvictedCallTests(TestCase):
    """
    A call whose frame is dropped for the input budget is provably unrun:
    the client sends it again, and it runs once.
    """

    timeout = 60

    @inlineCallbacks
    def test_evictedCallResentAndRunOnce(self) -> Any:
        """
        While four other connections hold unfinished frames, a client's large
        call takes the total past the budget and, holding the most, is
        refused with a C{ServerBusy} goaway; the client resends it on new
        connections until the others are gone, and it runs exactly once.
        """
        ledger = os.path.abspath(self.mktemp())
        size = 1024 * 1024
        budget = size + 4 + 400_000
        server = ServerProcess.start(
            self,
            "--max-message-size",
            str(size),
            "--max-input-total",
            str(budget),
            ledger=ledger,
        )
        # Together they leave the call less than its size minus one read
        # (64 KiB): it cannot complete with the read that passes the budget.
        hogs = []
        for _ in range(4):
            hog = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            self.addCleanup(hog.close)
            hog.sendall(_wire.HEADER.pack(size) + b"x" * 200_000)
            hogs.append(hog)
        watcher = server.connect(self)
        watcher.receiveHello()
        deadline = time.monotonic() + 10
        while watcher.call("system.stats")[3]["buffered_input_bytes"] < 800_016:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)

        client = RpcClient(reactor, "127.0.0.1", server.port)
        self.addCleanup(client.close, 1)
        token = "t" * 900_000
        call = client.callRemote("incr", token)
        yield deferLater(reactor, 1.0, lambda: None)
        refusals = watcher.call("system.stats")[3]["buffered_input_refusals"]
        self.assertGreaterEqual(refusals, 1)
        self.assertFalse(call.called)
        for hog in hogs:
            hog.close()
        result = yield call
        self.assertEqual(result, 1)
        with open(ledger, encoding="utf-8") as f:
            self.assertEqual(f.read(), token + "\n")
        stats = watcher.call("system.stats")[3]
        self.assertEqual(stats["buffered_input_bytes"], 0)
