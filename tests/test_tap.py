# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for L{agilerpc.tap}: the C{twistd agilerpc} options and the service
they make.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import RpcServerFactory, RpcServerProtocol, RpcService, _wire
from agilerpc.tap import DEFAULT_MODULE, Options, makeService

from .serverhelpers import ListeningReactor
from .serverprocess import serverEnvironment, twistdPath

_HELLO_NAMES = [
    "add",
    "echo",
    "sayHello",
    "sleep",
    "system.describe",
    "system.listMethods",
    "ticks",
]

_ALPHA = """
import agilerpc

@agilerpc.rpc
def alphaOne() -> int:
    return 1

@agilerpc.rpc(name="alpha.two")
def two() -> int:
    return 2
"""

_BETA = """
import agilerpc

@agilerpc.rpc
def beta() -> str:
    return "beta"
"""

_NOTHING_MARKED = """
def plain() -> None:
    pass
"""

_BROKEN = """
raise RuntimeError("this module is broken")
"""

_CLASHES = """
import agilerpc

@agilerpc.rpc
def sayHello(name: str) -> str:
    return name
"""


def parse(*argv: str) -> Options:
    """
    Parse C{argv} as C{twistd agilerpc} would.
    """
    options = Options()
    options.parseOptions(list(argv))
    return options


