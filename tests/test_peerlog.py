"""
Tests for L{agilerpc._peerlog}: what a peer can make the server log is
limited per host, and what was held back is counted.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, LogPublisher, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import Registry, RpcServerFactory
from agilerpc._peerlog import BURST, PeerLog

from .serverhelpers import LogCollector, RecordingTransport

ONE = IPv4Address("TCP", "127.0.0.1", 40000)
ONE_AGAIN = IPv4Address("TCP", "127.0.0.1", 40001)
TWO = IPv6Address("TCP", "::1", 40000)


class PeerLogTests(SynchronousTestCase):
    """
    L{PeerLog.allow}: a burst per host, then a steady rate.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.log = PeerLog(self.clock.seconds, burst=3, perSecond=2.0, peers=2)

    def test_burstThenHeldBack(self) -> None:
        """
        A host's first C{burst} events go through; the next are held back.
        """
        self.assertEqual([self.log.allow(ONE) for _ in range(5)], [0, 0, 0, None, None])

    def test_everyConnectionOfAHostCounts(self) -> None:
        """
        Two connections (ports) of one host share its allowance.
        """
        for _ in range(3):
            self.log.allow(ONE)
        self.assertIsNone(self.log.allow(ONE_AGAIN))

    def test_hostsApart(self) -> None:
        """
        Another host has its own allowance.
        """
        for _ in range(4):
            self.log.allow(ONE)
        self.assertEqual(self.log.allow(TWO), 0)

    def test_refillCountsHeldBack(self) -> None:
        """
        The allowance refills at C{perSecond}; the first event let through
        after some were held back says how many.
        """
        for _ in range(6):
            self.log.allow(ONE)
        self.clock.advance(0.49)
        self.assertIsNone(self.log.allow(ONE))
        self.clock.advance(0.01)
        self.assertEqual(self.log.allow(ONE), 4)
        self.assertIsNone(self.log.allow(ONE))
        self.clock.advance(10)
        self.assertEqual([self.log.allow(ONE) for _ in range(4)], [1, 0, 0, None])

    def test_peersBounded(self) -> None:
        """
        Only C{peers} hosts are remembered; the least recently seen is
        forgotten (and starts afresh).
        """
        for _ in range(4):
            self.log.allow(ONE)
        self.log.allow(TWO)
        self.log.allow(UNIXAddress(None))
        self.assertEqual(self.log.allow(ONE), 0)

    def test_emit(self) -> None:
        """
        L{PeerLog.emit} logs through the logger with the peer, the fields and
        the failure, and says how many were held back.
        """
        collector = LogCollector()
        publisher = LogPublisher(collector)
        logger = Logger(observer=publisher)
        failure = Failure(ValueError("boom"))
        for _ in range(4):
            self.log.emit(logger, LogLevel.error, "{peer} failed", ONE, failure, x=1)
        self.clock.advance(1)
        self.log.emit(logger, LogLevel.warn, "{peer} refused", ONE)
        events = collector.events
        self.assertEqual(len(events), 4)
        self.assertEqual(
            [e["log_level"] for e in events[:3]],
            [LogLevel.error] * 3,
        )
        self.assertIs(events[0]["log_failure"], failure)
        self.assertEqual((events[0]["peer"], events[0]["x"]), (ONE, 1))
        self.assertEqual(events[3]["suppressed"], 1)
        self.assertIn(
            "1 more from this host were not logged",
            events[3]["log_format"].format(**events[3]),
        )


class ServerLogLimitTests(SynchronousTestCase):
    """
    A server logs at most a burst of events a peer can cause, however many
    connections it opens.
    """

    def test_busyRefusals(self) -> None:
        """
        Connections refused as busy are logged C{BURST} at a time per host.
        """
        clock = Clock()
        factory = RpcServerFactory(Registry(), clock, maxConnections=1)
        factory.buildProtocol(ONE).makeConnection(RecordingTransport())
        collector = LogCollector()
        globalLogPublisher.addObserver(collector)
        self.addCleanup(globalLogPublisher.removeObserver, collector)
        for _ in range(BURST + 20):
            protocol: Any = factory.buildProtocol(ONE)
            protocol.makeConnection(RecordingTransport())
        refused = [e for e in collector.events if "refused" in e.get("log_format", "")]
        self.assertEqual(len(refused), BURST)
        clock.advance(1)
        factory.buildProtocol(ONE).makeConnection(RecordingTransport())
        refused = [e for e in collector.events if "refused" in e.get("log_format", "")]
        self.assertEqual(refused[-1]["suppressed"], 20)
