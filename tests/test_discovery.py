"""
Tests for endpoints that change at run time: the sans-IO rules of
L{agilerpc._discovery} (SRV order, TTLs, backoff), L{RpcClient.setEndpoints}
(added endpoints dialled like the others, removed ones drained), and
L{RpcClient} resolving a service or a host name through an injected
C{IResolver}, on a L{MemoryReactorClock} with in-memory servers.
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase, TestCase

from agilerpc import CallLost, CallTimeout, ClientClosed, RpcClient, TcpRpcClient
from agilerpc._clientconnection import ClientConnection, State
from agilerpc._discovery import (
    Schedule,
    SrvTarget,
    bestTier,
    hostEndpoints,
    orderSrv,
    slots,
)
from agilerpc._dnsquery import ResolvedServers, parseResolvConf, systemNameservers
from agilerpc.testing import MemoryServer

from .clienthelpers import HELLO, Handlers, RecordingEvents, frame
from .dnshelpers import (
    FakeResolver,
    ZoneResolver,
    a,
    aaaa,
    dnsServerFactory,
    listenDns,
    srv,
)
from .serverhelpers import LogCollector

PORTS = [9001, 9002, 9003]
SERVICE = "_agilerpc._tcp.billing.test"


class OrderTests(SynchronousTestCase):
    """
    L{orderSrv}, L{bestTier}, L{slots} and L{hostEndpoints}.
    """

    def test_priorityFirst(self) -> None:
        """
        Records come by priority, lowest first, whatever their weights.
        """
        records = [
            SrvTarget(20, 100, 1, "c"),
            SrvTarget(10, 0, 2, "b"),
            SrvTarget(10, 0, 3, "a"),
            SrvTarget(30, 5, 4, "d"),
        ]
        ordered = orderSrv(records, lambda: 0.5)
        self.assertEqual([r.priority for r in ordered], [10, 10, 20, 30])

    def test_weightsShareFirstPlace(self) -> None:
        """
        Within a priority, a record comes first with a chance proportional
        to its weight.
        """
        rng = random.Random(4)
        records = [SrvTarget(0, 1, 1, "a"), SrvTarget(0, 3, 2, "b")]
        firsts = Counter(orderSrv(records, rng.random)[0].target for _ in range(4000))
        self.assertTrue(0.72 < firsts["b"] / 4000 < 0.78, firsts)

    def test_zeroWeightFirstOnlyOnZeroDraw(self) -> None:
        """
        A record of weight 0 comes first only when the draw is 0; every
        record is listed once.
        """
        records = [SrvTarget(0, 5, 1, "a"), SrvTarget(0, 0, 2, "z")]
        self.assertEqual([r.target for r in orderSrv(records, lambda: 0.0)], ["z", "a"])
        self.assertEqual(
            [r.target for r in orderSrv(records, lambda: 0.01)], ["a", "z"]
        )
        allZero = [SrvTarget(0, 0, 1, "a"), SrvTarget(0, 0, 2, "b")]
        self.assertEqual(len(orderSrv(allZero, lambda: 0.9)), 2)

    def test_dotTargetDropped(self) -> None:
        """
        A target of "." (no service there) is left out.
        """
        self.assertEqual(orderSrv([SrvTarget(0, 0, 1, ".")]), [])

    def test_bestTier(self) -> None:
        """
        bestTier keeps the lowest priority whose targets have addresses,
        each address with its record's port, without repeats.
        """
        ordered = orderSrv(
            [
                SrvTarget(0, 0, 1, "gone"),
                SrvTarget(1, 0, 2, "b"),
                SrvTarget(1, 0, 3, "b"),
                SrvTarget(2, 0, 4, "c"),
            ],
            lambda: 0.0,
        )
        addresses = {"b": ["10.0.0.2", "10.0.0.2"], "c": ["10.0.0.3"]}
        self.assertEqual(
            bestTier(ordered, addresses), ([("10.0.0.2", 2), ("10.0.0.2", 3)], [0, 0])
        )
        self.assertEqual(bestTier(ordered, {}), ([], []))
        weighted = [SrvTarget(0, 7, 1, "b"), SrvTarget(0, 2, 2, "b")]
        self.assertEqual(
            bestTier(weighted, addresses), ([("10.0.0.2", 1), ("10.0.0.2", 2)], [7, 2])
        )

    def test_slots(self) -> None:
        """
        Places in the round-robin follow the weights: equal weights one
        each, others reduced by their common divisor and scaled to at most
        16; a weight of 0 among others gets one place against 16.
        """
        self.assertEqual(slots([5, 5, 5]), [1, 1, 1])
        self.assertEqual(slots([0, 0]), [1, 1])
        self.assertEqual(slots([10, 30]), [1, 3])
        self.assertEqual(slots([1, 16]), [1, 16])
        self.assertEqual(slots([1, 100]), [1, 16])
        self.assertEqual(slots([50, 100]), [1, 2])
        self.assertEqual(slots([0, 10, 5]), [1, 16, 8])
        self.assertEqual(slots([]), [])

    def test_hostEndpoints(self) -> None:
        """
        A name's addresses become endpoints on the port, sorted, once each.
        """
        self.assertEqual(
            hostEndpoints(["10.0.0.2", "::1", "10.0.0.1", "10.0.0.2"], 7),
            [("10.0.0.1", 7), ("10.0.0.2", 7), ("::1", 7)],
        )


class ScheduleTests(SynchronousTestCase):
    """
    L{Schedule}: when to resolve again.
    """

    def test_ttlClampedToInterval(self) -> None:
        """
        The next resolution comes after the smallest TTL, but not before the
        interval nor after the maximum; no TTL means the interval.
        """
        schedule = Schedule(30.0, maxInterval=300.0)
        self.assertEqual(schedule.succeeded([5, 60]), 30.0)
        self.assertEqual(schedule.succeeded([120, 200]), 120.0)
        self.assertEqual(schedule.succeeded([86400]), 300.0)
        self.assertEqual(schedule.succeeded([]), 30.0)

    def test_failureBackoff(self) -> None:
        """
        Failed resolutions are retried after 1 s, doubling up to the
        interval; a success starts again from 1 s.  An interval under 1 s
        is the first delay.
        """
        schedule = Schedule(10.0)
        self.assertEqual(
            [schedule.failed() for _ in range(6)], [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
        )
        schedule.succeeded([0])
        self.assertEqual(schedule.failed(), 1.0)
        self.assertEqual(Schedule(0.25).failed(), 0.25)
        self.assertRaises(ValueError, Schedule, 0)

    def test_refreshDelay(self) -> None:
        """
        A connection failure asks for a resolution at once, unless one
        started less than min(interval, 5 s) ago.
        """
        schedule = Schedule(30.0)
        self.assertEqual(schedule.refreshDelay(100.0), 0.0)
        schedule.started(100.0)
        self.assertEqual(schedule.refreshDelay(101.0), 4.0)
        self.assertEqual(schedule.refreshDelay(106.0), 0.0)
        short = Schedule(2.0)
        short.started(0.0)
        self.assertEqual(short.refreshDelay(0.5), 1.5)


class Servers:
    """
    In-memory servers on L{PORTS}, sharing a clock, each with its own
    L{Handlers}.
    """

    def __init__(self, count: int = 3) -> None:
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

    def flush(self) -> None:
        for _ in range(20):
            before = (
                len(self.reactor.tcpClients),
                sum(len(h.runs) for h in self.handlers),
                sum(len(s.openConnections()) for s in self.servers),
            )
            for server in self.servers:
                server.flush()
            after = (
                len(self.reactor.tcpClients),
                sum(len(h.runs) for h in self.handlers),
                sum(len(s.openConnections()) for s in self.servers),
            )
            if after == before:
                return

    def advance(self, seconds: float) -> None:
        self.flush()
        self.reactor.advance(seconds)
        self.flush()

    def runs(self) -> list[list[Any]]:
        return [h.runs for h in self.handlers]

    def client(self, count: int, **kwargs: Any) -> RpcClient:
        client = RpcClient(
            self.reactor,
            endpoints=[(f"server{i}", port) for i, port in enumerate(PORTS[:count])],
            **kwargs,
        )
        client.factory.jitter = 0
        return client


def endpoint(i: int) -> tuple[str, int]:
    return (f"server{i}", PORTS[i])


class SetEndpointsTests(SynchronousTestCase):
    """
    L{RpcClient.setEndpoints}.
    """

    def test_addedEndpointsTakeCalls(self) -> None:
        """
        Added endpoints are dialled on the next call and join the
        round-robin; the endpoints kept keep their connection.
        """
        servers = Servers()
        client = servers.client(1)
        d = client.callRemote("run", "a")
        servers.flush()
        self.assertEqual(self.successResultOf(d), "a")
        client.setEndpoints([endpoint(0), "server1:9002", endpoint(2)])
        self.assertEqual(list(client.endpoints), [endpoint(i) for i in range(3)])
        # Nothing queued: nothing is dialled until a call.
        self.assertEqual([s.attempts for s in servers.servers], [1, 0, 0])
        client.callRemote("run", "b")
        servers.flush()
        self.assertEqual([s.attempts for s in servers.servers], [1, 1, 1])
        ds = [client.callRemote("run", i) for i in range(6)]
        servers.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], list(range(6)))
        self.assertEqual(
            [len([t for t in runs if isinstance(t, int)]) for runs in servers.runs()],
            [2, 2, 2],
        )

    def test_newEndpointsCopyBackoffSettings(self) -> None:
        """
        An added endpoint's factory starts with client.factory's backoff
        settings.
        """
        client = Servers().client(1)
        client.factory.initialDelay = 0.7
        client.factory.maxDelay = 3.0
        client.factory.factor = 1.5
        client.setEndpoints([endpoint(0), endpoint(1)])
        added = client.factories[1]
        self.assertEqual(
            (added.initialDelay, added.delay, added.maxDelay, added.factor),
            (0.7, 0.7, 3.0, 1.5),
        )
        self.assertEqual(added.jitter, 0)

    def test_removedEndpointDrains(self) -> None:
        """
        A removed endpoint's connection takes no new call, answers the calls
        in flight on it, then closes; the endpoint is not dialled again.
        """
        servers = Servers(2)
        client = servers.client(2)
        client.connect()
        servers.flush()
        slow = [client.callRemote("wait", i) for i in range(4)]
        servers.flush()
        self.assertEqual(servers.runs(), [[0, 2], [1, 3]])
        client.setEndpoints([endpoint(1)])
        self.assertEqual(list(client.readyEndpoints), [endpoint(1)])
        fast = [client.callRemote("run", i) for i in range(10, 14)]
        servers.flush()
        self.assertEqual(servers.runs()[0], [0, 2])
        self.assertEqual([self.successResultOf(d) for d in fast], [10, 11, 12, 13])
        self.assertEqual(len(servers.servers[0].openConnections()), 1)
        servers.handlers[0].answer(0)
        servers.flush()
        self.assertEqual(self.successResultOf(slow[0]), 0)
        self.assertEqual(len(servers.servers[0].openConnections()), 1)
        servers.handlers[0].answer(2)
        servers.flush()
        self.assertEqual(self.successResultOf(slow[2]), 2)
        self.assertEqual(servers.servers[0].openConnections(), [])
        for token in (1, 3):
            servers.handlers[1].answer(token)
        servers.advance(100)
        self.assertEqual([self.successResultOf(slow[i]) for i in (1, 3)], [1, 3])
        self.assertEqual(servers.servers[0].attempts, 1)

    def test_idleRemovedEndpointClosesAtOnce(self) -> None:
        """
        A removed endpoint with nothing in flight is closed at once.
        """
        servers = Servers(2)
        client = servers.client(2)
        client.connect()
        servers.flush()
        client.setEndpoints([endpoint(1)])
        servers.flush()
        self.assertEqual(servers.servers[0].openConnections(), [])
        self.assertEqual(len(servers.servers[1].openConnections()), 1)

    def test_removedWhileConnecting(self) -> None:
        """
        An endpoint removed before its hello never takes a call: its
        connection is closed when it comes up.
        """
        servers = Servers(2)
        client = servers.client(2)
        client.connect()
        client.setEndpoints([endpoint(1)])
        ds = [client.callRemote("run", i) for i in range(3)]
        servers.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 1, 2])
        self.assertEqual(servers.runs(), [[], [0, 1, 2]])
        self.assertEqual(servers.servers[0].openConnections(), [])

    def test_removedWhileBackingOff(self) -> None:
        """
        An endpoint removed while it waits for its backoff is not dialled
        again.
        """
        servers = Servers(2)
        servers.servers[0].refusing = True
        client = servers.client(2)
        d = client.callRemote("wait", "q")
        servers.servers[0].flush()
        self.assertEqual(servers.servers[0].attempts, 1)
        client.setEndpoints([endpoint(1)])
        servers.advance(100)
        self.assertEqual(servers.servers[0].attempts, 1)
        servers.handlers[1].answer("q")
        servers.flush()
        self.assertEqual(self.successResultOf(d), "q")

    def test_queuedCallsDialAddedEndpoints(self) -> None:
        """
        With calls queued (no endpoint reachable), an added endpoint is
        dialled at once and takes them.
        """
        servers = Servers(2)
        servers.servers[0].refusing = True
        client = servers.client(1)
        ds = [client.callRemote("run", i) for i in range(3)]
        servers.flush()
        self.assertEqual(client.queued, 3)
        client.setEndpoints([endpoint(0), endpoint(1)])
        servers.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 1, 2])
        self.assertEqual(servers.runs(), [[], [0, 1, 2]])

    def test_readdedEndpointGetsNewConnection(self) -> None:
        """
        An endpoint removed and added back while its old connection drains
        gets a new connection; the old one still answers its calls.
        """
        servers = Servers(2)
        client = servers.client(2)
        client.connect()
        servers.flush()
        slow = client.callRemote("wait", "s")
        servers.flush()
        self.assertEqual(servers.runs()[0], ["s"])
        client.setEndpoints([endpoint(1)])
        client.setEndpoints([endpoint(0), endpoint(1)])
        ds = [client.callRemote("run", i) for i in range(4)]
        servers.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 1, 2, 3])
        self.assertEqual(servers.servers[0].attempts, 2)
        self.assertEqual(len(servers.servers[0].openConnections()), 2)
        servers.handlers[0].answer("s")
        servers.flush()
        self.assertEqual(self.successResultOf(slow), "s")
        self.assertEqual(len(servers.servers[0].openConnections()), 1)

    def test_lostWhileDrainingFailsWithCallLost(self) -> None:
        """
        A draining connection lost with calls in flight fails them with
        CallLost, as any loss in flight.
        """
        servers = Servers(2)
        client = servers.client(2)
        client.connect()
        servers.flush()
        slow = client.callRemote("wait", "s")
        servers.flush()
        client.setEndpoints([endpoint(1)])
        servers.servers[0].drop()
        self.failureResultOf(slow, CallLost)

    def test_duplicatesListedOnce(self) -> None:
        """
        An endpoint listed twice is one endpoint.
        """
        client = Servers(2).client(1)
        client.setEndpoints([endpoint(1), "server1:9002", endpoint(0)])
        self.assertEqual(list(client.endpoints), [endpoint(1), endpoint(0)])

    def test_removedBeforeHello(self) -> None:
        """
        An endpoint removed while its connection waits for the hello has
        that connection closed at once.
        """
        servers = Servers(2)
        client = servers.client(2)
        client.connect()
        for server in servers.servers:
            server._accept()
        self.assertEqual(len(servers.servers[0].openConnections()), 1)
        client.setEndpoints([endpoint(1)])
        servers.flush()
        self.assertEqual(servers.servers[0].openConnections(), [])
        self.assertEqual(list(client.readyEndpoints), [endpoint(1)])

    def test_weightedShares(self) -> None:
        """
        With weights, ready endpoints take calls in proportion; without,
        equal shares again.
        """
        servers = Servers(2)
        client = servers.client(2)
        client.setEndpoints([endpoint(0), endpoint(1)], weights=[10, 30])
        client.connect()
        servers.flush()
        ds = [client.callRemote("run", i) for i in range(40)]
        servers.flush()
        self.assertEqual(len([self.successResultOf(d) for d in ds]), 40)
        self.assertEqual([len(r) for r in servers.runs()], [10, 30])
        client.setEndpoints([endpoint(0), endpoint(1)])
        ds = [client.callRemote("run", i) for i in range(40)]
        servers.flush()
        self.assertEqual([len(r) for r in servers.runs()], [30, 50])

    def test_weightedEndpointNotReadyIsDialled(self) -> None:
        """
        A call made while a weighted endpoint is not ready dials it, as with
        equal weights.
        """
        servers = Servers(2)
        client = servers.client(1)
        d = client.callRemote("run", "a")
        servers.flush()
        self.successResultOf(d)
        client.setEndpoints([endpoint(0), endpoint(1)], weights=[3, 1])
        client.callRemote("run", "b")
        servers.flush()
        self.assertEqual(servers.servers[1].attempts, 1)
        self.assertEqual(len(client.readyEndpoints), 2)

    def test_refusals(self) -> None:
        """
        setEndpoints refuses an empty list, weights that are not one
        non-negative integer per endpoint, and a closed client.
        """
        client = Servers(1).client(1)
        self.assertRaises(ValueError, client.setEndpoints, [])
        self.assertRaises(ValueError, client.setEndpoints, ["nope"])
        self.assertRaises(ValueError, client.setEndpoints, [endpoint(0)], [1, 2])
        self.assertRaises(ValueError, client.setEndpoints, [endpoint(0)], [-1])
        self.assertRaises(ValueError, client.setEndpoints, [endpoint(0)], [1.5])
        client.close()
        self.assertRaises(ClientClosed, client.setEndpoints, [endpoint(0)])


class CoreDrainTests(SynchronousTestCase):
    """
    L{ClientConnection.drain}.
    """

    def test_finishedOnceAnswered(self) -> None:
        """
        A drained connection is finished once its calls are answered.
        """
        events = RecordingEvents()
        core = ClientConnection(events)
        core.dataReceived(frame(HELLO))
        msgid, _ = core.sendRequest("c", "m", (), {})
        core.drain()
        self.assertFalse(core.finished)
        core.dataReceived(frame([1, msgid, None, "ok"]))
        self.assertTrue(core.finished)

    def test_goawayStillHandsBackUnrun(self) -> None:
        """
        A goaway that comes while the connection drains still hands back
        the calls it proves unrun, to be sent elsewhere.
        """
        events = RecordingEvents()
        core = ClientConnection(events)
        core.dataReceived(frame(HELLO))
        first, _ = core.sendRequest("c1", "m", (), {})
        core.sendRequest("c2", "m", (), {})
        core.drain()
        core.dataReceived(frame([3, "goaway", first, "shutdown"]))
        self.assertIs(core.state, State.GOING_AWAY)
        self.assertIn(("goaway", "shutdown", ["c2"]), events.events)


class DnsServers(Servers):
    """
    L{Servers} behind a L{FakeResolver}: server I is target C{sI.test}
    (address 10.0.0.I+1) of the SRV records of L{SERVICE}.
    """

    def __init__(self, count: int = 3) -> None:
        super().__init__(count)
        self.resolver = FakeResolver()

    def publish(self, *indexes: int, ttl: int = 0, additional: bool = True) -> None:
        """
        The SRV records list these servers (and the address records of their
        targets come in the additional section, if C{additional}).
        """
        self.resolver.records = [
            srv(SERVICE, f"s{i}.test", PORTS[i], ttl=ttl) for i in indexes
        ]
        addresses = [a(f"s{i}.test", f"10.0.0.{i + 1}", ttl=ttl) for i in indexes]
        if additional:
            self.resolver.additional = addresses
        else:
            self.resolver.additional = []
            self.resolver.records += addresses

    def dnsClient(self, **kwargs: Any) -> RpcClient:
        kwargs.setdefault("resolveInterval", 10.0)
        client = RpcClient(
            self.reactor, service=SERVICE, resolver=self.resolver, **kwargs
        )
        client.factory.jitter = 0
        return client


def address(i: int) -> tuple[str, int]:
    return (f"10.0.0.{i + 1}", PORTS[i])


class DnsClientTests(SynchronousTestCase):
    """
    L{RpcClient} with C{service} or C{hostname}.
    """

    def test_arguments(self) -> None:
        """
        A service takes no port; a hostname needs one; neither goes with a
        host or endpoints, nor with each other.
        """
        reactor = Servers(1).reactor
        self.assertRaises(TypeError, RpcClient, reactor, service="s", port=1)
        self.assertRaises(TypeError, RpcClient, reactor, hostname="h")
        self.assertRaises(TypeError, RpcClient, reactor, "h", 1, service="s")
        self.assertRaises(
            TypeError, RpcClient, reactor, service="s", endpoints=[("h", 1)]
        )
        self.assertRaises(TypeError, RpcClient, reactor, service="s", hostname="h")
        self.assertRaises(ValueError, RpcClient, reactor, hostname="h", port=0)
        self.assertRaises(
            ValueError, RpcClient, reactor, service="s", resolveInterval=0
        )

    def test_resolvesOnFirstCall(self) -> None:
        """
        Nothing is resolved until the first call; its SRV records' targets
        (with their addresses from the additional section) become the
        endpoints, which take the call.
        """
        dns_ = DnsServers()
        dns_.publish(0, 1)
        client = dns_.dnsClient()
        self.assertEqual(dns_.resolver.queries, [])
        self.assertEqual(repr(client), f"<RpcClient {SERVICE} (unresolved)>")
        ds = [client.callRemote("run", i) for i in range(4)]
        dns_.flush()
        self.assertEqual(dns_.resolver.queries, [(dns.SRV, SERVICE)])
        self.assertEqual(sorted(client.endpoints), [address(0), address(1)])
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 1, 2, 3])
        self.assertEqual(
            repr(client), f"<RpcClient {SERVICE} (10.0.0.1:9001, 10.0.0.2:9002)>"
        )

    def test_targetsWithoutAdditionalRecords(self) -> None:
        """
        SRV targets whose addresses are not in the additional section are
        looked up (A and AAAA).
        """
        dns_ = DnsServers()
        dns_.publish(0, 2, additional=False)
        dns_.resolver.records.append(aaaa("s2.test", "::2"))
        client = dns_.dnsClient()
        client.connect()
        self.assertEqual(
            sorted(client.endpoints), [address(0), address(2), ("::2", PORTS[2])]
        )
        self.assertIn((dns.A, "s0.test"), dns_.resolver.queries)
        self.assertIn((dns.AAAA, "s2.test"), dns_.resolver.queries)

    def test_priorityTiers(self) -> None:
        """
        Only the lowest priority's targets are endpoints; a higher one is
        used when the lower has none.
        """
        dns_ = DnsServers()
        dns_.resolver.records = [
            srv(SERVICE, "s0.test", PORTS[0], priority=10),
            srv(SERVICE, "s1.test", PORTS[1], priority=20),
        ]
        dns_.resolver.additional = [a("s0.test", "10.0.0.1"), a("s1.test", "10.0.0.2")]
        client = dns_.dnsClient()
        client.connect()
        self.assertEqual(list(client.endpoints), [address(0)])
        dns_.resolver.additional = [a("s1.test", "10.0.0.2")]
        dns_.advance(10)
        self.assertEqual(list(client.endpoints), [address(1)])

    def test_srvWeights(self) -> None:
        """
        SRV weights share the calls among the ready endpoints.
        """
        dns_ = DnsServers()
        dns_.resolver.records = [
            srv(SERVICE, "s0.test", PORTS[0], weight=1),
            srv(SERVICE, "s1.test", PORTS[1], weight=3),
        ]
        dns_.resolver.additional = [a("s0.test", "10.0.0.1"), a("s1.test", "10.0.0.2")]
        client = dns_.dnsClient()
        client.connect()
        dns_.flush()
        ds = [client.callRemote("run", i) for i in range(40)]
        dns_.flush()
        self.assertEqual(len([self.successResultOf(d) for d in ds]), 40)
        self.assertEqual([len(r) for r in dns_.runs()], [10, 30, 0])

    def test_hostname(self) -> None:
        """
        With a hostname, each A and AAAA address is an endpoint on the port.
        """
        servers = Servers(1)
        resolver = FakeResolver()
        resolver.records = [
            a("billing.test", "10.0.0.2"),
            a("billing.test", "10.0.0.1"),
            aaaa("billing.test", "fd00::1"),
        ]
        client = RpcClient(
            servers.reactor, hostname="billing.test", port=PORTS[0], resolver=resolver
        )
        d = client.callRemote("run", 1)
        servers.flush()
        self.assertEqual(
            list(client.endpoints),
            [("10.0.0.1", 9001), ("10.0.0.2", 9001), ("fd00::1", 9001)],
        )
        self.assertEqual(self.successResultOf(d), 1)

    def test_reresolvesAndDrains(self) -> None:
        """
        Resolution is repeated every interval (TTLs under it do not make it
        sooner); an endpoint that disappears is drained, one that appears
        takes calls.
        """
        dns_ = DnsServers()
        dns_.publish(0, 1, ttl=1)
        client = dns_.dnsClient()
        client.connect()
        dns_.flush()
        slow = client.callRemote("wait", "s")
        dns_.flush()
        onFirst = dns_.runs()[0] == ["s"]
        dns_.publish(2, 1 if onFirst else 0)
        dns_.advance(9.9)
        self.assertEqual(dns_.resolver.serviceQueries(), 1)
        dns_.advance(0.1)
        self.assertEqual(dns_.resolver.serviceQueries(), 2)
        drained = 0 if onFirst else 1
        self.assertNotIn(address(drained), client.endpoints)
        # The first call dials the new endpoint; calls go to it once ready.
        ds = [client.callRemote("run", i) for i in range(5)]
        dns_.flush()
        ds += [client.callRemote("run", i) for i in range(5, 9)]
        dns_.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], list(range(9)))
        self.assertEqual(dns_.runs()[drained], ["s"])
        self.assertEqual(len(dns_.runs()[2]), 2)
        self.assertEqual(len(dns_.servers[drained].openConnections()), 1)
        dns_.handlers[drained].answer("s")
        dns_.flush()
        self.assertEqual(self.successResultOf(slow), "s")
        self.assertEqual(dns_.servers[drained].openConnections(), [])

    def test_longTtlDelaysResolution(self) -> None:
        """
        A TTL above the interval is waited for, up to five minutes.
        """
        dns_ = DnsServers()
        dns_.publish(0, ttl=45)
        client = dns_.dnsClient()
        client.connect()
        dns_.advance(44)
        self.assertEqual(dns_.resolver.serviceQueries(), 1)
        dns_.advance(1)
        self.assertEqual(dns_.resolver.serviceQueries(), 2)
        dns_.publish(0, ttl=86400)
        dns_.advance(45)
        dns_.advance(299)
        self.assertEqual(dns_.resolver.serviceQueries(), 3)
        dns_.advance(1)
        self.assertEqual(dns_.resolver.serviceQueries(), 4)

    def test_failureKeepsEndpoints(self) -> None:
        """
        A failed resolution, or one that finds no records, keeps the last
        endpoints and is retried with a backoff (1, 2, 4 s...).
        """
        dns_ = DnsServers()
        dns_.publish(0, 1)
        client = dns_.dnsClient()
        client.connect()
        dns_.resolver.failing.add(SERVICE)
        dns_.advance(10)
        self.assertEqual(dns_.resolver.serviceQueries(), 2)
        self.assertEqual(sorted(client.endpoints), [address(0), address(1)])
        dns_.advance(1)
        self.assertEqual(dns_.resolver.serviceQueries(), 3)
        dns_.advance(1.9)
        self.assertEqual(dns_.resolver.serviceQueries(), 3)
        dns_.advance(0.1)
        self.assertEqual(dns_.resolver.serviceQueries(), 4)
        dns_.resolver.failing.clear()
        dns_.publish()
        dns_.advance(4)
        self.assertEqual(dns_.resolver.serviceQueries(), 5)
        self.assertEqual(sorted(client.endpoints), [address(0), address(1)])
        ds = [client.callRemote("run", i) for i in range(2)]
        dns_.flush()
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 1])
        self.flushLoggedErrors()

    def test_nothingResolvedYet(self) -> None:
        """
        With no endpoint ever resolved, calls wait in the queue (and time
        out), resolution is retried with a backoff, and queued calls go once
        records appear.
        """
        dns_ = DnsServers()
        client = dns_.dnsClient(timeout=2.5)
        late = client.callRemote("run", "late")
        dns_.advance(1)
        self.assertEqual(dns_.resolver.serviceQueries(), 2)
        self.assertEqual(client.queued, 1)
        dns_.advance(1.6)
        self.failureResultOf(late, CallTimeout)
        d = client.callRemote("run", "ok")
        dns_.publish(1)
        dns_.advance(0.3)
        self.assertEqual(dns_.resolver.serviceQueries(), 2)
        self.assertNoResult(d)
        dns_.advance(0.1)
        self.assertEqual(dns_.resolver.serviceQueries(), 3)
        self.assertEqual(self.successResultOf(d), "ok")
        self.assertEqual(dns_.runs(), [[], ["ok"], []])

    def test_connectionFailureResolvesSoon(self) -> None:
        """
        A connection that fails asks for a resolution at once, at most once
        per min(interval, 5 s).
        """
        dns_ = DnsServers()
        dns_.publish(0, 1)
        client = dns_.dnsClient(resolveInterval=30.0)
        client.connect()
        dns_.flush()
        dns_.advance(6)
        self.assertEqual(dns_.resolver.serviceQueries(), 1)
        dns_.publish(1)
        dns_.servers[0].drop()
        dns_.advance(0)
        self.assertEqual(dns_.resolver.serviceQueries(), 2)
        self.assertEqual(list(client.endpoints), [address(1)])
        dns_.servers[1].drop()
        dns_.advance(4.9)
        self.assertEqual(dns_.resolver.serviceQueries(), 2)
        dns_.advance(0.1)
        self.assertEqual(dns_.resolver.serviceQueries(), 3)

    def test_refusedAttemptResolvesSoon(self) -> None:
        """
        A connection attempt that fails asks for a resolution sooner than
        the interval (within min(interval, 5 s) of the last one).
        """
        dns_ = DnsServers()
        dns_.publish(0, 1)
        dns_.servers[0].refusing = True
        client = dns_.dnsClient(resolveInterval=30.0)
        client.connect()
        dns_.flush()
        self.assertEqual(client.stats.connectFailures, 1)
        dns_.advance(4.9)
        self.assertEqual(dns_.resolver.serviceQueries(), 1)
        dns_.advance(0.1)
        self.assertEqual(dns_.resolver.serviceQueries(), 2)

    def test_targetsAsAddressesAndFailedTargets(self) -> None:
        """
        An SRV target that is an IP address is used as it is; one whose
        address lookups fail is left out, and the others are used.
        """
        dns_ = DnsServers()
        dns_.resolver.records = [
            srv(SERVICE, "10.0.0.1", PORTS[0]),
            srv(SERVICE, "gone.test", PORTS[1]),
            srv(SERVICE, "s2.test", PORTS[2]),
            a("s2.test", "10.0.0.3"),
        ]
        dns_.resolver.failing.add("gone.test")
        client = dns_.dnsClient()
        client.connect()
        self.assertEqual(sorted(client.endpoints), [address(0), address(2)])

    def test_hostnameLookupsFail(self) -> None:
        """
        A host name whose A and AAAA lookups both fail is a failed
        resolution: retried after the backoff.
        """
        servers = Servers(1)
        resolver = FakeResolver()
        resolver.failing.add("billing.test")
        client = RpcClient(
            servers.reactor,
            hostname="billing.test",
            port=PORTS[0],
            resolver=resolver,
            resolveInterval=10,
        )
        client.connect()
        self.assertEqual(len(resolver.queries), 2)
        resolver.failing.clear()
        resolver.records = [a("billing.test", "10.0.0.1")]
        servers.advance(1)
        self.assertEqual(list(client.endpoints), [address(0)])

    def test_closeStopsResolving(self) -> None:
        """
        A closed client resolves no more, and an answer still to come is
        dropped.
        """
        dns_ = DnsServers()
        dns_.publish(0)
        client = dns_.dnsClient()
        client.connect()
        dns_.resolver.holding = True
        dns_.advance(10)
        self.assertEqual(len(dns_.resolver.held), 1)
        client.close()
        dns_.resolver.held[0].callback(None)
        self.assertEqual(list(client.endpoints), [address(0)])
        self.assertEqual(dns_.reactor.getDelayedCalls(), [])

    def test_oneResolutionAtATime(self) -> None:
        """
        While a resolution waits for its answer, connection failures start
        no other.
        """
        dns_ = DnsServers()
        dns_.publish(0, 1)
        client = dns_.dnsClient()
        client.connect()
        dns_.flush()
        dns_.resolver.holding = True
        dns_.advance(10)
        dns_.servers[0].drop()
        self.assertEqual(dns_.resolver.serviceQueries(), 2)
        held: Deferred[Any] = dns_.resolver.held[0]
        held.callback(None)
        self.assertEqual(sorted(client.endpoints), [address(0), address(1)])

    def test_lookupErrorLogged(self) -> None:
        """
        A resolution failing is logged with the name and the error.
        """
        dns_ = DnsServers()
        dns_.resolver.failing.add(SERVICE)
        collector = LogCollector()
        globalLogPublisher.addObserver(collector)
        self.addCleanup(globalLogPublisher.removeObserver, collector)
        client = dns_.dnsClient()
        client.connect()
        messages = [e for e in collector.events if e.get("name") == SERVICE]
        self.assertTrue(messages)
        self.assertIn("no answer", messages[0]["why"])


class ResolvConfTests(SynchronousTestCase):
    """
    L{parseResolvConf}.
    """

    def test_nameserverLines(self) -> None:
        """
        Each nameserver line gives an address on port 53; comments and
        other lines are skipped.
        """
        text = (
            "# generated\nsearch default.svc.cluster.local\n"
            "nameserver 10.96.0.10\nnameserver fd00::a # second\noptions ndots:5\n"
        )
        self.assertEqual(parseResolvConf(text), [("10.96.0.10", 53), ("fd00::a", 53)])


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _deadUdpPort() -> int:
    """
    A UDP port on 127.0.0.1 that nothing listens on (for now).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class BlockingResolutionTests(TestCase):
    """
    L{ResolvedServers}, the blocking client's resolution, against a real
    C{twisted.names} server on 127.0.0.1 (queried from a thread).
    """

    def setUp(self) -> None:
        self.zone = ZoneResolver()
        self.nameserver = ("127.0.0.1", listenDns(self, self.zone))
        self.clock = _Clock()

    def resolved(self, **kwargs: Any) -> ResolvedServers:
        kwargs.setdefault("service", None)
        kwargs.setdefault("hostname", None)
        kwargs.setdefault("port", None)
        kwargs.setdefault("nameservers", [self.nameserver])
        return ResolvedServers(interval=10.0, clock=self.clock, **kwargs)

    @inlineCallbacks
    def test_srvBestPriorityAndRefresh(self) -> Any:
        """
        A service's servers are the SRV targets of the lowest priority, with
        the addresses of the additional section; they are kept until the
        interval passes, then resolved again: a backup priority is used when
        the lower one has no target left.
        """
        self.zone.setRecords(
            [
                srv(SERVICE, "backup.test", 2002, priority=20),
                srv(SERVICE, "main.test", 2001, priority=10),
                srv(SERVICE, "main.test", 2003, priority=10),
                a("main.test", "127.0.0.1"),
                a("backup.test", "127.0.0.2"),
            ]
        )
        servers = self.resolved(service=SERVICE)
        found = yield deferToThread(servers.refresh)
        self.assertEqual(sorted(found), [("127.0.0.1", 2001), ("127.0.0.1", 2003)])
        self.zone.setRecords(
            [
                srv(SERVICE, "backup.test", 2002, priority=20),
                a("backup.test", "127.0.0.2"),
            ]
        )
        self.clock.now += 9.9
        found = yield deferToThread(servers.refresh)
        self.assertEqual(sorted(found), [("127.0.0.1", 2001), ("127.0.0.1", 2003)])
        self.clock.now += 0.1
        found = yield deferToThread(servers.refresh)
        self.assertEqual(found, [("127.0.0.2", 2002)])

    @inlineCallbacks
    def test_hostnameRecords(self) -> Any:
        """
        A host name's servers are its A and AAAA addresses on the port.
        """
        self.zone.setRecords(
            [
                a("billing.test", "127.0.0.2"),
                a("billing.test", "127.0.0.1"),
                aaaa("billing.test", "::1"),
            ]
        )
        servers = self.resolved(hostname="billing.test", port=7)
        found = yield deferToThread(servers.refresh)
        self.assertEqual(found, [("127.0.0.1", 7), ("127.0.0.2", 7), ("::1", 7)])

    @inlineCallbacks
    def test_noRecordsKeepsServers(self) -> Any:
        """
        A name that no longer exists keeps the last servers and is asked
        again after a backoff; one that never existed raises gaierror.
        """
        self.zone.setRecords(
            [srv(SERVICE, "main.test", 2001), a("main.test", "127.0.0.1")]
        )
        servers = self.resolved(service=SERVICE)
        yield deferToThread(servers.refresh)
        self.zone.setRecords([])
        self.clock.now += 10
        found = yield deferToThread(servers.refresh)
        self.assertEqual(found, [("127.0.0.1", 2001)])
        self.zone.setRecords(
            [srv(SERVICE, "main.test", 2002), a("main.test", "127.0.0.1")]
        )
        self.clock.now += 0.9
        found = yield deferToThread(servers.refresh)
        self.assertEqual(found, [("127.0.0.1", 2001)])
        self.clock.now += 0.1
        found = yield deferToThread(servers.refresh)
        self.assertEqual(found, [("127.0.0.1", 2002)])
        never = self.resolved(service="_none._tcp.test")
        yield self.assertFailure(deferToThread(never.refresh), socket.gaierror)

    @inlineCallbacks
    def test_forcedRefresh(self) -> Any:
        """
        refresh(force=True) resolves again before the interval, unless a
        resolution started less than min(interval, 5 s) ago.
        """
        self.zone.setRecords(
            [srv(SERVICE, "main.test", 2001), a("main.test", "127.0.0.1")]
        )
        servers = self.resolved(service=SERVICE)
        yield deferToThread(servers.refresh)
        self.zone.setRecords(
            [srv(SERVICE, "main.test", 2002), a("main.test", "127.0.0.1")]
        )
        self.clock.now += 4
        found = yield deferToThread(servers.refresh, True)
        self.assertEqual(found, [("127.0.0.1", 2001)])
        self.clock.now += 1
        found = yield deferToThread(servers.refresh, True)
        self.assertEqual(found, [("127.0.0.1", 2002)])

    @inlineCallbacks
    def test_nameserversInTurn(self) -> Any:
        """
        A name server that does not answer is skipped for the next; with
        none answering, resolving raises gaierror naming each.
        """
        self.zone.setRecords(
            [srv(SERVICE, "main.test", 2001), a("main.test", "127.0.0.1")]
        )
        dead = ("127.0.0.1", _deadUdpPort())
        servers = self.resolved(service=SERVICE, nameservers=[dead, self.nameserver])
        found = yield deferToThread(servers.refresh)
        self.assertEqual(found, [("127.0.0.1", 2001)])
        alone = self.resolved(service=SERVICE, nameservers=[dead])
        error = yield self.assertFailure(deferToThread(alone.refresh), socket.gaierror)
        self.assertIn(f"127.0.0.1:{dead[1]}", str(error))

    @inlineCallbacks
    def test_truncatedAnswerOverTcp(self) -> Any:
        """
        An answer truncated over UDP is asked again over TCP.
        """
        self.zone.setRecords(
            [srv(SERVICE, f"s{i}.test", 3000 + i) for i in range(3)]
            + [a(f"s{i}.test", "127.0.0.1") for i in range(3)]
        )
        port = listenDns(self, self.zone, truncate=True)
        tcp = reactor.listenTCP(
            port, dnsServerFactory(self.zone), interface="127.0.0.1"
        )
        self.addCleanup(tcp.stopListening)
        servers = self.resolved(service=SERVICE, nameservers=[("127.0.0.1", port)])
        found = yield deferToThread(servers.refresh)
        self.assertEqual(sorted(found), [("127.0.0.1", 3000 + i) for i in range(3)])

    @inlineCallbacks
    def test_srvTargetsLookedUp(self) -> Any:
        """
        SRV targets without addresses in the additional section are looked
        up (A and AAAA); a target without any is left out.
        """
        self.zone.withAdditional = False
        self.zone.setRecords(
            [
                srv(SERVICE, "main.test", 2001),
                srv(SERVICE, "gone.test", 2002),
                a("main.test", "127.0.0.1"),
                aaaa("main.test", "::1"),
            ]
        )
        servers = self.resolved(service=SERVICE)
        found = yield deferToThread(servers.refresh)
        self.assertEqual(found, [("127.0.0.1", 2001), ("::1", 2001)])

    @inlineCallbacks
    def test_hostnameBySystem(self) -> Any:
        """
        Without name servers, a host name is resolved by the system.
        """
        servers = self.resolved(hostname="localhost", port=7, nameservers=None)
        found = yield deferToThread(servers.refresh)
        self.assertIn(("127.0.0.1", 7), found)

    def test_systemNameservers(self) -> None:
        """
        The system's name servers come from resolv.conf; without one, or
        with none listed, 127.0.0.1.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("nameserver 10.96.0.10\n")
        self.assertEqual(systemNameservers(path), [("10.96.0.10", 53)])
        self.assertEqual(systemNameservers(path + ".missing"), [("127.0.0.1", 53)])

    @inlineCallbacks
    def test_resolutionWithinTheCallsTimeout(self) -> Any:
        """
        A name server that never answers holds a call no longer than its
        timeout (not the 2 s a query may wait): the call fails with
        gaierror, nothing resolved.
        """
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        client = TcpRpcClient(
            service=SERVICE, nameservers=[silent.getsockname()], timeout=0.3
        )
        started = time.monotonic()
        yield self.assertFailure(deferToThread(client.call, "pid"), socket.gaierror)
        self.assertLess(time.monotonic() - started, 1.0)

    def test_clientArguments(self) -> None:
        """
        TcpRpcClient takes a service (no port) or a hostname (with a port),
        not with a host, servers or each other; it resolves nothing until it
        connects.
        """
        self.assertRaises(TypeError, TcpRpcClient, service="s", port=1)
        self.assertRaises(TypeError, TcpRpcClient, hostname="h")
        self.assertRaises(TypeError, TcpRpcClient, "h", 1, service="s")
        self.assertRaises(TypeError, TcpRpcClient, service="s", servers=["h:1"])
        self.assertRaises(TypeError, TcpRpcClient, service="s", hostname="h")
        self.assertRaises(ValueError, TcpRpcClient, hostname="h", port=0)
        client = TcpRpcClient(service=SERVICE, nameservers=["127.0.0.1:1"])
        self.assertEqual(repr(client), f"<TcpRpcClient {SERVICE} (unresolved)>")
        self.assertEqual(client.servers, [])
