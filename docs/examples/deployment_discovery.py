"""
Clients that find their servers in DNS: SRV records (a Kubernetes
headless Service's named port, a Consul service), or every A and AAAA
record of a name.  Calls are spread over the servers found; a server that
leaves the records is drained, a new one is dialled.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IResolver
from twisted.names.client import Resolver

from agilerpc import RpcClient, TcpRpcClient

BILLING = "_agilerpc._tcp.billing.default.svc.cluster.local"


def billingClient(
    reactor: Any, service: str = BILLING, resolver: IResolver | None = None
) -> RpcClient:
    # resolver=None: the name servers of /etc/resolv.conf.
    return RpcClient(
        reactor, service=service, resolver=resolver, resolveInterval=10, timeout=10
    )


def consulClient(reactor: Any) -> RpcClient:
    # Consul's DNS interface, on the local agent.
    consul = Resolver(servers=[("127.0.0.1", 8600)], reactor=reactor)
    return billingClient(reactor, "_billing._tcp.service.consul", consul)


def blockingClient(
    hostname: str = "billing.default.svc.cluster.local",
    port: int = 9988,
    nameservers: list[tuple[str, int]] | None = None,
) -> TcpRpcClient:
    # Every A/AAAA record of the name, one connection at a time (fails over).
    return TcpRpcClient(
        hostname=hostname, port=port, nameservers=nameservers, timeout=2
    )


async def main(reactor: Any, client: RpcClient, calls: int = 20) -> list[Any]:
    """
    Make calls, spread over the servers found; the servers that took them.
    """
    for _ in range(calls):
        await client.callRemote("system.ping")
    return sorted(client.readyEndpoints)


if __name__ == "__main__":

    async def run(reactor: Any) -> None:
        client = billingClient(reactor)
        print(await main(reactor, client))
        await client.close()

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
