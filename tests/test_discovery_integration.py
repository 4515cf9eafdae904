"""
Integration test of L{agilerpc.RpcClient} finding its servers in DNS: a
real C{twisted.names} authoritative server on 127.0.0.1, whose SRV records
the test changes, in front of three C{twistd -n agilerpc} subprocesses, each
with its own ledger of the C{incr(token)} calls it ran.  The fleet scales
from 1 server to 3 and back to 1 while 20 callers stream calls.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.names import client as dnsclient
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from agilerpc import RpcClient, TcpRpcClient

from .dnshelpers import ZoneResolver, a, listenDns, srv
from .incrstream import BlockingIncrStream, IncrStream
from .serverprocess import ServerProcess, scale

SERVICE = "_agilerpc._tcp.billing.test"

_log = Logger()


def _pause(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def _tokens(path: str) -> Counter[int]:
    """
    The tokens a server's ledger lists, by number, with how often each ran.
    """
    if not os.path.exists(path):
        return Counter()
    with open(path, encoding="utf-8") as f:
        return Counter(int(line.strip()[1:]) for line in f if line.strip())


def _publish(zone: ZoneResolver, servers: list[ServerProcess]) -> None:
    """
    The SRV records of L{SERVICE} list C{servers} (TTL 0), each target a
    name with an A record of 127.0.0.1.
    """
    records = []
    for server in servers:
        target = f"s{server.port}.billing.test"
        records.append(srv(SERVICE, target, server.port))
        records.append(a(target, "127.0.0.1"))
    zone.setRecords(records)


class DnsScaleTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def _waitForEndpoints(self, client: RpcClient, servers: list[ServerProcess]) -> Any:
        wanted = sorted(("127.0.0.1", s.port) for s in servers)
        deadline = time.monotonic() + 10
        while sorted(client.endpoints) != wanted:
            self.assertLess(time.monotonic(), deadline, list(client.endpoints))
            yield _pause(0.01)

    @inlineCallbacks
    def test_scaleOneThreeOne(self) -> Any:
        """
        While 20 callers stream calls, the SRV records go from one server to
        three and back to one (another one): every call is answered and ran
        exactly once, each server gets calls while it is listed, and none
        made after its removal reached the client.
        """
        ledgers = [os.path.abspath(self.mktemp()) for _ in range(3)]
        servers = [ServerProcess.start(self, ledger=ledger) for ledger in ledgers]
        zone = ZoneResolver()
        _publish(zone, servers[:1])
        # Only this server: createResolver would also ask the name server of
        # /etc/resolv.conf.
        resolver = dnsclient.Resolver(
            servers=[("127.0.0.1", listenDns(self, zone))], reactor=reactor
        )
        client = RpcClient(
            reactor, service=SERVICE, resolver=resolver, resolveInterval=0.1, timeout=30
        )
        self.addCleanup(client.close, 1)
        phase = scale(1, 10)
        callers = scale(20, 100)

        started = time.monotonic()
        stream = IncrStream(self, [client], callers)
        yield self._waitForEndpoints(client, servers[:1])
        yield _pause(phase)
        _publish(zone, servers)
        yield self._waitForEndpoints(client, servers)
        scaledUp = stream.issued
        yield _pause(phase)
        _publish(zone, servers[2:])
        yield self._waitForEndpoints(client, servers[2:])
        scaledDown = stream.issued
        yield _pause(phase)
        yield stream.stop()
        duration = time.monotonic() - started

        failures = [
            r.getErrorMessage()
            for r in stream.results.values()
            if isinstance(r, Failure)
        ]
        self.assertEqual(failures[:3], [])
        runs = [_tokens(ledger) for ledger in ledgers]
        total = sum(runs, Counter())
        self.assertEqual(set(total), {int(t[1:]) for t in stream.results})
        self.assertEqual([t for t, n in total.items() if n != 1], [])
        # Load per server and phase: before the scale-up, while three are
        # listed, after the scale-down.
        phases = [
            [
                sum(1 for t in run if t < scaledUp),
                sum(1 for t in run if scaledUp <= t < scaledDown),
                sum(1 for t in run if t >= scaledDown),
            ]
            for run in runs
        ]
        _log.info(
            "DNS scale 1-3-1: {calls} calls by {callers} callers in {duration:.2f} s; "
            "per server [before, while 3, after]: {phases}",
            calls=len(stream.results),
            callers=callers,
            duration=duration,
            phases=phases,
        )
        self.assertGreater(phases[0][0], 50, phases)
        for server in range(3):
            self.assertGreater(phases[server][1], 50, phases)
        self.assertGreater(phases[2][2], 50, phases)
        # Nothing made after the scale-down reached a removed server.
        self.assertEqual([phases[0][2], phases[1][2]], [0, 0], phases)
        # The removed servers' connections were drained and closed.
        deadline = time.monotonic() + 5
        while {p.endpoint.port for p in client._connections} != {servers[2].port}:
            self.assertLess(time.monotonic(), deadline)
            yield _pause(0.01)


class BlockingDnsTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_tcpClientFollowsTheRecords(self) -> Any:
        """
        TcpRpcClient(service=..., nameservers=[...]) connects to the server
        the SRV records list; when that server leaves the records and stops,
        its next connection goes to the one listed now: every call succeeds
        and ran exactly once.
        """
        ledger = os.path.abspath(self.mktemp())
        one = ServerProcess.start(self, ledger=ledger)
        two = ServerProcess.start(self, ledger=ledger)
        zone = ZoneResolver()
        _publish(zone, [one])
        client = TcpRpcClient(
            service=SERVICE,
            nameservers=[("127.0.0.1", listenDns(self, zone))],
            resolveInterval=0.1,
            timeout=10,
        )
        self.addCleanup(client.close)
        first = yield deferToThread(client.call, "pid")
        self.assertEqual(first, one.pid)
        calls = BlockingIncrStream(self, client, "t")
        results = calls.results
        yield _pause(0.3)
        before = len(results)
        _publish(zone, [two])
        code = yield deferToThread(one.stop)
        self.assertIn(code, (0, -signal.SIGTERM), one.output())
        yield _pause(0.3)
        yield calls.stop()

        self.assertEqual(calls.failures()[:3], [])
        runs = _tokens(ledger)
        self.assertEqual(set(runs), {int(t[1:]) for t in results})
        self.assertEqual([t for t, n in runs.items() if n != 1], [])
        self.assertGreater(before, 20)
        self.assertGreater(len(results) - before, 20)
        last = yield deferToThread(client.call, "pid")
        self.assertEqual(last, two.pid)
        self.assertEqual(client.servers, [("127.0.0.1", two.port)])
