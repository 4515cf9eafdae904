# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for a client that goes while its calls are outstanding (issue 13,
item 1): its calls are cancelled and its connection stops counting at once,
while a client that only half-closed still gets its answers (PROTOCOL.md
7.4).

Deterministic tests drive L{RpcServerProtocol} with a recording transport
and a clock; integration tests run C{twistd agilerpc} and close real
sockets, at full size under C{AGILERPC_STRESS=1} (C{tox -e stress}).
"""

from __future__ import annotations

import socket
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import _server, _wire
from agilerpc.metrics import ServerMetrics

from .protocoldoc import loadVectors
from .serverhelpers import Connection, ServerTestCase
from .serverprocess import ServerProcess, rssKiB, scale

PROBE = [3, "probe"]
INTERVAL = _server.PROBE_INTERVAL


class GoneClientTests(ServerTestCase):
    """
    A connection lost with calls outstanding cancels them.
    """

    def setUp(self) -> None:
        super().setUp()
        self.cancelled: list[str] = []

        def waiting(key: str) -> Deferred[Any]:
            d: Deferred[Any] = Deferred(lambda d: self.cancelled.append(key))
            self.pending[key] = d
            return d

        async def awaiting(key: str) -> None:
            try:
                await waiting(key)
            finally:
                self.cancelled.append(f"{key} finally")

        self.registry.register(waiting)
        self.registry.register(awaiting)

    def test_deferredCallsCancelled(self) -> None:
        """
        Every outstanding handler Deferred is cancelled when the connection
        is lost, and nothing is written for them.
        """
        connection = self.connect()
        connection.request(1, "waiting", "a")
        connection.request(2, "waiting", "b")
        connection.lost()
        self.assertEqual(sorted(self.cancelled), ["a", "b"])
        self.assertEqual(connection.protocol.inFlight, 0)
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.factory.stats()["in_flight"], 0)

    def test_coroutineCancelled(self) -> None:
        """
        A coroutine handler's await is cancelled.
        """
        connection = self.connect()
        connection.request(1, "awaiting", "c")
        connection.lost()
        self.assertEqual(self.cancelled, ["c", "c finally"])
        self.assertEqual(connection.protocol.inFlight, 0)

    def test_threadResultDropped(self) -> None:
        """
        A thread cannot be stopped: its call stops being outstanding at once,
        and its result is dropped when it comes, without an error logged.
        """
        events = self.captureLogs()
        connection = self.connect()
        connection.request(1, "threaded", 21)
        connection.lost()
        self.assertEqual(connection.protocol.inFlight, 0)
        self.reactor.pool.runAll()
        self.assertEqual(self.calls, [("thread", 21)])
        self.assertEqual(connection.received(), [])
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])

    def test_answeredCallsUntouched(self) -> None:
        """
        Calls already answered are not cancelled again, and a connection lost
        with nothing outstanding logs nothing.
        """
        events = self.captureLogs()
        connection = self.connect()
        connection.request(1, "later", "a")
        self.pending["a"].callback("A")
        connection.lost()
        self.assertEqual(connection.received(), [[1, 1, None, "A"]])
        self.assertEqual([e for e in events if "cancelling" in e["log_format"]], [])

    def test_logged(self) -> None:
        """
        The cancellation is logged at info level with the number of calls.
        """
        events = self.captureLogs()
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.request(2, "later", "b")
        connection.lost()
        [event] = [e for e in events if "cancelling" in e["log_format"]]
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["count"], 2)

    def test_metricsCountCancelled(self) -> None:
        """
        Observers see each cancelled call finish as C{Cancelled}.
        """
        metrics = ServerMetrics()
        connection = self.connect(observers=[metrics])
        connection.request(1, "later", "a")
        connection.lost()
        self.assertEqual(metrics.calls, {("later", "Cancelled"): 1})
        self.assertEqual(metrics.inFlight(), 0)

    def test_maxConnectionsFreedAtOnce(self) -> None:
        """
        With C{maxConnections}, a connection lost with a call outstanding
        makes room for a new one at once.
        """
        first = self.connect(maxConnections=1)
        first.request(1, "later", "a")
        first.lost()
        second = Connection(self.factory)
        self.assertEqual(second.hello[0][:2], [3, "hello"])
        self.assertEqual(self.factory.accepted, 1)

    def test_shutdownAbortCancels(self) -> None:
        """
        Calls still running when the shutdown grace expires are cancelled
        with their connection.
        """
        connection = self.connect()
        connection.request(1, "waiting", "a")
        self.factory.shutdown(10)
        self.reactor.advance(10)
        self.assertEqual(connection.transport.closes, ["abortConnection"])
        connection.lost()
        self.assertEqual(self.cancelled, ["a"])


class ProbeTests(ServerTestCase):
    """
    While calls are outstanding and the client cannot be read, the server
    writes a probe every L{_server.PROBE_INTERVAL} seconds: the write a gone
    client's system refuses is how the server learns it has gone.
    """

    def test_endOfStreamProbesAtOnce(self) -> None:
        """
        At the client's end of stream with calls outstanding, a probe is
        written at once and then every interval until they are answered;
        the answers still go out (the client may only have half-closed).
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.clientCloses()
        self.assertEqual(connection.received(), [PROBE])
        self.reactor.advance(INTERVAL)
        self.reactor.advance(INTERVAL)
        self.assertEqual(connection.received(), [PROBE, PROBE])
        self.pending["a"].callback("A")
        self.assertEqual(connection.received(), [[1, 1, None, "A"]])
        self.assertEqual(connection.transport.closes, ["loseConnection"])
        self.reactor.advance(INTERVAL * 4)
        self.assertEqual(connection.received(), [])

    def test_noProbeWithNothingOutstanding(self) -> None:
        """
        An end of stream with nothing outstanding closes without a probe.
        """
        connection = self.connect()
        connection.clientCloses()
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_probingStopsWhenLost(self) -> None:
        """
        Once the connection is lost no probe is scheduled any more.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.clientCloses()
        connection.lost()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_inFlightLimitProbes(self) -> None:
        """
        While the in-flight limit stops reading (an end of stream would go
        unseen), a probe is written every interval, from one interval after
        reading stopped until it resumes.
        """
        connection = self.connect(maxInFlight=2)
        connection.request(1, "later", "a")
        connection.request(2, "later", "b")
        self.assertTrue(connection.protocol.paused)
        self.assertEqual(connection.received(), [])
        self.reactor.advance(INTERVAL)
        self.assertEqual(connection.received(), [PROBE])
        self.reactor.advance(INTERVAL)
        self.assertEqual(connection.received(), [PROBE])
        self.pending["a"].callback("A")
        self.assertFalse(connection.protocol.paused)
        self.reactor.advance(INTERVAL * 4)
        self.assertEqual(connection.received(), [[1, 1, None, "A"]])

    def test_noProbeWhileSendBufferFull(self) -> None:
        """
        While the transport's send buffer is full it is writing already (a
        gone client fails that write): no probe is added.
        """
        connection = self.connect(maxInFlight=2)
        connection.request(1, "later", "a")
        connection.protocol.pauseProducing()
        connection.request(2, "later", "b")
        self.reactor.advance(INTERVAL * 4)
        self.assertEqual(connection.received(), [])

    def test_oneProbeChain(self) -> None:
        """
        An end of stream while the in-flight limit already has probes
        scheduled keeps a single chain of them.
        """
        connection = self.connect(maxInFlight=1)
        connection.request(1, "later", "a")
        connection.protocol.readConnectionLost()
        self.assertEqual(connection.received(), [PROBE])
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)


class RawProbeTests(SynchronousTestCase):
    """
    The probe as bytes: a control message of a kind clients ignore.
    """

    def test_probeIsVectorV30(self) -> None:
        """
        The probe written is PROTOCOL.md's vector V30.
        """
        [vector] = [v for v in loadVectors() if v.number == 30]
        self.assertEqual(_wire.frame(_wire.PROBE), vector.frame)
        self.assertEqual(vector.message, PROBE)


def _stats(server: ServerProcess, testCase: SynchronousTestCase) -> dict[str, Any]:
    client = server.connect(testCase)
    client.receiveHello()
    response = client.call("system.stats")
    client.close()
    stats: dict[str, Any] = response[3]
    return stats


def _waitForStats(
    server: ServerProcess,
    testCase: SynchronousTestCase,
    condition: Any,
    timeout: float,
) -> tuple[dict[str, Any], float]:
    """
    Poll C{system.stats} until C{condition(stats)}; the stats and the time
    it took.
    """
    started = time.monotonic()
    while True:
        stats = _stats(server, testCase)
        elapsed = time.monotonic() - started
        if condition(stats):
            return stats, elapsed
        if elapsed > timeout:
            raise AssertionError(f"after {elapsed:.1f}s: {stats}")
        time.sleep(0.05)


class GoneClientIntegrationTests(SynchronousTestCase):
    """
    Against C{twistd agilerpc}: clients that close with slow calls
    outstanding.
    """

    def test_callsCancelledAndMemoryBack(self) -> None:
        """
        Connections that each send many one-hour calls and close leave no
        call running and no connection counted within about a second, and
        the memory the calls held is reused: a second round of them does not
        grow the server as the first did.
        """
        connections = scale(20, 200)
        calls = scale(100, 1000)
        server = ServerProcess.start(self)
        _stats(server, self)
        request = b"".join(
            _wire.frame(_wire.pack([0, msgid, "sleep", [3600]]))
            for msgid in range(calls)
        )
        rss = [rssKiB(server.pid)]
        for _ in range(2):
            clients = []
            for _ in range(connections):
                client = server.connect(self)
                client.receiveHello()
                client.sendRaw(request)
                clients.append(client)
            _waitForStats(
                server, self, lambda s: s["in_flight"] == connections * calls, 60
            )
            rss.append(rssKiB(server.pid))
            closedAt = time.monotonic()
            for client in clients:
                client.close()
            _waitForStats(
                server,
                self,
                lambda s: s["in_flight"] == 0 and s["connections"] == 1,
                10,
            )
            took = time.monotonic() - closedAt
            rss.append(rssKiB(server.pid))
            print(f"cancelled in {took:.2f}s;", end=" ")
            # About a second to notice (two probes), plus what cancelling
            # costs: Twisted's Deferred.cancel alone takes 8-12 us a call.
            self.assertLess(took, 1.5 + 30e-6 * connections * calls)
        print(
            f"{connections} x {calls} calls, RSS KiB: {rss[0]} before, "
            f"{rss[1]} held, {rss[2]} gone, {rss[3]} held again, {rss[4]} gone"
        )
        firstGrowth = rss[1] - rss[0]
        self.assertLess(rss[4] - rss[2], max(2048, firstGrowth // 4))

    def test_maxConnectionsNotLockedOut(self) -> None:
        """
        With C{--max-connections 2}, two clients that each send one slow call
        and close do not lock a third out for the length of their calls.
        """
        server = ServerProcess.start(self, "--max-connections", "2")
        for _ in range(2):
            client = server.connect(self)
            client.receiveHello()
            client.request("sleep", 3600)
            client.close()
        deadline = time.monotonic() + 3
        while True:
            client = server.connect(self)
            message = client.receive()
            client.close()
            if message[:2] == [3, "hello"]:
                break
            self.assertEqual(message, [3, "goaway", None, "ServerBusy"])
            self.assertLess(time.monotonic(), deadline, "still locked out")
            time.sleep(0.05)

    def test_halfClosedClientAnswered(self) -> None:
        """
        A client that shuts down its write side but still reads gets the
        answers of its outstanding calls (after probes it ignores), then
        the end of stream.
        """
        server = ServerProcess.start(self)
        client = server.connect(self)
        client.receiveHello()
        first = client.request("sleep", 0.3)
        second = client.request("echo", "now")
        client.sock.shutdown(socket.SHUT_WR)
        responses = []
        while True:
            try:
                message = client.receive()
            except EOFError:
                break
            if message != PROBE:
                responses.append(message)
        self.assertEqual(responses, [[1, second, None, "now"], [1, first, None, 0.3]])