class _Modules:
    """
    Handler modules written to a temporary directory on C{sys.path}, for the
    duration of one test.
    """

    def __init__(self, testCase: SynchronousTestCase, **sources: str) -> None:
        directory = os.path.abspath(testCase.mktemp())
        os.makedirs(directory)
        prefix = "agilerpc_taptest_"
        self.names = {key: prefix + key for key in sources}
        for key, source in sources.items():
            path = os.path.join(directory, self.names[key] + ".py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(source)
        sys.path.insert(0, directory)

        def cleanup() -> None:
            sys.path.remove(directory)
            for name in self.names.values():
                sys.modules.pop(name, None)

        testCase.addCleanup(cleanup)


class OptionsDefaultsTests(SynchronousTestCase):
    """
    L{Options} without arguments.
    """

    def setUp(self) -> None:
        self.options = parse()

    def test_port(self) -> None:
        """
        The port defaults to 9988, as an C{int}.
        """
        self.assertEqual(self.options["port"], 9988)
        self.assertIs(type(self.options["port"]), int)

    def test_keepalive(self) -> None:
        """
        The keepalive defaults to 75 seconds, as a C{float}.
        """
        self.assertEqual(self.options["keepalive"], 75.0)
        self.assertIs(type(self.options["keepalive"]), float)

    def test_maxMessageSize(self) -> None:
        """
        The maximum message size defaults to 8 MiB.
        """
        self.assertEqual(self.options["max-message-size"], 8 * 1024 * 1024)

    def test_shutdownGrace(self) -> None:
        """
        The shutdown grace defaults to 10 seconds.
        """
        self.assertEqual(self.options["shutdown-grace"], 10.0)

    def test_listensOnPortOnEveryInterface(self) -> None:
        """
        Without C{--listen}, the server listens on TCP port 9988 on every
        interface.
        """
        self.assertEqual(self.options["interface"], "")
        self.assertEqual(self.options["listen"], ["tcp:9988:backlog=1024"])

    def test_defaultModule(self) -> None:
        """
        Without C{--module}, the handlers of C{agilerpc.examples.hello} are
        served.
        """
        self.assertEqual(DEFAULT_MODULE, "agilerpc.examples.hello")
        self.assertEqual(self.options["module"], [])
        self.assertEqual(self.options["registry"].names(), _HELLO_NAMES)

    def test_debugOff(self) -> None:
        """
        Tracebacks are not sent to callers unless asked for.
        """
        self.assertFalse(self.options["debug"])


class OptionsTests(SynchronousTestCase):
    """
    L{Options} with arguments.
    """

    def test_port(self) -> None:
        """
        C{--port} picks the TCP port.
        """
        options = parse("--port", "1234")
        self.assertEqual(options["port"], 1234)
        self.assertEqual(options["listen"], ["tcp:1234:backlog=1024"])

    def test_portZero(self) -> None:
        """
        C{--port 0} (any free port) is allowed.
        """
        self.assertEqual(parse("--port", "0")["listen"], ["tcp:0:backlog=1024"])

    def test_interface(self) -> None:
        """
        C{--interface} restricts the port to one address.
        """
        options = parse("--port", "1234", "--interface", "127.0.0.1")
        self.assertEqual(
            options["listen"], ["tcp:1234:backlog=1024:interface=127.0.0.1"]
        )

    def test_ipv6Interface(self) -> None:
        """
        The colons of an IPv6 C{--interface} are escaped in the endpoint
        description.
        """
        options = parse("--interface", "::1")
        self.assertEqual(options["listen"], [r"tcp:9988:backlog=1024:interface=\:\:1"])

    def test_listenOverridesPort(self) -> None:
        """
        C{--listen} replaces C{--port} and C{--interface}, and can be given
        more than once.
        """
        options = parse(
            "--port",
            "1234",
            "--interface",
            "127.0.0.1",
            "--listen",
            "tcp:5000:interface=127.0.0.1",
            "--listen",
            "unix:/tmp/agilerpc.sock",
        )
        self.assertEqual(
            options["listen"],
            ["tcp:5000:interface=127.0.0.1", "unix:/tmp/agilerpc.sock"],
        )

    def test_keepalive(self) -> None:
        """
        C{--keepalive} takes fractional seconds.
        """
        self.assertEqual(parse("--keepalive", "2.5")["keepalive"], 2.5)

    def test_keepaliveZero(self) -> None:
        """
        C{--keepalive 0} (never cut idle connections) is allowed.
        """
        self.assertEqual(parse("--keepalive", "0")["keepalive"], 0.0)

    def test_maxMessageSize(self) -> None:
        """
        C{--max-message-size} takes a number of bytes.
        """
        options = parse("--max-message-size", "1000")
        self.assertEqual(options["max-message-size"], 1000)

    def test_shutdownGrace(self) -> None:
        """
        C{--shutdown-grace} takes fractional seconds, 0 included.
        """
        self.assertEqual(parse("--shutdown-grace", "0.5")["shutdown-grace"], 0.5)
        self.assertEqual(parse("--shutdown-grace", "0")["shutdown-grace"], 0.0)

    def test_debug(self) -> None:
        """
        C{--debug} turns on tracebacks for callers.
        """
        self.assertTrue(parse("--debug")["debug"])

    def test_module(self) -> None:
        """
        C{--module} serves the marked functions of that module, under their
        own or their chosen names, instead of the examples.
        """
        modules = _Modules(self, alpha=_ALPHA)
        options = parse("--module", modules.names["alpha"])
        self.assertEqual(options["module"], [modules.names["alpha"]])
        self.assertEqual(
            options["registry"].names(),
            ["alpha.two", "alphaOne", "system.describe", "system.listMethods"],
        )

    def test_moduleRepeatable(self) -> None:
        """
        C{--module} can be given more than once: the functions of every
        module are served.
        """
        modules = _Modules(self, alpha=_ALPHA, beta=_BETA)
        options = parse(
            "--module", modules.names["alpha"], "--module", modules.names["beta"]
        )
        self.assertEqual(
            options["registry"].names(),
            [
                "alpha.two",
                "alphaOne",
                "beta",
                "system.describe",
                "system.listMethods",
            ],
        )


class OptionsErrorTests(SynchronousTestCase):
    """
    Bad values are a L{usage.UsageError} naming the option.
    """

    def assertUsageError(self, argv: list[str], *fragments: str) -> str:
        """
        Parsing C{argv} fails with a usage error containing every one of
        C{fragments}; its message.
        """
        error = self.assertRaises(usage.UsageError, parse, *argv)
        message = str(error)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_negativeKeepalive(self) -> None:
        """
        A negative keepalive is refused.
        """
        self.assertUsageError(["--keepalive", "-1"], "--keepalive", ">= 0", "'-1'")

    def test_keepaliveNotANumber(self) -> None:
        """
        A keepalive that is not a number is refused.
        """
        self.assertUsageError(
            ["--keepalive", "soon"], "--keepalive must be a number", "'soon'"
        )

    def test_keepaliveNaN(self) -> None:
        """
        A keepalive of NaN is refused: it compares false to every bound.
        """
        self.assertUsageError(["--keepalive", "nan"], "--keepalive")

    def test_portTooLarge(self) -> None:
        """
        A port above 65535 is refused.
        """
        self.assertUsageError(["--port", "65536"], "--port", "65535")

    def test_portNegative(self) -> None:
        """
        A negative port is refused.
        """
        self.assertUsageError(["--port", "-1"], "--port")

    def test_portNotANumber(self) -> None:
        """
        A port that is not an integer is refused.
        """
        self.assertUsageError(["--port", "http"], "--port must be a number")

    def test_maxMessageSizeZero(self) -> None:
        """
        A maximum message size of 0 is refused.
        """
        self.assertUsageError(["--max-message-size", "0"], "--max-message-size", "> 0")

    def test_maxMessageSizeNegative(self) -> None:
        """
        A negative maximum message size is refused.
        """
        self.assertUsageError(["--max-message-size", "-5"], "--max-message-size")

    def test_negativeShutdownGrace(self) -> None:
        """
        A negative shutdown grace is refused.
        """
        self.assertUsageError(["--shutdown-grace", "-1"], "--shutdown-grace")

    def test_moduleDoesNotImport(self) -> None:
        """
        A module that does not exist is refused, with the import error.
        """
        self.assertUsageError(
            ["--module", "agilerpc_no_such_module"],
            "--module agilerpc_no_such_module: cannot import it",
            "No module named 'agilerpc_no_such_module'",
        )

    def test_moduleFailsToImport(self) -> None:
        """
        A module that raises while it is imported is refused, with what it
        raised.
        """
        modules = _Modules(self, broken=_BROKEN)
        name = modules.names["broken"]
        self.assertUsageError(
            ["--module", name],
            f"--module {name}: cannot import it",
            "this module is broken",
        )

    def test_moduleWithoutHandlers(self) -> None:
        """
        A module with no function marked with C{@rpc} is refused.
        """
        modules = _Modules(self, nothing=_NOTHING_MARKED)
        name = modules.names["nothing"]
        self.assertUsageError(
            ["--module", name],
            f"--module {name}: it has no functions marked with @agilerpc.rpc",
        )

    def test_modulesWithClashingNames(self) -> None:
        """
        Two modules that mark functions of the same name are refused, naming
        the module and the method.
        """
        modules = _Modules(self, clashes=_CLASHES)
        name = modules.names["clashes"]
        self.assertUsageError(
            ["--module", DEFAULT_MODULE, "--module", name],
            f"--module {name}",
            "'sayHello' is already registered",
        )

    def test_sameModuleTwice(self) -> None:
        """
        A module named twice is served once, not refused as a clash with
        itself.
        """
        options = Options()
        options.parseOptions(["--module", DEFAULT_MODULE, "--module", DEFAULT_MODULE])
        self.assertIn("sayHello", options["registry"].names())

    def test_badListen(self) -> None:
        """
        A C{--listen} description that names no known endpoint is refused.
        """
        self.assertUsageError(["--listen", "nosuch:1234"], "--listen nosuch:1234")

    def test_badListenPort(self) -> None:
        """
        A C{--listen} TCP description with a port that is not a number is
        refused.
        """
        self.assertUsageError(["--listen", "tcp:http"], "--listen tcp:http")


class _GoawayRecorder(StringTransport):
    """
    A transport that records, among the reactor's events, when a goaway is
    written to it.
    """

    def __init__(self, reactor: ListeningReactor) -> None:
        super().__init__()
        self.reactor = reactor

    def write(self, data: bytes) -> None:
        super().write(data)
        if b"goaway" in data:
            self.reactor.events.append("goaway")


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} builds an L{RpcService} listening where the options say.
    """

    def makeService(self, *argv: str) -> tuple[RpcService, ListeningReactor]:
        reactor = ListeningReactor()
        service = makeService(parse(*argv), reactor)
        assert isinstance(service, RpcService)
        return service, reactor

    def test_listensOnPortAndInterface(self) -> None:
        """
        Started, the service listens on the TCP port and interface given.
        """
        service, reactor = self.makeService(
            "--port", "1234", "--interface", "127.0.0.1"
        )
        self.assertEqual(reactor.tcpServers, [])
        service.startService()
        self.assertEqual(
            [(p, f, i) for p, f, _, i in reactor.tcpServers],
            [(1234, service.factory, "127.0.0.1")],
        )

    def test_listensOnDefaults(self) -> None:
        """
        By default the service listens on port 9988 on every interface, with
        a backlog of 1024 (Twisted's 50 drops bursts of connections).
        """
        service, reactor = self.makeService()
        service.startService()
        self.assertEqual(
            [(p, b, i) for p, _, b, i in reactor.tcpServers], [(9988, 1024, "")]
        )

    def test_listensOnEveryListen(self) -> None:
        """
        The service listens on every C{--listen} endpoint, with one factory.
        """
        service, reactor = self.makeService(
            "--listen",
            "tcp:5000:interface=127.0.0.1",
            "--listen",
            "tcp:5001:interface=127.0.0.2",
        )
        service.startService()
        self.assertEqual(
            [(p, f, i) for p, f, _, i in reactor.tcpServers],
            [
                (5000, service.factory, "127.0.0.1"),
                (5001, service.factory, "127.0.0.2"),
            ],
        )

    def test_factoryConfiguration(self) -> None:
        """
        The factory has the options' keepalive, maximum message size, debug
        flag and registry, and the given reactor.
        """
        options = parse("--keepalive", "2.5", "--max-message-size", "1000", "--debug")
        reactor = ListeningReactor()
        service = makeService(options, reactor)
        assert isinstance(service, RpcService)
        factory = service.factory
        self.assertIsInstance(factory, RpcServerFactory)
        self.assertEqual(factory.keepalive, 2.5)
        self.assertEqual(factory.maxMessageSize, 1000)
        self.assertTrue(factory.debug)
        self.assertIs(factory.registry, options["registry"])
        self.assertIs(factory.reactor, reactor)
        self.assertEqual(
            factory.hello,
            {
                "protocol": 1,
                "keepalive": 2.5,
                "max_message_size": 1000,
                "server": factory.hello["server"],
                "features": ["stream", "deadline", "metadata"],
                "max_metadata_size": 8192,
            },
        )

    def test_factoryDefaults(self) -> None:
        """
        Without options the factory keeps connections idle for 75 seconds and
        accepts messages up to 8 MiB, without debug.
        """
        service, _ = self.makeService()
        self.assertEqual(service.factory.keepalive, 75.0)
        self.assertEqual(service.factory.maxMessageSize, 8 * 1024 * 1024)
        self.assertFalse(service.factory.debug)

    def test_globalReactorByDefault(self) -> None:
        """
        Without a reactor, the service runs on the global one (twistd's).
        """
        from twisted.internet import reactor

        service = makeService(parse())
        assert isinstance(service, RpcService)
        self.assertIs(service.factory.reactor, reactor)

    def test_shutdownGrace(self) -> None:
        """
        The service gets the options' shutdown grace.
        """
        service, _ = self.makeService("--shutdown-grace", "3")
        self.assertEqual(service.shutdownGrace, 3.0)


class ServiceStopTests(SynchronousTestCase):
    """
    Stopping the service made by L{makeService} stops listening, then closes
    every connection gracefully.
    """

    def setUp(self) -> None:
        self.reactor = ListeningReactor()
        options = parse("--shutdown-grace", "3")
        self.pending: Deferred[str] = Deferred()
        options["registry"].register(lambda: self.pending, "wait")
        service = makeService(options, self.reactor)
        assert isinstance(service, RpcService)
        self.service = service
        self.service.startService()
        [(_, factory, _, _)] = self.reactor.tcpServers
        self.assertIs(factory, service.factory)
        self.transport = _GoawayRecorder(self.reactor)
        self.protocol: RpcServerProtocol = service.factory.buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 40000)
        )
        self.protocol.makeConnection(self.transport)
        self.transport.clear()

    def frames(self) -> list[list[Any]]:
        """
        The messages written to the connection since the last call.
        """
        data = self.transport.value()
        self.transport.clear()
        messages = []
        while data:
            (length,) = _wire.HEADER.unpack(data[:4])
            messages.append(_wire.unpack(data[4 : 4 + length]))
            data = data[4 + length :]
        return messages

    def test_stopListeningThenGoaway(self) -> None:
        """
        Stopping stops listening first, then sends an idle connection a
        goaway with reason C{"shutdown"} and closes it.
        """
        stopped = self.service.stopService()
        self.assertEqual(self.reactor.events, ["stopListening", "goaway"])
        self.assertEqual(self.frames(), [[3, "goaway", None, "shutdown"]])
        self.assertTrue(self.transport.disconnecting)
        self.assertNoResult(stopped)
        self.protocol.connectionLost(None)
        self.assertIsNone(self.successResultOf(stopped))

    def test_callInFlightAnswered(self) -> None:
        """
        A call in flight when the service stops is still answered, after the
        goaway naming it, and only then is the connection closed.
        """
        self.protocol.dataReceived(_wire.frame(_wire.encodeRequest(7, "wait", [])))
        stopped = self.service.stopService()
        self.assertEqual(self.frames(), [[3, "goaway", 7, "shutdown"]])
        self.assertFalse(self.transport.disconnecting)
        self.pending.callback("done")
        self.assertEqual(self.frames(), [[1, 7, None, "done"]])
        self.assertTrue(self.transport.disconnecting)
        self.assertNoResult(stopped)
        self.protocol.connectionLost(None)
        self.assertIsNone(self.successResultOf(stopped))

    def test_graceExpires(self) -> None:
        """
        A call still running when the shutdown grace passes is abandoned: the
        connection is aborted.
        """
        self.protocol.dataReceived(_wire.frame(_wire.encodeRequest(7, "wait", [])))
        stopped = self.service.stopService()
        self.reactor.advance(2.9)
        self.assertFalse(self.transport.disconnecting)
        self.reactor.advance(0.1)
        self.assertTrue(self.transport.disconnected)
        self.protocol.connectionLost(None)
        self.assertIsNone(self.successResultOf(stopped))

    def test_noConnections(self) -> None:
        """
        Without connections, stopping finishes at once.
        """
        self.protocol.connectionLost(None)
        stopped = self.service.stopService()
        self.assertEqual(self.reactor.events, ["stopListening"])
        self.assertIsNone(self.successResultOf(stopped))


class TwistdCommandLineTests(SynchronousTestCase):
    """
    C{twistd agilerpc} with a bad option prints a usage error, not a
    traceback.
    """

    def test_usageErrorExitsOne(self) -> None:
        """
        A negative C{--keepalive} makes twistd exit 1 with the option named
        in its error line, and no traceback.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        result = subprocess.run(
            [twistdPath(), "-n", "agilerpc", "--keepalive", "-1"],
            cwd=directory,
            env=serverEnvironment(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn(
            "--keepalive must be >= 0, not '-1'", result.stdout + result.stderr
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_subcommandUsageErrorExitsOne(self) -> None:
        """
        Parsed as twistd's subcommand, a bad option prints twistd's usage and
        the error line, then raises C{SystemExit(1)}, whichever Twisted runs.
        """
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        self.patch(sys, "argv", ["twistd", "-n", "agilerpc", "--keepalive", "-1"])
        config = ServerOptions()
        exited = self.assertRaises(SystemExit, config.parseOptions, sys.argv[1:])
        self.assertEqual(exited.code, 1)
        self.assertIn("-k, --keepalive=", output.getvalue())
        self.assertTrue(
            output.getvalue().endswith(
                "\ntwistd -n: --keepalive must be >= 0, not '-1'\n"
            ),
            output.getvalue()[-300:],
        )

    def test_aloneUsageErrorRaised(self) -> None:
        """
        Parsed on their own (as a worker parses them), bad options raise
        L{usage.UsageError} and print nothing.
        """
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        self.assertRaises(usage.UsageError, parse, "--keepalive", "-1")
        self.assertEqual(output.getvalue(), "")


class LimitOptionsTests(SynchronousTestCase):
    """
    C{--max-in-flight} and C{--max-connections} reach the factory.
    """

    def test_defaults(self) -> None:
        """
        By default 1000 calls may be in flight per connection, and the
        number of connections is unlimited.
        """
        service = makeService(parse(), ListeningReactor())
        assert isinstance(service, RpcService)
        self.assertEqual(service.factory.maxInFlight, 1000)
        self.assertIsNone(service.factory.maxConnections)
        self.assertEqual(service.factory.maxContainers, 65536)
        self.assertEqual(service.factory.frameTimeout, 120.0)
        self.assertEqual(service.factory.inputBudget.limit, 1024**3)

    def test_given(self) -> None:
        """
        The options' values are the factory's limits.
        """
        options = parse(
            "--max-in-flight", "7", "--max-connections", "3", "--max-containers", "9"
        )
        service = makeService(options, ListeningReactor())
        assert isinstance(service, RpcService)
        self.assertEqual(service.factory.maxInFlight, 7)
        self.assertEqual(service.factory.maxConnections, 3)
        self.assertEqual(service.factory.maxContainers, 9)
        service = makeService(
            parse("--max-containers", "0", "--frame-timeout", "2.5"),
            ListeningReactor(),
        )
        assert isinstance(service, RpcService)
        self.assertIsNone(service.factory.maxContainers)
        self.assertEqual(service.factory.frameTimeout, 2.5)
        for given, limit in [("9000000", 9000000), ("0", None)]:
            service = makeService(parse("--max-input-total", given), ListeningReactor())
            assert isinstance(service, RpcService)
            self.assertEqual(service.factory.inputBudget.limit, limit)

    def test_invalid(self) -> None:
        """
        A max in flight below 1, or a negative max connections, is a usage
        error.
        """
        e = self.assertRaises(usage.UsageError, parse, "--max-in-flight", "0")
        self.assertEqual(str(e), "--max-in-flight must be >= 1, not '0'")
        e = self.assertRaises(usage.UsageError, parse, "--max-connections", "-1")
        self.assertEqual(str(e), "--max-connections must be >= 0, not '-1'")
        e = self.assertRaises(usage.UsageError, parse, "--max-containers", "-1")
        self.assertEqual(str(e), "--max-containers must be >= 0, not '-1'")
        e = self.assertRaises(usage.UsageError, parse, "--frame-timeout", "-1")
        self.assertEqual(str(e), "--frame-timeout must be >= 0, not '-1'")
        e = self.assertRaises(usage.UsageError, parse, "--max-input-total", "-1")
        self.assertEqual(str(e), "--max-input-total must be >= 0, not '-1'")
        e = self.assertRaises(
            usage.UsageError,
            parse,
            "--max-message-size",
            "1000",
            "--max-input-total",
            "1003",
        )
        self.assertEqual(
            str(e),
            "--max-input-total must be 0 or hold a frame of --max-message-size "
            "(at least 1004), not 1003",
        )

    def test_callTimeAndMetadataSize(self) -> None:
        """
        C{--max-call-time} bounds every call's deadline (0, the default:
        none); C{--max-metadata-size} is the hello's C{max_metadata_size}.
        """
        service = makeService(
            parse("--max-call-time", "2.5", "--max-metadata-size", "100"),
            ListeningReactor(),
        )
        assert isinstance(service, RpcService)
        self.assertEqual(service.factory.settings.maxCallTime, 2.5)
        self.assertEqual(service.factory.hello["max_metadata_size"], 100)
        service = makeService(parse(), ListeningReactor())
        assert isinstance(service, RpcService)
        self.assertIsNone(service.factory.settings.maxCallTime)
        self.assertEqual(service.factory.hello["max_metadata_size"], 8192)

    def test_invalidCallTimeAndMetadataSize(self) -> None:
        """
        A negative or too long C{--max-call-time}, or a negative
        C{--max-metadata-size}, is a usage error.
        """
        e = self.assertRaises(usage.UsageError, parse, "--max-call-time", "-1")
        self.assertEqual(str(e), "--max-call-time must be >= 0, not '-1'")
        e = self.assertRaises(usage.UsageError, parse, "--max-call-time", "inf")
        self.assertIn("at most 31536000 (a year)", str(e))
        e = self.assertRaises(usage.UsageError, parse, "--max-metadata-size", "-1")
        self.assertEqual(str(e), "--max-metadata-size must be >= 0, not '-1'")

    def test_authToken(self) -> None:
        """
        The token of C{--auth-token-file} is the factory's, as bytes.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("tok\n")
        service = makeService(parse("--auth-token-file", path), ListeningReactor())
        assert isinstance(service, RpcService)
        self.assertEqual(service.factory.authToken, b"tok")


class TLSOptionsTests(SynchronousTestCase):
    """
    C{--tls-cert}, C{--tls-key} and C{--tls-client-ca}.
    """

    def setUp(self) -> None:
        from .tlshelpers import pki

        self.pki = pki()

    def tlsArgs(self, *extra: str) -> list[str]:
        return [
            "--tls-cert",
            self.pki.path("server.pem"),
            "--tls-key",
            self.pki.path("server.key"),
            *extra,
        ]

    def test_wrapsEveryListener(self) -> None:
        """
        With C{--tls-cert}, every listener listens with a
        L{TLSMemoryBIOFactory} wrapping the RPC factory, as a server.
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        reactor = ListeningReactor()
        argv = self.tlsArgs("--listen", "tcp:5000", "--listen", "tcp:5001")
        service = makeService(parse(*argv), reactor)
        assert isinstance(service, RpcService)
        service.startService()
        factories = [f for _, f, _, _ in reactor.tcpServers]
        self.assertEqual(len(factories), 2)
        for factory in factories:
            assert isinstance(factory, TLSMemoryBIOFactory)
            self.assertIs(factory.wrappedFactory, service.factory)
        self.assertIs(service.listeningFactory, factories[0])

    def test_clientCA(self) -> None:
        """
        With C{--tls-client-ca}, the server requires and verifies client
        certificates; without it, it asks for none.
        """
        from OpenSSL import SSL

        required = parse(*self.tlsArgs("--tls-client-ca", self.pki.path("ca.pem")))
        mode = required["tls"].getContext().get_verify_mode()
        wanted = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        self.assertEqual(mode & wanted, wanted)
        plain = parse(*self.tlsArgs())
        self.assertEqual(plain["tls"].getContext().get_verify_mode(), SSL.VERIFY_NONE)

    def test_noTLSByDefault(self) -> None:
        """
        Without the options the factory is not wrapped.
        """
        service = makeService(parse(), ListeningReactor())
        assert isinstance(service, RpcService)
        self.assertIs(service.listeningFactory, service.factory)

    def test_usageErrors(self) -> None:
        """
        A certificate without a key, a client CA without a certificate, an
        C{ssl:} listener with C{--tls-cert}, a key that does not match and a
        file without a certificate are usage errors.
        """
        cert, key = self.pki.path("server.pem"), self.pki.path("server.key")
        cases = [
            (["--tls-cert", cert], "--tls-cert and --tls-key go together"),
            (
                ["--tls-client-ca", cert],
                "--tls-client-ca needs --tls-cert and --tls-key (an ssl: "
                "--listen cannot require client certificates)",
            ),
            (
                self.tlsArgs("--listen", "ssl:1:privateKey=k:certKey=c"),
                "--listen ssl:1:privateKey=k:certKey=c: with --tls-cert every "
                "listener serves TLS already; use tcp: (or unix:) descriptions",
            ),
            (
                ["--tls-cert", key, "--tls-key", key],
                f"--tls-cert {key}: no PEM certificate in it",
            ),
        ]
        for argv, message in cases:
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertEqual(str(e), message)
        wrongKey = self.pki.path("client.key")
        e = self.assertRaises(
            usage.UsageError, parse, "--tls-cert", cert, "--tls-key", wrongKey
        )
        self.assertTrue(str(e).startswith(f"--tls-cert {cert} --tls-key {wrongKey}: "))
