"""
L{RpcClient}'s endpoints from DNS: SRV records of a service (Consul's DNS,
a Kubernetes named port) or the A and AAAA records of a name (a Kubernetes
headless service), asked through a Twisted C{IResolver} and asked again as
L{agilerpc._discovery.Schedule} says.

Imported only by a client made with C{service} or C{hostname}: C{import
agilerpc} does not load C{twisted.names}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IResolver
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._discovery import (
    Schedule,
    addressRecords,
    bestTier,
    hostEndpoints,
    orderSrv,
    srvTargets,
)

_log = Logger(namespace="agilerpc.client")

#: How long a query waits for an answer before asking again (each name
#: server in turn), then before giving up: 15 s in all, within the default
#: resolve interval.
QUERY_TIMEOUTS = (1, 3, 11)

#: The endpoints a resolution found, their weights, and the TTLs of the
#: records it used.
Resolution = tuple[list[tuple[str, int]], list[int], list[float]]


class DnsDiscovery:
    """
    Resolves a service or a host name for an L{RpcClient} and gives it the
    endpoints found (C{found}, the client's C{setEndpoints}): from L{start}
    (the client's first call), then on L{Schedule}'s delays, and soon after
    the client reports a connection failure (L{connectionFailed}).

    @ivar name: the name resolved.
    @ivar resolutions: how many resolutions succeeded.
    @ivar failures: how many failed or found nothing.
    """

    def __init__(
        self,
        found: Callable[[list[tuple[str, int]], list[int]], None],
        reactor: Any,
        resolver: IResolver | None,
        interval: float,
        *,
        service: str | None,
        hostname: str | None,
        port: int | None,
    ) -> None:
        self._found = found
        # How many endpoints the last resolution found (kept when one fails).
        self._known = 0
        self._reactor = reactor
        self._resolver = resolver
        self._schedule = Schedule(interval)
        self._service = service
        self._port = port
        self.name = service if service is not None else str(hostname)
        self._timer: IDelayedCall | None = None
        self._resolving = False
        self._started = False
        self._stopped = False
        self.resolutions = 0
        self.failures = 0

    def start(self) -> None:
        """
        Resolve now, unless this was already started.
        """
        if self._started or self._stopped:
            return
        self._started = True
        if self._resolver is None:
            from twisted.names.client import Resolver

            # The system's name servers, on the client's reactor (not
            # createResolver, which takes the global one).
            self._resolver = Resolver(resolv="/etc/resolv.conf", reactor=self._reactor)
        self._resolve()

    def stop(self) -> None:
        """
        Resolve no more; an answer still to come is dropped.
        """
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionFailed(self) -> None:
        """
        A connection to an endpoint failed: it may have left the directory,
        so resolve soon (at once, unless one started a short while ago).
        """
        if not self._started or self._stopped or self._resolving:
            return
        now = self._reactor.seconds()
        delay = self._schedule.refreshDelay(now)
        timer = self._timer
        if timer is not None and timer.active():
            if timer.getTime() <= now + delay:
                return
            timer.cancel()
        self._timer = self._reactor.callLater(delay, self._resolve)

    # -- resolving ------------------------------------------------------------

    def _resolve(self) -> None:
        self._timer = None
        if self._stopped or self._resolving:
            return
        self._resolving = True
        self._schedule.started(self._reactor.seconds())
        d = self._lookupService() if self._service is not None else self._lookupHost()
        d.addCallbacks(self._resolved, self._failed)
        d.addErrback(lambda f: _log.failure("resolving {name}", f, name=self.name))

    def _lookupHost(self) -> Deferred[Resolution]:
        assert self._port is not None
        port = self._port

        def found(result: tuple[dict[str, list[str]], list[float]]) -> Resolution:
            addresses, ttls = result
            endpoints = hostEndpoints(addresses.get(self.name, []), port)
            return endpoints, [1] * len(endpoints), ttls

        return self._addressesOf(self.name).addCallback(found)

    def _addressesOf(
        self, name: str
    ) -> Deferred[tuple[dict[str, list[str]], list[float]]]:
        """
        The A and AAAA records of C{name}; fails only if both lookups fail.
        """
        resolver = self._resolver
        assert resolver is not None
        lookups = DeferredList(
            [
                resolver.lookupAddress(name, QUERY_TIMEOUTS),
                resolver.lookupIPV6Address(name, QUERY_TIMEOUTS),
            ],
            consumeErrors=True,
        )

        def found(
            results: list[tuple[bool, Any]],
        ) -> tuple[dict[str, list[str]], list[float]] | Failure:
            addresses: dict[str, list[str]] = {}
            ttls: list[float] = []
            for ok, result in results:
                if ok:
                    addressRecords(result[0], addresses, ttls, name)
            if not any(ok for ok, _ in results):
                failure: Failure = results[0][1]
                return failure
            return addresses, ttls

        return lookups.addCallback(found)

    def _lookupService(self) -> Deferred[Resolution]:
        resolver = self._resolver
        assert resolver is not None

        # Any: IResolver's stubs type the three lists as three records.
        def answered(result: Any) -> Deferred[Resolution] | Resolution:
            answers, _authority, additional = result
            ttls: list[float] = []
            records = srvTargets(answers, ttls)
            addresses: dict[str, list[str]] = {}
            addressRecords(additional, addresses, ttls)
            missing = []
            for target in {r.target for r in records}:
                if isIPAddress(target) or isIPv6Address(target):
                    addresses[target] = [target]
                elif target not in addresses:
                    missing.append(target)
            if not missing:
                return (*bestTier(orderSrv(records), addresses), ttls)

            def more(results: list[tuple[bool, Any]]) -> Resolution:
                for ok, result in results:
                    if ok:
                        found, foundTtls = result
                        for target, listed in found.items():
                            addresses.setdefault(target, []).extend(listed)
                        ttls.extend(foundTtls)
                    else:
                        _log.warn(
                            "resolving {name}: no address for an SRV target: {why}",
                            name=self.name,
                            why=result.getErrorMessage(),
                        )
                return (*bestTier(orderSrv(records), addresses), ttls)

            return DeferredList(
                [self._addressesOf(target) for target in sorted(missing)],
                consumeErrors=True,
            ).addCallback(more)

        answer: Deferred[Any] = resolver.lookupService(self.name, QUERY_TIMEOUTS)
        return answer.addCallback(answered)

    def _resolved(self, result: Resolution) -> None:
        self._resolving = False
        if self._stopped:
            return
        endpoints, weights, ttls = result
        if not endpoints:
            self._failed(Failure(LookupError("no records")))
            return
        self.resolutions += 1
        self._known = len(endpoints)
        self._found(endpoints, weights)
        self._resolveLater(self._schedule.succeeded(ttls))

    def _failed(self, reason: Failure) -> None:
        self._resolving = False
        if self._stopped:
            return
        self.failures += 1
        delay = self._schedule.failed()
        _log.warn(
            "resolving {name} failed ({why}); keeping {count} endpoints, trying "
            "again in {delay:.3g} s",
            name=self.name,
            why=reason.getErrorMessage(),
            count=self._known,
            delay=delay,
        )
        self._resolveLater(delay)

    def _resolveLater(self, delay: float) -> None:
        self._timer = self._reactor.callLater(delay, self._resolve)
