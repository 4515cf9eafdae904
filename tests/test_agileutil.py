# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for L{agilerpc.TcpRpcServer}, the agileutil-compatible server facade.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import RpcServerFactory, RpcService, TcpRpcServer

from .serverprocess import RawClient, _Drain

# The agileutil article's server script (agileutil v0.0.7), unchanged but for
# the import line and, so that the test binds only loopback on a free port
# and does not wait 10 seconds, the values passed to TcpRpcServer and
# setKeepaliveTimeout.
AGILEUTIL_SERVER_SCRIPT = """\
from agilerpc import TcpRpcServer

def sayHello(name):
    return 'hello ' + name

s = TcpRpcServer('127.0.0.1', 0)
s.setKeepaliveTimeout(1)
s.regist(sayHello)
s.serve()
"""


def sayHello(name: str) -> str:
    return "hello " + name


class TcpRpcServerTests(SynchronousTestCase):
    """
    L{TcpRpcServer} configured, and started on a L{MemoryReactorClock}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def server(self, host: str = "127.0.0.1", port: int = 9988) -> TcpRpcServer:
        return TcpRpcServer(host, port, reactor=self.reactor)

    def factoryOf(self, service: RpcService) -> RpcServerFactory:
        [(_, factory, _, _)] = self.reactor.tcpServers
        self.assertIs(factory, service.factory)
        assert isinstance(factory, RpcServerFactory)
        return factory

    def test_defaults(self) -> None:
        """
        By default it listens on every IPv4 interface on port 9988, with the
        agileutil's 75 second keepalive.
        """
        server = TcpRpcServer(reactor=self.reactor)
        self.assertEqual((server.host, server.port), ("0.0.0.0", 9988))
        factory = self.factoryOf(server.start())
        self.assertEqual(factory.keepalive, 75.0)
        self.assertEqual(
            [(p, i) for p, _, _, i in self.reactor.tcpServers], [(9988, "0.0.0.0")]
        )

    def test_globalReactorByDefault(self) -> None:
        """
        Without a reactor, L{TcpRpcServer} runs on the global one, chosen
        only when it is needed.
        """
        from twisted.internet import reactor

        server = TcpRpcServer()
        self.assertIsNone(server._reactor)
        self.assertIs(server._getReactor(), reactor)

    def test_startListens(self) -> None:
        """
        L{TcpRpcServer.start} listens on the host and port given, at once.
        """
        server = self.server("127.0.0.1", 4321)
        self.assertEqual(self.reactor.tcpServers, [])
        server.start()
        self.assertEqual(
            [(p, i) for p, _, _, i in self.reactor.tcpServers], [(4321, "127.0.0.1")]
        )

    def test_ipv4Endpoint(self) -> None:
        """
        An IPv4 host is served by a TCP4 endpoint.
        """
        service = self.server("127.0.0.1").start()
        [child] = list(service)
        assert isinstance(child, StreamServerEndpointService)
        self.assertIsInstance(child.endpoint, TCP4ServerEndpoint)

    def test_ipv6Endpoint(self) -> None:
        """
        An IPv6 host is served by a TCP6 endpoint on that address.
        """
        service = self.server("::1", 4321).start()
        [child] = list(service)
        assert isinstance(child, StreamServerEndpointService)
        self.assertIsInstance(child.endpoint, TCP6ServerEndpoint)
        self.assertEqual(
            [(p, i) for p, _, _, i in self.reactor.tcpServers], [(4321, "::1")]
        )

    def test_setKeepaliveTimeout(self) -> None:
        """
        L{TcpRpcServer.setKeepaliveTimeout} sets the factory's keepalive, and
        what the hello announces.
        """
        server = self.server()
        server.setKeepaliveTimeout(10)
        factory = self.factoryOf(server.start())
        self.assertEqual(factory.keepalive, 10.0)
        self.assertEqual(factory.hello["keepalive"], 10.0)

    def test_keepaliveZero(self) -> None:
        """
        A keepalive of 0 turns it off.
        """
        server = self.server()
        server.setKeepaliveTimeout(0)
        self.assertEqual(self.factoryOf(server.start()).keepalive, 0.0)

    def test_negativeKeepalive(self) -> None:
        """
        A negative keepalive is a L{ValueError}, and changes nothing.
        """
        server = self.server()
        self.assertRaises(ValueError, server.setKeepaliveTimeout, -1)
        self.assertEqual(server.keepalive, 75.0)

    def test_registDefaultName(self) -> None:
        """
        L{TcpRpcServer.regist} serves a function under its C{__name__}.
        """
        server = self.server()
        server.regist(sayHello)
        factory = self.factoryOf(server.start())
        method = factory.registry.lookup("sayHello")
        assert method is not None
        self.assertIs(method.func, sayHello)
        self.assertFalse(method.thread)

    def test_registName(self) -> None:
        """
        L{TcpRpcServer.regist} serves a function under the name given, and
        in the thread pool when asked.
        """
        server = self.server()
        server.regist(sayHello, "greet", thread=True)
        self.assertEqual(
            server.registry.names(),
            ["greet", "system.describe", "system.listMethods"],
        )
        method = server.registry.lookup("greet")
        assert method is not None
        self.assertTrue(method.thread)

    def test_registTwice(self) -> None:
        """
        Registering two functions under one name is a L{ValueError}.
        """
        server = self.server()
        server.regist(sayHello)
        self.assertRaises(ValueError, server.regist, sayHello)

    def test_stopsOnShutdown(self) -> None:
        """
        L{TcpRpcServer.start} arranges for the service to stop (gracefully)
        before the reactor shuts down.
        """
        service = self.server().start()
        self.assertTrue(service.running)
        self.assertEqual(
            self.reactor.triggers["before"]["shutdown"],
            [(service.stopService, (), {})],
        )


class AgileutilServerScriptTests(SynchronousTestCase):
    """
    The agileutil article's server script runs on agilerpc with only its
    import line changed.
    """

    def test_agileutilServerScript(self) -> None:
        """
        The script serves C{sayHello}, closes an idle connection after its
        keepalive with a goaway, and exits 0 on SIGTERM.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        script = os.path.join(directory, "server.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(AGILEUTIL_SERVER_SCRIPT)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        process = subprocess.Popen(
            [sys.executable, script],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def kill() -> None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)
            assert process.stdout is not None
            process.stdout.close()

        self.addCleanup(kill)
        assert process.stdout is not None
        output = _Drain(process.stdout)
        match = output.waitFor(re.compile(r"RpcServerFactory starting on (\d+)"), 20)
        if match is None:
            self.fail("the agileutil server script did not start:\n" + output.text())
        client = RawClient(int(match.group(1)), timeout=5)
        self.addCleanup(client.close)

        self.assertEqual(client.receiveHello()["keepalive"], 1.0)
        self.assertEqual(
            client.call("sayHello", "zhangsan"), [1, 1, None, "hello zhangsan"]
        )
        started = time.monotonic()
        self.assertEqual(client.receive(), [3, "goaway", 1, "idle"])
        self.assertGreater(time.monotonic() - started, 0.5)
        self.assertTrue(client.atEOF())
        client.close()

        os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(10)
        except subprocess.TimeoutExpired:
            self.fail("the agileutil server script ignored SIGTERM:\n" + output.text())
        output.join(2)
        self.assertEqual(code, 0, output.text())
        self.assertIn("Received SIGTERM, shutting down.", output.text())
