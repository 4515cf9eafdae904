"""
L{TcpRpcClient}'s servers from DNS, without a reactor: one query at a time
over a plain UDP socket (TCP when the answer is truncated), encoded and
decoded by L{twisted.names.dns.Message}; what the answers mean and when to
ask again is L{agilerpc._discovery}'s, as for L{RpcClient}.

Imported only by a client made with C{service} or C{hostname}.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable, Sequence

from twisted.names import dns

from ._discovery import (
    Schedule,
    addressRecords,
    bestTier,
    hostEndpoints,
    orderSrv,
    srvTargets,
)

#: Seconds to wait for one name server's answer to one query.
QUERY_TIMEOUT = 2.0

#: Where the system's name servers are listed.
RESOLV_CONF = "/etc/resolv.conf"


def parseResolvConf(text: str) -> list[tuple[str, int]]:
    """
    The C{nameserver} lines of a resolv.conf, as C{(address, 53)}.
    """
    servers = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append((fields[1], 53))
    return servers


def systemNameservers(path: str = RESOLV_CONF) -> list[tuple[str, int]]:
    """
    The system's name servers (127.0.0.1 if it lists none, as the C library
    does).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            servers = parseResolvConf(f.read())
    except OSError:
        servers = []
    return servers or [("127.0.0.1", 53)]


def _exchange(
    payload: bytes, nameserver: tuple[str, int], timeout: float, tcp: bool
) -> bytes:
    family = socket.AF_INET6 if ":" in nameserver[0] else socket.AF_INET
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(timeout)
        sock.connect(nameserver)
        if not tcp:
            sock.send(payload)
            return sock.recv(65535)
        sock.sendall(struct.pack("!H", len(payload)) + payload)
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
            chunk = sock.recv(65535)
            if not chunk:
                raise ConnectionResetError(f"{nameserver} closed the DNS connection")
            data += chunk
        return data[2 : 2 + struct.unpack("!H", data[:2])[0]]


def query(
    name: str,
    kind: int,
    nameservers: Sequence[tuple[str, int]],
    timeout: float = QUERY_TIMEOUT,
) -> dns.Message:
    """
    Ask each name server in turn for C{name}'s records of type C{kind}
    until one answers (a name that does not exist is an answer: no
    records).

    @raise socket.gaierror: if none answers, or each answers with an error.
    """
    errors = []
    for nameserver in nameservers:
        message = dns.Message(id=random.randrange(1 << 16), recDes=1)
        message.queries = [dns.Query(name.encode("idna"), kind, dns.IN)]
        payload = message.toStr()
        try:
            tcp = False
            while True:
                data = _exchange(payload, nameserver, timeout, tcp)
                answer = dns.Message()
                answer.fromStr(data)
                if answer.id != message.id:
                    raise ValueError("an answer to another query")
                if answer.trunc and not tcp:
                    tcp = True
                    continue
                break
        except (OSError, ValueError, EOFError, struct.error) as e:
            errors.append(f"{nameserver[0]}:{nameserver[1]}: {e}")
            continue
        if answer.rCode in (dns.OK, dns.ENAME):
            return answer
        errors.append(f"{nameserver[0]}:{nameserver[1]}: DNS error {answer.rCode}")
    raise socket.gaierror(
        socket.EAI_AGAIN, f"cannot resolve {name}: " + "; ".join(errors)
    )


class ResolvedServers:
    """
    The servers of a service (SRV) or of a host name (A/AAAA), resolved
    when asked for after the last answer's time ran out
    (L{agilerpc._discovery.Schedule}).

    SRV targets are those of the lowest priority that has addresses, in
    RFC 2782 order, as for L{RpcClient} (the blocking client's connections
    go to each in turn, so a backup priority would take a share of the
    connections, not only the failures).  Without C{nameservers}, a host name is resolved by the
    system (C{getaddrinfo}: C{/etc/hosts}, search domains) and a service by
    the name servers of C{/etc/resolv.conf}.

    @ivar servers: the last servers found, C{(host, port)} pairs.
    """

    def __init__(
        self,
        *,
        service: str | None,
        hostname: str | None,
        port: int | None,
        nameservers: Sequence[tuple[str, int]] | None,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = service if service is not None else str(hostname)
        self._service = service
        self._port = port
        self._nameservers = list(nameservers) if nameservers is not None else None
        self._schedule = Schedule(interval)
        self._clock = clock
        self._due = 0.0
        # When the resolution under way must end (time.monotonic()), if ever.
        self._until: float | None = None
        self.servers: list[tuple[str, int]] = []

    def _query(
        self, name: str, kind: int, nameservers: Sequence[tuple[str, int]]
    ) -> dns.Message:
        timeout = QUERY_TIMEOUT
        if self._until is not None:
            timeout = max(0.001, min(timeout, self._until - time.monotonic()))
        return query(name, kind, nameservers, timeout)

    def refresh(
        self, force: bool = False, timeout: float | None = None
    ) -> list[tuple[str, int]]:
        """
        The servers, resolved again first if their time ran out (or, with
        C{force}, if no resolution started in the last C{min(interval, 5
        s)}).  A failed resolution keeps the last servers.

        @param timeout: the seconds the resolution may take (each query
            waits at most L{QUERY_TIMEOUT}); L{None}: no bound but that.

        @raise socket.gaierror: if resolving failed or found nothing, and
            none were ever found.
        """
        now = self._clock()
        if force and self.servers:
            self._due = min(self._due, now + self._schedule.refreshDelay(now))
        if self.servers and now < self._due:
            return self.servers
        self._schedule.started(now)
        self._until = None if timeout is None else time.monotonic() + timeout
        try:
            servers, ttls = self._resolve()
            if not servers:
                raise socket.gaierror(socket.EAI_NONAME, f"{self.name}: no records")
        except OSError:
            self._due = now + self._schedule.failed()
            if not self.servers:
                raise
            return self.servers
        self._due = now + self._schedule.succeeded(ttls)
        self.servers = servers
        return servers

    def _resolve(self) -> tuple[list[tuple[str, int]], list[float]]:
        if self._service is None:
            assert self._port is not None
            if self._nameservers is None:
                infos = socket.getaddrinfo(
                    self.name, self._port, type=socket.SOCK_STREAM
                )
                return hostEndpoints((str(i[4][0]) for i in infos), self._port), []
            addresses: dict[str, list[str]] = {}
            ttls: list[float] = []
            for kind in (dns.A, dns.AAAA):
                answer = self._query(self.name, kind, self._nameservers)
                addressRecords(answer.answers, addresses, ttls, self.name)
            return hostEndpoints(addresses.get(self.name, []), self._port), ttls
        nameservers = self._nameservers or systemNameservers()
        answer = self._query(self.name, dns.SRV, nameservers)
        ttls = []
        records = srvTargets(answer.answers, ttls)
        addresses = {}
        addressRecords(answer.additional, addresses, ttls)
        for target in {r.target for r in records} - set(addresses):
            for kind in (dns.A, dns.AAAA):
                try:
                    found = self._query(target, kind, nameservers)
                except OSError:
                    continue
                addressRecords(found.answers, addresses, ttls, target)
        return bestTier(orderSrv(records), addresses)[0], ttls
