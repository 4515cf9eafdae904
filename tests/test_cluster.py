"""
Tests for L{agilerpc.RpcClient} with several endpoints: round-robin, the
shared queue, per-endpoint backoff, and the exactly-once promise when one
endpoint goes away, drops or refuses while the others serve.  In memory: one
L{agilerpc.testing.MemoryServer} per endpoint on a shared clock.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import CallLost, RpcClient, TcpRpcClient
from agilerpc.testing import MemoryServer

from .blockinghelpers import WAIT, FakeConnection, FakeServer, serveForever
from .clienthelpers import (
    Handlers,
    assertExactlyOnce,
    nextRetryWait,
    serverStep,
    setNextRetryWait,
)

PORTS = [9001, 9002, 9003]


class Cluster:
    """
    C{count} in-memory servers, each with its own L{Handlers}, and a client
    with an endpoint for each.
    """

    def __init__(self, count: int = 2) -> None:
        self.handlers = [Handlers() for _ in range(count)]
        first = MemoryServer(
            self.handlers[0].registry(), port=PORTS[0], keepalive=10, lingerTimeout=2
        )
        self.servers = [first] + [
            MemoryServer(
                h.registry(), first.reactor, port=port, keepalive=10, lingerTimeout=2
            )
            for h, port in zip(self.handlers[1:], PORTS[1:count], strict=True)
        ]
        self.reactor = first.reactor
        self.client = RpcClient(
            self.reactor,
            endpoints=[(f"server{i}", port) for i, port in enumerate(PORTS[:count])],
        )
        for factory in self.client.factories:
            factory.jitter = 0

    def flush(self) -> None:
        """
        Flush every server until nothing moves anywhere.
        """
        for _ in range(20):
            before = (len(self.reactor.tcpClients), self._traffic())
            for server in self.servers:
                server.flush()
            if (len(self.reactor.tcpClients), self._traffic()) == before:
                return

    def _traffic(self) -> int:
        return sum(len(h.runs) for h in self.handlers) + sum(
            len(s.connections) for s in self.servers
        )

    def advance(self, seconds: float) -> None:
        self.flush()
        self.reactor.advance(seconds)
        self.flush()

    def runs(self) -> list[list[Any]]:
        return [h.runs for h in self.handlers]


def collect(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


class ConstructionTests(SynchronousTestCase):
    def test_endpointsOrHostAndPort(self) -> None:
        """
        RpcClient takes a host and a port, or endpoints, and refuses both,
        neither, or an empty list.
        """
        reactor = MemoryServer(Handlers().registry()).reactor
        self.assertRaises(TypeError, RpcClient, reactor)
        self.assertRaises(TypeError, RpcClient, reactor, "a", 1, endpoints=[("b", 2)])
        self.assertRaises(ValueError, RpcClient, reactor, endpoints=[])

    def test_endpointsAndRepr(self) -> None:
        """
        endpoints lists the servers in order; host and port are the first;
        the repr names them all.
        """
        reactor = MemoryServer(Handlers().registry()).reactor
        client = RpcClient(reactor, endpoints=iter([("a", 1), ("b", 2)]))
        self.assertEqual(list(client.endpoints), [("a", 1), ("b", 2)])
        self.assertEqual((client.host, client.port), ("a", 1))
        self.assertEqual(repr(client), "<RpcClient a:1, b:2>")
        self.assertIs(client.factory, client.factories[0])
        self.assertEqual(len(client.factories), 2)
        self.assertIsNot(client.factories[0], client.factories[1])
        self.assertEqual(repr(RpcClient(reactor, "h", 5)), "<RpcClient h:5>")

    def test_tlsPerEndpoint(self) -> None:
        """
        A (host, port, tls) endpoint connects with its own TLS connection
        creator; the others with C{tls}; none with plain TCP.
        """
        reactor = MemoryReactorClock()
        own, shared = object(), object()
        client = RpcClient(reactor, endpoints=[("a", 1, own), ("b", 2)], tls=shared)
        client.connect()
        self.assertEqual(reactor.tcpClients, [])
        self.assertEqual(
            [(c[0], c[1], c[3]) for c in reactor.sslClients],
            [("a", 1, own), ("b", 2, shared)],
        )

    def test_connectDialsEveryEndpoint(self) -> None:
        """
        connect() dials every endpoint at once, one attempt each.
        """
        cluster = Cluster(3)
        cluster.client.connect()
        self.assertEqual(
            [(c[0], c[1]) for c in cluster.reactor.tcpClients],
            [("server0", 9001), ("server1", 9002), ("server2", 9003)],
        )
        cluster.flush()
        self.assertEqual(
            list(cluster.client.readyEndpoints),
            [("server0", 9001), ("server1", 9002), ("server2", 9003)],
        )
        self.assertEqual([s.attempts for s in cluster.servers], [1, 1, 1])


class RoundRobinTests(SynchronousTestCase):
    def test_callsAlternate(self) -> None:
        """
        Once every endpoint is ready, calls go round-robin over them.
        """
        cluster = Cluster(3)
        cluster.client.connect()
        cluster.flush()
        ds = [cluster.client.callRemote("run", i) for i in range(7)]
        cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], list(range(7)))
        self.assertEqual(cluster.runs(), [[0, 3, 6], [1, 4], [2, 5]])

    def test_queuedCallsGoToFirstReady(self) -> None:
        """
        Calls made before any connection is ready all go, in order, to the
        endpoint that says hello first; later calls are spread.
        """
        cluster = Cluster(2)
        ds = [cluster.client.callRemote("run", i) for i in range(4)]
        self.assertEqual(cluster.client.queued, 4)
        # Only the second server accepts for now.
        cluster.servers[1].flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 1, 2, 3])
        self.assertEqual(cluster.runs(), [[], [0, 1, 2, 3]])
        cluster.servers[0].flush()
        self.assertEqual(len(cluster.client.readyEndpoints), 2)
        ds = [cluster.client.callRemote("run", i) for i in range(4, 8)]
        cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [4, 5, 6, 7])
        self.assertEqual(sorted(map(len, cluster.runs())), [2, 6])


class FailoverTests(SynchronousTestCase):
    def test_oneEndpointDown(self) -> None:
        """
        While one endpoint refuses connections, the other serves every call,
        and the refusing one is retried at most once per backoff delay, only
        while calls are being made.
        """
        cluster = Cluster(2)
        down, up = cluster.servers
        down.refusing = True
        ds = [cluster.client.callRemote("run", i) for i in range(3)]
        cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 1, 2])
        self.assertEqual(cluster.runs(), [[], [0, 1, 2]])
        self.assertEqual(down.attempts, 1)
        # A burst of calls: one backoff retry is scheduled, not one per call.
        ds = [cluster.client.callRemote("run", i) for i in range(3, 20)]
        cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], list(range(3, 20)))
        self.assertEqual(down.attempts, 1)
        delay = cluster.client.factories[0].delay
        cluster.advance(delay)
        self.assertEqual(down.attempts, 2)
        # Idle now: no more attempts, however long.
        cluster.advance(1000)
        cluster.advance(1000)
        self.assertEqual(down.attempts, 2)
        self.assertEqual(up.attempts, 1)
        # Back up: the next call dials it after its delay, and it joins in.
        down.refusing = False
        d = cluster.client.callRemote("run", "x")
        cluster.flush()
        self.assertEqual(self.successResultOf(d), "x")
        self.assertEqual(down.attempts, 2)
        cluster.advance(cluster.client.factories[0].delay)
        self.assertEqual(down.attempts, 3)
        self.assertEqual(len(cluster.client.readyEndpoints), 2)
        ds = [cluster.client.callRemote("run", i) for i in range(30, 34)]
        cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [30, 31, 32, 33])
        self.assertEqual(len(cluster.runs()[1]), 23)
        self.assertEqual(sorted(cluster.runs()[0]), [30, 32])

    def test_perEndpointBackoff(self) -> None:
        """
        With every endpoint refusing, each is retried on its own backoff
        while calls are queued; the first to accept takes the queue, and the
        other's delay is not reset by it.
        """
        cluster = Cluster(2)
        one, two = cluster.servers
        one.refusing = two.refusing = True
        factoryOne, factoryTwo = cluster.client.factories
        factoryTwo.initialDelay = 1.0
        factoryTwo.factor = 3.0
        setNextRetryWait(factoryTwo, 1.0)
        factoryOne.factor = 2.0
        setNextRetryWait(factoryOne, 0.5)
        d = cluster.client.callRemote("run", "q")
        cluster.flush()
        self.assertEqual((one.attempts, two.attempts), (1, 1))
        # A retry waits for the delay, which then grows by the factor: one
        # retries at 0.5, 1.5, 3.5, 7.5; two at 1.0, 4.0.
        cluster.advance(0.49)
        self.assertEqual((one.attempts, two.attempts), (1, 1))
        cluster.advance(0.02)
        self.assertEqual((one.attempts, two.attempts), (2, 1))
        cluster.advance(0.48)
        self.assertEqual((one.attempts, two.attempts), (2, 1))
        cluster.advance(0.02)
        self.assertEqual((one.attempts, two.attempts), (2, 2))
        cluster.advance(0.49)
        self.assertEqual((one.attempts, two.attempts), (2, 2))
        cluster.advance(0.02)
        self.assertEqual((one.attempts, two.attempts), (3, 2))
        two.refusing = False
        cluster.advance(2.0)
        self.assertEqual((one.attempts, two.attempts), (4, 2))
        self.assertNoResult(d)
        cluster.advance(0.5)
        self.assertEqual((one.attempts, two.attempts), (4, 3))
        self.assertEqual(self.successResultOf(d), "q")
        self.assertEqual(cluster.runs(), [[], ["q"]])
        # Two's backoff is reset by its connection, not one's.
        self.assertEqual((factoryTwo.delay, factoryTwo.retries), (1.0, 0))
        self.assertEqual(nextRetryWait(factoryOne), 8.0)
        # One's retry is still pending: it fires once, then nothing more.
        cluster.advance(4.0)
        self.assertEqual((one.attempts, two.attempts), (5, 3))
        cluster.advance(100.0)
        self.assertEqual((one.attempts, two.attempts), (5, 3))

    def test_goawayResendsUnrunCallsElsewhere(self) -> None:
        """
        Calls a goaway proves unrun go to another ready endpoint at once;
        the call it ran is answered on the old connection; none runs twice.
        """
        cluster = Cluster(2)
        cluster.client.connect()
        cluster.flush()
        one, two = cluster.servers
        d0 = cluster.client.callRemote("wait", 0)
        d1 = cluster.client.callRemote("wait", 1)
        one.flush()
        self.assertEqual(cluster.runs(), [[0], []])
        d2 = cluster.client.callRemote("wait", 2)
        d3 = cluster.client.callRemote("wait", 3)
        # Server one goes away before call 2 reaches it.
        one.connections[0].server.goaway("shutdown")
        cluster.flush()
        self.assertEqual(cluster.runs(), [[0], [1, 3, 2]])
        cluster.handlers[0].answer(0)
        for token in (1, 2, 3):
            cluster.handlers[1].answer(token)
        cluster.flush()
        self.assertEqual(
            [self.successResultOf(d) for d in (d0, d1, d2, d3)], [0, 1, 2, 3]
        )
        self.assertEqual(cluster.runs(), [[0], [1, 3, 2]])
        self.assertEqual(two.attempts, 1)
        self.assertEqual(one.openConnections(), [])

    def test_dropFailsOnlyThatEndpointsCalls(self) -> None:
        """
        A connection lost without a goaway fails the calls in flight on it
        with CallLost (they are not resent); calls on the other
        endpoint are answered, and new calls go to the survivor.
        """
        cluster = Cluster(2)
        cluster.client.connect()
        cluster.flush()
        one = cluster.servers[0]
        ds = [cluster.client.callRemote("wait", i) for i in range(4)]
        cluster.flush()
        one.drop()
        results = [collect(d) for d in ds]
        for token in (1, 3):
            cluster.handlers[1].answer(token)
        cluster.flush()
        self.assertIsInstance(results[0][0], Failure)
        self.assertTrue(results[0][0].check(CallLost))
        self.assertTrue(results[2][0].check(CallLost))
        self.assertEqual((results[1], results[3]), ([1], [3]))
        self.assertEqual(cluster.runs(), [[0, 2], [1, 3]])
        one.refusing = True
        ds = [cluster.client.callRemote("run", i) for i in range(10, 13)]
        cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [10, 11, 12])
        self.assertEqual(cluster.handlers[1].runs[2:], [10, 11, 12])
        self.assertEqual(cluster.runs()[0], [0, 2])

    def test_goawayUnrunWaitsForAnyEndpoint(self) -> None:
        """
        With no other endpoint ready, calls a goaway proves unrun wait in
        the queue and go to whichever endpoint connects first.
        """
        cluster = Cluster(2)
        one, two = cluster.servers
        two.refusing = True
        d0 = cluster.client.callRemote("wait", 0)
        cluster.flush()
        self.assertEqual(cluster.runs(), [[0], []])
        d1 = cluster.client.callRemote("wait", 1)
        one.connections[0].server.goaway("shutdown")
        one.refusing = True
        one.flush()
        self.assertEqual(cluster.client.queued, 1)
        self.assertEqual(cluster.runs(), [[0], []])
        two.refusing = False
        cluster.advance(cluster.client.factories[1].delay)
        self.assertEqual(cluster.runs(), [[0], [1]])
        cluster.handlers[0].answer(0)
        cluster.handlers[1].answer(1)
        cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in (d0, d1)], [0, 1])
        self.assertEqual(cluster.client.queued, 0)

    def test_lazyReconnectAfterIdleGoaway(self) -> None:
        """
        Endpoints that go away idle are not redialled until the next call,
        which dials all of them.
        """
        cluster = Cluster(2)
        d = cluster.client.callRemote("run", 1)
        cluster.flush()
        self.successResultOf(d)
        for server in cluster.servers:
            server.goaway()
        cluster.advance(100)
        self.assertEqual([s.attempts for s in cluster.servers], [1, 1])
        self.assertFalse(cluster.client.connected)
        d = cluster.client.callRemote("run", 2)
        cluster.flush()
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual([s.attempts for s in cluster.servers], [2, 2])

    def test_closeStopsEveryEndpoint(self) -> None:
        """
        close() stops the backoff of every endpoint and fails queued calls.
        """
        cluster = Cluster(2)
        for server in cluster.servers:
            server.refusing = True
        d = cluster.client.callRemote("run", 1)
        cluster.flush()
        closed = cluster.client.close()
        self.assertIsNone(self.successResultOf(closed))
        self.failureResultOf(d)
        cluster.advance(1000)
        self.assertEqual([s.attempts for s in cluster.servers], [1, 1])


_actions = st.lists(
    st.one_of(
        st.just(("call",)),
        st.just(("slowCall",)),
        st.tuples(st.just("answer"), st.integers(0, 50)),
        st.tuples(st.just("goaway"), st.integers(0, 2)),
        st.tuples(st.just("drop"), st.integers(0, 2)),
        st.tuples(st.just("refuse"), st.integers(0, 2)),
        st.tuples(st.just("accept"), st.integers(0, 2)),
        st.tuples(st.just("flush"), st.integers(0, 2)),
        st.tuples(st.just("pump"), st.integers(0, 2), st.integers(0, 5)),
        st.tuples(st.just("advance"), st.sampled_from([0.05, 0.5, 3.0, 11.0])),
        st.tuples(
            st.just("endpoints"),
            st.sets(st.integers(0, 2), min_size=1),
            st.none() | st.lists(st.integers(0, 5), min_size=3, max_size=3),
        ),
    ),
    max_size=60,
)


class ExactlyOnceTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.integers(2, 3), _actions)
    def test_everyCallEndsAndNoneRunsTwice(
        self, count: int, actions: list[tuple[Any, ...]]
    ) -> None:
        """
        Any interleaving of calls, per-endpoint goaways, drops and refusals,
        and endpoints added and removed (setEndpoints, with or without
        weights) ends with each call
        answered from exactly one run (on any endpoint), or failed with
        CallLost after at most one run; once everything is answered, no
        connection is left open to a removed endpoint.
        """
        cluster = Cluster(count)
        servers = cluster.servers
        client = cluster.client
        outcomes: dict[int, list[Any]] = {}

        def record(result: Any, token: int) -> None:
            outcomes[token].append(result)

        for action in actions:
            kind = action[0]
            if kind in ("call", "slowCall"):
                token = len(outcomes)
                outcomes[token] = []
                method = "run" if kind == "call" else "wait"
                d: Deferred[Any] = client.callRemote(method, token)
                d.addBoth(record, token)
                continue
            if kind == "answer":
                waiting = sorted(
                    (token, h) for h in cluster.handlers for token in h.waiting
                )
                if waiting:
                    token, h = waiting[action[1] % len(waiting)]
                    h.answer(token)
                continue
            if kind == "advance":
                cluster.reactor.advance(action[1])
                continue
            if kind == "endpoints":
                listed = sorted({i % count for i in action[1]})
                weights = None if action[2] is None else action[2][: len(listed)]
                client.setEndpoints([(f"server{i}", PORTS[i]) for i in listed], weights)
                continue
            server = servers[action[1] % count]
            if serverStep(server, kind):
                continue
            if kind == "pump":
                live = server.openConnections()
                if live:
                    live[action[2] % len(live)].pump.pump()

        # Once every handler answered, before any keepalive could close
        # them, removed endpoints have no connection left: drained ones
        # closed when their last answer came.
        cluster.flush()
        for h in cluster.handlers:
            for token in sorted(h.waiting):
                h.answer(token)
        cluster.flush()
        listedPorts = {port for _, port in client.endpoints}
        for server in servers:
            if server.port not in listedPorts:
                self.assertEqual(server.openConnections(), [], server.port)

        # Let everything settle: accept connections, answer every handler.
        for server in servers:
            server.refusing = False
        for _ in range(50):
            cluster.flush()
            for h in cluster.handlers:
                for token in sorted(h.waiting):
                    h.answer(token)
            cluster.flush()
            cluster.reactor.advance(client.factory.maxDelay)
            if all(outcomes.values()) and not any(h.waiting for h in cluster.handlers):
                break

        assertExactlyOnce(
            self, outcomes, [token for h in cluster.handlers for token in h.runs]
        )


class FakeServersClient(TcpRpcClient):
    """
    A L{TcpRpcClient} with several servers, whose connections go to the
    L{FakeServer} (or raise the error) registered for each port.
    """

    def __init__(self, fakes: dict[int, FakeServer | OSError], **kwargs: Any) -> None:
        super().__init__(
            servers=[f"fake{port}.invalid:{port}" for port in fakes],
            timeout=WAIT,
            socketFactory=self._connectFake,
            **kwargs,
        )
        self.fakes = fakes
        self.opened: list[int] = []

    def _connectFake(
        self, address: tuple[str, int], timeout: float | None
    ) -> socket.socket:
        port = address[1]
        self.opened.append(port)
        fake = self.fakes[port]
        if isinstance(fake, OSError):
            raise fake
        return fake.connect()


def serveOneThenClose(connection: FakeConnection) -> None:
    """
    A script: say hello, run and answer one request, then close.
    """
    connection.hello()
    connection.serve(connection.receiveRequest())


class TcpServersTests(SynchronousTestCase):
    """
    L{TcpRpcClient} with C{servers}.
    """

    def fakes(self, *servers: FakeServer | OSError, **kwargs: Any) -> FakeServersClient:
        client = FakeServersClient(
            {9001 + i: fake for i, fake in enumerate(servers)}, **kwargs
        )
        self.addCleanup(client.close)
        return client

    def test_serversArgument(self) -> None:
        """
        servers takes "host:port" strings (IPv6 in brackets) and pairs; a
        client takes a host and port or servers, not both or neither.
        """
        client = TcpRpcClient(servers=["a:1", ("b", 2), "[::1]:3"])
        self.assertEqual(client.servers, [("a", 1), ("b", 2), ("::1", 3)])
        self.assertEqual((client.host, client.port), ("a", 1))
        self.assertEqual(repr(client), "<TcpRpcClient a:1, b:2, ::1:3>")
        self.assertEqual(repr(TcpRpcClient("h", 5)), "<TcpRpcClient h:5>")
        self.assertEqual(TcpRpcClient("h", 5).servers, [("h", 5)])
        self.assertRaises(TypeError, TcpRpcClient)
        self.assertRaises(TypeError, TcpRpcClient, "h", 5, servers=["a:1"])
        self.assertRaises(ValueError, TcpRpcClient, servers=[])
        for bad in ("a", "a:", ":1", "a:b"):
            self.assertRaises(ValueError, TcpRpcClient, servers=[bad])

    def test_refusedServerIsSkipped(self) -> None:
        """
        A server that refuses the connection is skipped: the call runs on
        the next one.
        """
        down = FakeServer(self)
        up = FakeServer(self, serveForever)
        client = self.fakes(down, up)
        self.assertEqual(client.call("run", ("x",)), "x")
        self.assertEqual(client.opened, [9001, 9002])
        self.assertEqual((client.host, client.port), ("fake9002.invalid", 9002))
        self.assertEqual(up.executed, [(0, "run", ["x"])])

    def test_unreachableServerIsSkipped(self) -> None:
        """
        A server that cannot be reached (not only a refusal) is skipped too.
        """
        up = FakeServer(self, serveForever)
        client = self.fakes(OSError(errno.EHOSTUNREACH, "No route to host"), up)
        self.assertEqual(client.call("run", (1,)), 1)
        self.assertEqual(client.opened, [9001, 9002])

    def test_newConnectionsRotate(self) -> None:
        """
        Each new connection goes to the next server: when one closes the
        connection, the next call runs on the other.
        """
        one = FakeServer(self, serveOneThenClose, serveOneThenClose)
        two = FakeServer(self, serveOneThenClose)
        client = self.fakes(one, two)
        self.assertEqual(client.call("run", (1,)), 1)
        one.join()
        self.assertEqual(client.call("run", (2,)), 2)
        two.join()
        self.assertEqual(client.call("run", (3,)), 3)
        self.assertEqual(client.opened, [9001, 9002, 9001])
        self.assertEqual(one.executed, [(0, "run", [1]), (1, "run", [3])])
        self.assertEqual(two.executed, [(0, "run", [2])])

    def test_goawayResendsOnAnotherServer(self) -> None:
        """
        A call a goaway proves unrun is sent again, on the next server, and
        runs once there.
        """

        def goawayUnrun(connection: FakeConnection) -> None:
            connection.hello()
            connection.receiveRequest()
            connection.goaway(None, "shutdown")
            connection.halfClose()
            connection.readToEnd()

        one = FakeServer(self, goawayUnrun)
        two = FakeServer(self, serveForever)
        client = self.fakes(one, two)
        self.assertEqual(client.call("run", ("t",)), "t")
        self.assertEqual(client.opened, [9001, 9002])
        self.assertEqual(one.executed, [])
        self.assertEqual(two.executed, [(0, "run", ["t"])])

    def test_lossInFlightIsNotResent(self) -> None:
        """
        A connection lost while the call was in flight raises
        CallLost; the call is not sent to another server.
        """

        def runAndDie(connection: FakeConnection) -> None:
            connection.hello()
            connection.run(connection.receiveRequest())

        one = FakeServer(self, runAndDie)
        two = FakeServer(self, serveForever)
        client = self.fakes(one, two)
        self.assertRaises(CallLost, client.call, "run", ("t",))
        self.assertEqual(client.opened, [9001])
        self.assertEqual(one.executed, [(0, "run", ["t"])])
        self.assertEqual(two.attempts, 0)

    def test_everyServerRefuses(self) -> None:
        """
        Without connectRetry time, a refusal from every server raises
        ConnectionRefusedError after one try of each; with it, rounds of
        tries go on until a server accepts.
        """
        one = FakeServer(self)
        two = FakeServer(self)
        client = self.fakes(one, two, connectRetry=0)
        self.assertRaises(ConnectionRefusedError, client.call, "run", (1,))
        self.assertEqual((one.attempts, two.attempts), (1, 1))

        three = FakeServer(self)
        three.refuse = 2
        four = FakeServer(self, serveForever)
        four.refuse = 2
        client = self.fakes(three, four, connectRetry=WAIT)
        self.assertEqual(client.call("run", (2,)), 2)
        self.assertEqual(client.opened, [9001, 9002] * 3)

    def test_everyServerUnreachable(self) -> None:
        """
        When no server can be reached, the error names the last one tried
        and keeps its errno.
        """
        client = self.fakes(
            FakeServer(self), OSError(errno.EHOSTUNREACH, "No route to host")
        )
        e = self.assertRaises(OSError, client.call, "run", (1,))
        self.assertEqual(e.errno, errno.EHOSTUNREACH)
        self.assertIn("no server could be reached", str(e))
        self.assertIn("fake9002.invalid:9002", str(e))
