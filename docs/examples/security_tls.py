"""
Clients of a server run with TLS, client certificates (mutual TLS) and a
token:

    twistd -n agilerpc --port 9988 --tls-cert server.pem --tls-key server.key \\
        --tls-client-ca ca.pem --auth-token-file token.txt

Both clients verify the server's certificate and its host name.
"""

from __future__ import annotations

import ssl
from typing import Any

from twisted.internet import defer, task
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS

from agilerpc import RpcClient, TcpRpcClient


def readToken(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def twistedClient(
    reactor: Any,
    host: str,
    port: int,
    hostname: str,
    ca: str,
    cert: str | None = None,
    key: str | None = None,
    token: str | None = None,
) -> RpcClient:
    with open(ca, "rb") as f:
        trustRoot = Certificate.loadPEM(f.read())
    mine = None
    if cert is not None and key is not None:  # only for mutual TLS
        with open(key, "rb") as k, open(cert, "rb") as c:
            mine = PrivateCertificate.loadPEM(k.read() + c.read())
    tls = optionsForClientTLS(hostname, trustRoot=trustRoot, clientCertificate=mine)
    # Give it a timeout: a refused handshake is retried until then.
    return RpcClient(reactor, host, port, timeout=10, tls=tls, token=token)


def blockingClient(
    host: str,
    port: int,
    hostname: str,
    ca: str,
    cert: str | None = None,
    key: str | None = None,
    token: str | None = None,
) -> TcpRpcClient:
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:  # only for mutual TLS
        context.load_cert_chain(cert, key)
    return TcpRpcClient(
        host,
        port,
        timeout=5,
        ssl_context=context,
        server_hostname=hostname,
        token=token,
    )


async def main(reactor: Any, host: str = "rpc.example.com", port: int = 9988) -> Any:
    client = twistedClient(
        reactor,
        host,
        port,
        host,
        "ca.pem",
        "client.pem",
        "client.key",
        readToken("token.txt"),
    )
    result = await client.callRemote("sayHello", "zhangsan")
    await client.close()
    return result


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
