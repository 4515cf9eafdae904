"""
Finding servers in DNS, without I/O: what the answers to an SRV or an A/AAAA
query mean as a list of endpoints, and when to ask again.

Both clients use it: L{agilerpc._resolving} asks through a Twisted
C{IResolver} for L{agilerpc.RpcClient}, L{agilerpc._dnsquery} asks with a
plain socket for L{agilerpc.TcpRpcClient}.  Neither decides anything this
module decides.  It reads records as L{twisted.names.dns} decodes them,
but does not import it: L{agilerpc.RpcClient} uses L{slots} for weights
given to L{agilerpc.RpcClient.setEndpoints} without resolving anything.

 - SRV records are ordered as RFC 2782 says: by priority (lower first), and
   within one priority in a weighted random order (a record of weight 0 has
   a small chance of coming first).  L{bestTier} keeps the lowest priority
   whose targets have addresses: the others are backups.
 - The next resolution comes after the smallest TTL of the answer, clamped
   to C{[interval, maxInterval]}: never more often than the interval (gRPC's
   minimum is 30 s), never less often than C{maxInterval}.
 - A failed resolution (an error, or no records) changes nothing: the last
   endpoints stay, and it is retried with a backoff from
   C{min(1 s, interval)}, doubling up to the interval.
 - A connection failure asks for a resolution at once, at most once per
   C{min(interval, 5 s)}.
"""

from __future__ import annotations

import math
import random as _random
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from twisted.names import dns

# The record types read here (RFC 1035, 3596, 2782): numbers, so that
# RpcClient can use this module without loading twisted.names.
_A = 1
_AAAA = 28
_SRV = 33

#: The longest a resolution's answer is trusted without asking again.
DEFAULT_MAX_INTERVAL = 300.0

#: The first delay before retrying a failed resolution (shorter if the
#: interval is).
FIRST_RETRY_DELAY = 1.0

#: The shortest time between two resolutions that connection failures ask
#: for (shorter if the interval is).
MIN_REFRESH_GAP = 5.0


class SrvTarget(NamedTuple):
    """
    One SRV record: where a server of the service listens.
    """

    priority: int
    weight: int
    port: int
    #: The target host name, without its trailing dot.
    target: str


def checkNameArguments(
    client: str,
    service: str | None,
    hostname: str | None,
    port: int | None,
    others: str | None,
) -> None:
    """
    Check how a client (C{client}: its class name) was told its servers by
    name: a C{service} (SRV records give the ports) or a C{hostname} with a
    C{port}, not both, and not with the other ways (C{others}: the name of
    the one given, if any, such as C{"endpoints"}).

    @raise TypeError: if they do not go together.
    @raise ValueError: if C{port} is out of range.
    """
    from ._address import checkPort

    if service is not None and hostname is not None:
        raise TypeError(f"{client} takes a service or a hostname, not both")
    if others is not None:
        raise TypeError(
            f"{client} takes a service or a hostname, or {others}: not both"
        )
    if hostname is not None:
        if port is None:
            raise TypeError(f"{client} needs a port with a hostname")
        checkPort(port)
    elif port is not None:
        raise TypeError("a service's SRV records give the ports: no port")


def recordName(name: dns.Name) -> str:
    """
    A DNS name as text, lower case, without its trailing dot: how target
    names are matched to their address records.
    """
    return name.name.decode("ascii", "replace").rstrip(".").lower()


def srvTargets(records: Iterable[dns.RRHeader], ttls: list[float]) -> list[SrvTarget]:
    """
    The SRV records among C{records}; their TTLs are added to C{ttls}.
    """
    targets = []
    for record in records:
        if record.type == _SRV:
            srv: Any = record.payload
            targets.append(
                SrvTarget(srv.priority, srv.weight, srv.port, recordName(srv.target))
            )
            ttls.append(record.ttl)
    return targets


def addressRecords(
    records: Iterable[dns.RRHeader],
    addresses: dict[str, list[str]],
    ttls: list[float],
    name: str | None = None,
) -> None:
    """
    Add the A and AAAA records among C{records} to C{addresses}, under their
    own names or all under C{name} (the name asked for, which CNAMEs may
    lead away from), and their TTLs to C{ttls}.
    """
    for record in records:
        payload: Any = record.payload
        if record.type == _A:
            address = payload.dottedQuad()
        elif record.type == _AAAA:
            address = socket.inet_ntop(socket.AF_INET6, payload.address)
        else:
            continue
        found = addresses.setdefault(
            recordName(record.name) if name is None else name, []
        )
        if address not in found:
            found.append(address)
        ttls.append(record.ttl)


