"""
DNS for the discovery tests: L{FakeResolver}, an C{IResolver} answering
from records the test sets, and L{startDnsServer}, a real C{twisted.names}
authoritative server on 127.0.0.1 whose records the test changes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.names import dns, error
from twisted.names.common import ResolverBase
from twisted.names.server import DNSServerFactory
from twisted.trial.unittest import SynchronousTestCase


def srv(
    name: str, target: str, port: int, priority: int = 0, weight: int = 0, ttl: int = 0
) -> dns.RRHeader:
    """
    An SRV record of C{name}.
    """
    return dns.RRHeader(
        name.encode(),
        dns.SRV,
        ttl=ttl,
        payload=dns.Record_SRV(priority, weight, port, target.encode(), ttl=ttl),
    )


def a(name: str, address: str, ttl: int = 0) -> dns.RRHeader:
    """
    An A record of C{name}.
    """
    return dns.RRHeader(
        name.encode(), dns.A, ttl=ttl, payload=dns.Record_A(address, ttl=ttl)
    )


def aaaa(name: str, address: str, ttl: int = 0) -> dns.RRHeader:
    """
    An AAAA record of C{name}.
    """
    return dns.RRHeader(
        name.encode(), dns.AAAA, ttl=ttl, payload=dns.Record_AAAA(address, ttl=ttl)
    )


class FakeResolver(ResolverBase):
    """
    Answers lookups from C{records} (by query type and name): the answer
    section lists the records of that type and name, the additional section
    C{additional}.  A name in C{failing} fails with a server failure; with
    C{holding}, answers wait in C{held} until the test fires them.

    @ivar queries: every query, as C{(type, name)}, in order.
    """

    def __init__(self) -> None:
        ResolverBase.__init__(self)
        self.records: list[dns.RRHeader] = []
        self.additional: list[dns.RRHeader] = []
        self.failing: set[str] = set()
        self.holding = False
        self.held: list[Deferred[Any]] = []
        self.queries: list[tuple[int, str]] = []

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:
        key = name.decode()
        self.queries.append((type, key))
        if key in self.failing:
            return fail(error.DNSServerError(f"no answer for {key}"))
        answers = [r for r in self.records if r.type == type and str(r.name) == key]
        result: Any = (answers, [], list(self.additional))
        if self.holding:
            d: Deferred[Any] = Deferred()
            self.held.append(d)
            d.addCallback(lambda _: result)
            return d
        return succeed(result)

    def serviceQueries(self) -> int:
        """
        How many SRV queries were made.
        """
        return sum(1 for kind, _ in self.queries if kind == dns.SRV)


class ZoneResolver(ResolverBase):
    """
    An authoritative resolver for the names the test sets (L{setRecords}):
    what L{dnsServerFactory} serves.  An SRV answer carries the A records of
    its targets in its additional section, as Consul's does (unless
    C{withAdditional} is false).
    """

    def __init__(self) -> None:
        ResolverBase.__init__(self)
        self.records: dict[str, list[dns.RRHeader]] = {}
        self.withAdditional = True

    def setRecords(self, records: list[dns.RRHeader]) -> None:
        """
        Replace every record.
        """
        byName: dict[str, list[dns.RRHeader]] = {}
        for record in records:
            byName.setdefault(str(record.name).lower(), []).append(record)
        self.records = byName

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:
        key = name.decode().rstrip(".").lower()
        if key not in self.records:
            return fail(error.AuthoritativeDomainError(key))
        answers = [r for r in self.records[key] if r.type == type]
        additional = []
        for record in answers if self.withAdditional else []:
            if record.type == dns.SRV:
                payload: Any = record.payload
                target = str(payload.target).lower()
                additional += [
                    r for r in self.records.get(target, []) if r.type == dns.A
                ]
        return succeed((answers, [], additional))


def dnsServerFactory(resolver: ZoneResolver) -> DNSServerFactory:
    """
    A factory for an authoritative DNS server answering from C{resolver}
    (no cache, no recursion): listen with it over TCP, and with a
    L{twisted.names.dns.DNSDatagramProtocol} of it over UDP.
    """
    return DNSServerFactory(authorities=[resolver])


class TruncatingFactory(DNSServerFactory):
    """
    A DNS server factory whose UDP answers are all truncated (empty, with the
    TC bit): the client must ask again over TCP.
    """

    def sendReply(self, protocol: Any, message: dns.Message, address: Any) -> None:
        if address is not None:
            message.trunc = 1
            message.answers = []
            message.additional = []
        DNSServerFactory.sendReply(self, protocol, message, address)


def listenDns(
    testCase: SynchronousTestCase, resolver: ZoneResolver, truncate: bool = False
) -> int:
    """
    Serve C{resolver}'s records over UDP on 127.0.0.1, on a free port, until
    C{testCase} ends (every answer truncated, if C{truncate}); the port.
    """
    from twisted.internet import reactor

    factory = (
        TruncatingFactory(authorities=[resolver])
        if truncate
        else dnsServerFactory(resolver)
    )
    udp = reactor.listenUDP(  # type: ignore[attr-defined]
        0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1"
    )
    testCase.addCleanup(udp.stopListening)
    port: int = udp.getHost().port
    return port
