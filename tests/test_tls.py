"""
TLS on both sides, against a real C{twistd -n agilerpc} on 127.0.0.1:
C{--tls-cert}/C{--tls-key} (and C{--tls-client-ca} for mutual TLS) or an
C{ssl:} C{--listen}, with L{agilerpc.TcpRpcClient} and L{agilerpc.RpcClient}.

The certificates are made at test time, once per test run, by a throwaway
CA (L{tests.tlshelpers.PKI}); no key is committed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import ssl
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from agilerpc import RpcClient, TcpRpcClient, TLSRefused, _cli

from . import serverprocess
from .serverprocess import ServerProcess
from .tlshelpers import pki

# The bound on every wait in these tests.
WAIT = 5.0

# A TLS listener logs "RpcServerFactory (TLS) starting on N".
_PORT_LINE = re.compile(r"RpcServerFactory(?: \(TLS\))? starting on (\d+)")


def startTLSServer(
    testCase: SynchronousTestCase, *extraArgs: str, clientCA: bool = False, **kw: Any
) -> ServerProcess:
    """
    Start C{twistd agilerpc} serving TLS (C{--tls-cert}, C{--tls-key}, and
    with C{clientCA} C{--tls-client-ca}) on 127.0.0.1.
    """
    p = pki()
    args = ["--tls-cert", p.path("server.pem"), "--tls-key", p.path("server.key")]
    if clientCA:
        args += ["--tls-client-ca", p.path("ca.pem")]
    testCase.patch(serverprocess, "_PORT_LINE", _PORT_LINE)
    return ServerProcess.start(testCase, *args, *extraArgs, **kw)


def clientContext(ca: str = "ca.pem", cert: str | None = None) -> ssl.SSLContext:
    """
    A client L{ssl.SSLContext} trusting the CA in C{ca}, presenting the
    certificate C{cert} (with its key) if given.
    """
    context = ssl.create_default_context(cafile=pki().path(ca))
    if cert is not None:
        context.load_cert_chain(pki().path(cert + ".pem"), pki().path(cert + ".key"))
    return context


class BlockingClientTLSTests(SynchronousTestCase):
    """
    L{TcpRpcClient} with C{ssl_context} against C{--tls-cert}/C{--tls-key}.
    """

    def setUp(self) -> None:
        self.server = startTLSServer(self, keepalive=1)

    def client(self, context: ssl.SSLContext, **kwargs: Any) -> TcpRpcClient:
        client = TcpRpcClient(
            "127.0.0.1",
            self.server.port,
            timeout=WAIT,
            ssl_context=context,
            connectRetry=0,
            **kwargs,
        )
        self.addCleanup(client.close)
        return client

    def test_verifiedConnection(self) -> None:
        """
        A client trusting the CA connects, verifies the certificate (IP
        address 127.0.0.1, or a host name given as C{server_hostname}) and
        calls.
        """
        client = self.client(clientContext())
        self.assertEqual(client.call("sayHello", ("tls",)), "hello tls")
        connection = client._connection
        assert connection is not None
        self.assertIsInstance(connection.sock, ssl.SSLSocket)
        named = self.client(clientContext(), server_hostname="localhost")
        self.assertEqual(named.call("add", (1, 2)), 3)

    def test_largeResultOverTLS(self) -> None:
        """
        A result of several TLS records (and several reads) arrives whole.
        """
        client = self.client(clientContext())
        data = os.urandom(3 * 1024 * 1024)
        self.assertEqual(client.call("echo", (data,)), data)

    def test_wrongHostname(self) -> None:
        """
        A certificate that does not match the expected host name is refused.
        """
        client = self.client(clientContext(), server_hostname="wrong.invalid")
        e = self.assertRaises(
            ssl.SSLCertVerificationError, client.call, "sayHello", ("x",)
        )
        self.assertIn("wrong.invalid", str(e))

    def test_untrustedCertificate(self) -> None:
        """
        A certificate from a CA the client does not trust is refused.
        """
        client = self.client(clientContext("rogue-ca.pem"))
        e = self.assertRaises(
            ssl.SSLCertVerificationError, client.call, "sayHello", ("x",)
        )
        self.assertIn("certificate verify failed", str(e))

    def test_plainClientGetsNoHello(self) -> None:
        """
        A client without TLS gets no hello from a TLS server: its call times
        out.
        """
        client = TcpRpcClient("127.0.0.1", self.server.port, timeout=1, connectRetry=0)
        self.addCleanup(client.close)
        self.assertRaises(TimeoutError, client.call, "sayHello", ("x",))

    def test_idleCloseOverTLS(self) -> None:
        """
        The server's idle close (keepalive 1 s) over TLS is invisible: the
        next call runs once on a new connection.
        """
        client = self.client(clientContext())
        self.assertEqual(client.call("incr", ("a",)), 1)
        first = client._connection
        time.sleep(1.5)
        self.assertEqual(client.call("incr", ("b",)), 2)
        self.assertIsNot(client._connection, first)
        self.assertEqual(client.call("incr", ("c",)), 3)


class MutualTLSTests(SynchronousTestCase):
    """
    C{--tls-client-ca}: every client must present a certificate signed by
    that CA.
    """

    def setUp(self) -> None:
        self.server = startTLSServer(self, clientCA=True)

    def client(self, context: ssl.SSLContext) -> TcpRpcClient:
        client = TcpRpcClient(
            "127.0.0.1",
            self.server.port,
            timeout=WAIT,
            ssl_context=context,
            connectRetry=0,
        )
        self.addCleanup(client.close)
        return client

    def test_clientCertificateAccepted(self) -> None:
        """
        A client with a certificate signed by the CA calls.
        """
        client = self.client(clientContext(cert="client"))
        self.assertEqual(client.call("sayHello", ("m",)), "hello m")

    def test_noClientCertificateRefused(self) -> None:
        """
        A client without a certificate is refused during the handshake
        (TLS 1.3 reports it on the first read).
        """
        client = self.client(clientContext())
        e = self.assertRaises(ssl.SSLError, client.call, "sayHello", ("x",))
        self.assertIn("CERTIFICATE_REQUIRED", str(e))

    def test_untrustedClientCertificateRefused(self) -> None:
        """
        A client certificate from another CA is refused.
        """
        client = self.client(clientContext(cert="rogue-client"))
        e = self.assertRaises(ssl.SSLError, client.call, "sayHello", ("x",))
        self.assertIn("UNKNOWN_CA", str(e).upper())


class StrportsTLSTests(SynchronousTestCase):
    """
    An C{ssl:} C{--listen} description serves TLS too.
    """

    def test_sslListen(self) -> None:
        """
        C{--listen ssl:0:...:privateKey=...:certKey=...} serves a verified
        TLS connection.
        """
        p = pki()
        self.patch(serverprocess, "_PORT_LINE", _PORT_LINE)
        server = ServerProcess.start(
            self,
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={p.path('server.key')}"
            f":certKey={p.path('server.pem')}",
        )
        # ServerProcess listens on tcp too, and may have returned on either
        # listener's line: wait for the ssl one.
        tlsPort = int(
            server.waitForOutput(r"RpcServerFactory \(TLS\) starting on (\d+)").group(1)
        )
        self.assertEqual(len(_PORT_LINE.findall(server.output())), 2)
        client = TcpRpcClient(
            "127.0.0.1", tlsPort, timeout=WAIT, ssl_context=clientContext()
        )
        self.addCleanup(client.close)
        self.assertEqual(client.call("sayHello", ("s",)), "hello s")


def _pause(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


class TwistedClientTLSTests(TestCase):
    """
    L{RpcClient} with C{tls=optionsForClientTLS(...)}, on the real reactor.
    """

    timeout = 30

    def setUp(self) -> None:
        self.server = startTLSServer(self, keepalive=1, clientCA=True)
        self.ca = Certificate.loadPEM(pki().read("ca.pem"))
        self.clientCert = PrivateCertificate.loadPEM(
            pki().read("client.key") + pki().read("client.pem")
        )

    def client(self, tls: Any) -> RpcClient:
        client = RpcClient(reactor, "127.0.0.1", self.server.port, timeout=3, tls=tls)
        self.addCleanup(client.close, 1)
        return client

    @inlineCallbacks
    def test_verifiedConnectionAndIdleClose(self) -> Any:
        """
        A client trusting the CA, with a client certificate, calls; after
        the server's idle close over TLS the next call runs once on a new
        connection.
        """
        tls = optionsForClientTLS(
            "localhost", trustRoot=self.ca, clientCertificate=self.clientCert
        )
        client = self.client(tls)
        self.assertEqual((yield client.callRemote("incr", "t")), 1)
        yield _pause(1.5)
        self.assertFalse(client.connected)
        self.assertEqual((yield client.callRemote("incr", "u")), 2)
        self.assertEqual((yield client.callRemote("incr", "v")), 3)

    @inlineCallbacks
    def test_wrongHostname(self) -> Any:
        """
        A certificate that does not match the host name is refused: the
        call fails and nothing runs.
        """
        tls = optionsForClientTLS(
            "wrong.invalid", trustRoot=self.ca, clientCertificate=self.clientCert
        )
        client = self.client(tls)
        # Refused at the first handshake: not retried until the timeout.
        started = reactor.seconds()
        error = yield self.assertFailure(client.callRemote("incr", "w"), TLSRefused)
        self.assertLess(reactor.seconds() - started, 2)
        self.assertIn("TLS handshake", str(error))
        yield self.assertNothingRan()

    @inlineCallbacks
    def test_untrustedCertificate(self) -> Any:
        """
        A server certificate from a CA the client does not trust is refused.
        """
        rogue = Certificate.loadPEM(pki().read("rogue-ca.pem"))
        tls = optionsForClientTLS(
            "localhost", trustRoot=rogue, clientCertificate=self.clientCert
        )
        client = self.client(tls)
        # Refused at the first handshake: not retried until the timeout.
        started = reactor.seconds()
        error = yield self.assertFailure(client.callRemote("incr", "w"), TLSRefused)
        self.assertLess(reactor.seconds() - started, 2)
        self.assertIn("TLS handshake", str(error))
        yield self.assertNothingRan()

    @inlineCallbacks
    def test_serverRefusesClient(self) -> Any:
        """
        A server that wants a client certificate refuses a client without
        one: the call fails with L{TLSRefused} at once, and nothing runs.
        """
        client = self.client(optionsForClientTLS("localhost", trustRoot=self.ca))
        started = reactor.seconds()
        yield self.assertFailure(client.callRemote("incr", "w"), TLSRefused)
        self.assertLess(reactor.seconds() - started, 2)
        yield self.assertNothingRan()

    @inlineCallbacks
    def assertNothingRan(self) -> Any:
        """
        A good client's first C{incr} is the server's first.
        """
        tls = optionsForClientTLS(
            "localhost", trustRoot=self.ca, clientCertificate=self.clientCert
        )
        self.assertEqual((yield self.client(tls).callRemote("incr", "ok")), 1)


class CommandLineTLSTests(SynchronousTestCase):
    """
    C{agilerpc call} with C{--tls-ca}, C{--tls-hostname} and a client
    certificate.
    """

    def runCLI(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = _cli.main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def test_mutualTLS(self) -> None:
        """
        With the CA and a client certificate the call works; a wrong host
        name exits 3 (cannot connect) with the verification error.
        """
        server = startTLSServer(self, clientCA=True)
        p = pki()
        address = f"127.0.0.1:{server.port}"
        tls = ["--tls-ca", p.path("ca.pem"), "--tls-cert", p.path("client.pem")]
        tls += ["--tls-key", p.path("client.key")]
        self.assertEqual(
            self.runCLI("call", *tls, address, "sayHello", "c"),
            (0, '"hello c"\n', ""),
        )
        status, out, err = self.runCLI(
            "call", *tls, "--tls-hostname", "wrong.invalid", address, "add", "1", "2"
        )
        self.assertEqual((status, out), (3, ""))
        self.assertIn("CERTIFICATE_VERIFY_FAILED", err)

    def test_certWithoutKey(self) -> None:
        """
        C{--tls-cert} without C{--tls-key} is a usage error.
        """
        self.assertEqual(
            self.runCLI("call", "--tls-cert", "c.pem", "127.0.0.1:1", "m"),
            (2, "", "agilerpc: --tls-cert and --tls-key go together\n"),
        )