def orderSrv(
    records: Iterable[SrvTarget], random: Callable[[], float] = _random.random
) -> list[SrvTarget]:
    """
    The records in the order RFC 2782 says to try them: by priority, lowest
    first; within a priority, each next record picked at random with a
    chance proportional to its weight (records of weight 0 first in the
    running list, so that they come first only when drawn at 0).

    A record whose target is C{"."} (the service is decidedly not available
    there) is left out.

    @param random: returns a float in [0, 1): tests pass a fixed one.
    """
    byPriority: dict[int, list[SrvTarget]] = {}
    for record in records:
        if record.target in ("", "."):
            continue
        byPriority.setdefault(record.priority, []).append(record)
    ordered: list[SrvTarget] = []
    for priority in sorted(byPriority):
        # RFC 2782: zero weights first, then the others, in any order; a
        # stable order here keeps a fixed random reproducible.
        left = sorted(byPriority[priority], key=lambda r: r.weight != 0)
        while left:
            total = sum(r.weight for r in left)
            draw = random() * total
            running = 0
            chosen = left[-1]
            for record in left:
                running += record.weight
                if running >= draw:
                    chosen = record
                    break
            ordered.append(chosen)
            left.remove(chosen)
    return ordered


def bestTier(
    ordered: Sequence[SrvTarget], addresses: Mapping[str, Sequence[str]]
) -> tuple[list[tuple[str, int]], list[int]]:
    """
    The endpoints of the lowest priority of C{ordered} (from L{orderSrv})
    whose targets have addresses: each target's addresses with its port, in
    order, without repeats; and the weight of each (its record's).

    @param addresses: the addresses of each target name; a target missing
        from it has none.
    """
    tiers: dict[int, dict[tuple[str, int], int]] = {}
    for record in ordered:
        tier = tiers.setdefault(record.priority, {})
        for address in addresses.get(record.target, ()):
            tier.setdefault((address, record.port), record.weight)
    for priority in sorted(tiers):
        if tiers[priority]:
            return list(tiers[priority]), list(tiers[priority].values())
    return [], []


def hostEndpoints(addresses: Iterable[str], port: int) -> list[tuple[str, int]]:
    """
    The endpoints of a name's A and AAAA addresses, each on C{port}, sorted
    (so that the same answer in another order is no change) and without
    repeats.
    """
    return [(address, port) for address in sorted(set(addresses))]


def slots(weights: Sequence[int], most: int = 16) -> list[int]:
    """
    How many places each endpoint takes in a round-robin, so that each
    gets calls in proportion to its weight (an SRV weight): equal weights
    one place each; else the weights divided by their greatest common
    divisor, scaled down to at most C{most} places if larger (at least one
    place each).  A weight of 0 among others takes one place, against
    C{most} for the heaviest: the "very small chance" of RFC 2782.
    """
    if len(set(weights)) <= 1:
        return [1] * len(weights)
    heaviest = max(weights)
    if 0 in weights:
        return [max(1, round(w * most / heaviest)) for w in weights]
    divisor = math.gcd(*weights)
    reduced = [w // divisor for w in weights]
    top = max(reduced)
    if top <= most:
        return reduced
    return [max(1, round(w * most / top)) for w in reduced]


class Schedule:
    """
    When to resolve a name again.

    @ivar interval: the shortest time between two resolutions that
        succeeded, and the longest time between retries of failed ones.
    @ivar maxInterval: the longest time an answer is trusted, whatever its
        TTL.
    @ivar failures: how many resolutions failed in a row.
    @ivar lastStart: when the last resolution started, or L{None}.
    """

    def __init__(
        self, interval: float, maxInterval: float = DEFAULT_MAX_INTERVAL
    ) -> None:
        if not interval > 0:
            raise ValueError(f"the resolve interval must be > 0, not {interval!r}")
        self.interval = interval
        self.maxInterval = max(maxInterval, interval)
        self.failures = 0
        self.lastStart: float | None = None

    def started(self, now: float) -> None:
        """
        A resolution starts at C{now}.
        """
        self.lastStart = now

    def succeeded(self, ttls: Iterable[float]) -> float:
        """
        A resolution got records with these TTLs: the delay until the next.
        """
        self.failures = 0
        ttl = min(ttls, default=self.interval)
        return min(max(ttl, self.interval), self.maxInterval)

    def failed(self) -> float:
        """
        A resolution failed or found no records: the delay until the next
        attempt.
        """
        self.failures += 1
        first = min(FIRST_RETRY_DELAY, self.interval)
        return float(min(first * 2 ** min(self.failures - 1, 30), self.interval))

    def refreshDelay(self, now: float) -> float:
        """
        A connection failed: how long to wait before resolving again (0: at
        once), so that failures ask at most once per C{min(interval, 5 s)}.
        """
        if self.lastStart is None:
            return 0.0
        gap = min(self.interval, MIN_REFRESH_GAP)
        return max(0.0, self.lastStart + gap - now)
