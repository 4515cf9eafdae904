"""
The examples of the guide's first pages (install, handlers, client,
blocking, keepalive, streaming, testing), loaded from C{docs/examples/} and
run against real servers: in-process L{RpcServerFactory}s on 127.0.0.1
port 0, or C{twistd agilerpc} and script subprocesses for the examples
that are a server's own module or script.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial import reporter
from twisted.trial.runner import TestLoader
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from agilerpc import InvalidParams, Registry, RemoteError, RpcClient, RpcServerFactory
from agilerpc.examples import hello

from . import serverprocess
from .docexamples import EXAMPLES, examplePath, loadExample
from .serverprocess import ServerProcess

#: The most any one example may take here, in seconds.
BOUND = 30


def _captureStdout(testCase: SynchronousTestCase) -> io.StringIO:
    """
    Collect what the test prints (the examples print their results) until
    the test ends.
    """
    out = io.StringIO()
    testCase.patch(sys, "stdout", out)
    return out


def _listen(testCase: TestCase, registry: Registry, **options: Any) -> int:
    """
    Serve C{registry} on 127.0.0.1 with the real reactor; the port.
    """
    factory = RpcServerFactory(registry, reactor, **options)
    tcp: Any = reactor
    port = tcp.listenTCP(0, factory, interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    number: int = port.getHost().port
    return number


def _helloRegistry(**replaced: Callable[..., Any]) -> Registry:
    """
    The example server's methods (C{agilerpc.examples.hello}), some of them
    replaced.
    """
    registry = Registry()
    for name in ("sayHello", "add", "echo", "sleep", "ticks"):
        registry.register(replaced.get(name, getattr(hello, name)), name)
    return registry


def _bounded(d: Deferred[Any]) -> Deferred[Any]:
    return d.addTimeout(BOUND, reactor)


def _exampleServer(testCase: SynchronousTestCase, module: str) -> ServerProcess:
    """
    C{twistd -n agilerpc --module MODULE} with C{docs/examples} as its
    C{PYTHONPATH}.
    """
    original = serverprocess.serverEnvironment

    def environment(ledger: str | None = None) -> dict[str, str]:
        env = original(ledger)
        env["PYTHONPATH"] = str(EXAMPLES)
        return env

    testCase.patch(serverprocess, "serverEnvironment", environment)
    return ServerProcess.start(testCase, module=module)


def _command(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """
    Run a command to its end (killed past L{BOUND} seconds).
    """
    return subprocess.run(
        args, capture_output=True, text=True, timeout=BOUND, stdin=subprocess.DEVNULL
    )


class _Script:
    """
    A Python script of C{docs/examples} running in a subprocess, its output
    read by a thread; killed by its pid in the test's cleanup.
    """

    def __init__(self, testCase: SynchronousTestCase, name: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(examplePath(name)), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._condition = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        testCase.addCleanup(self.stop)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._condition:
                self._lines.append(line)
                self._condition.notify_all()

    def output(self) -> str:
        with self._condition:
            return "".join(self._lines)

    def waitFor(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + BOUND
        with self._condition:
            while True:
                match = re.search(pattern, "".join(self._lines))
                if match is not None:
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise AssertionError(
                        f"no {pattern!r} in the output:\n" + "".join(self._lines)
                    )
                self._condition.wait(min(left, 0.1))

    def stop(self) -> int:
        """
        SIGTERM, then SIGKILL if it is still running after 5 s; its exit code.
        """
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


class InstallTests(SynchronousTestCase):
    """
    The install page: a handlers module served by C{twistd agilerpc}, called
    with the C{agilerpc} command.
    """

    def test_firstServer(self) -> None:
        """
        C{install_handlers} served by twistd answers C{agilerpc call} and
        C{agilerpc methods} as the page shows.
        """
        server = _exampleServer(self, "install_handlers")
        address = f"127.0.0.1:{server.port}"
        called = _run(_command("agilerpc"), "call", address, "sayHello", "zhangsan")
        self.assertEqual(
            (called.returncode, called.stdout), (0, '"hello zhangsan"\n'), called
        )
        added = _run(_command("agilerpc"), "call", address, "math.add", "1", "2")
        self.assertEqual((added.returncode, added.stdout), (0, "3\n"), added)
        missing = _run(_command("agilerpc"), "call", address, "nope")
        self.assertEqual(
            (missing.returncode, missing.stderr),
            (1, "agilerpc: MethodNotFound: no method named 'nope'\n"),
            missing,
        )
        methods = _run(_command("agilerpc"), "methods", address)
        self.assertEqual(methods.returncode, 0, methods)
        self.assertEqual(
            methods.stdout.splitlines()[:4],
            [
                "math.add(a: int, b: int) -> int",
                "    Add two integers.",
                "sayHello(name: str) -> str",
                "    Greet someone.",
            ],
        )


class HandlersTests(TestCase):
    """
    The handlers page: every kind of handler, the errors they send, and a
    registry built by hand.
    """

    timeout = BOUND

    def _client(self, port: int) -> RpcClient:
        client = RpcClient(reactor, "127.0.0.1", port, timeout=BOUND)
        self.addCleanup(client.close, 1)
        return client

    @inlineCallbacks
    def test_kinds(self) -> Any:
        """
        A plain value, a Deferred, a coroutine and a thread handler of
        C{handlers_kinds} each answer their call.
        """
        kinds = loadExample("handlers_kinds.py")
        client = self._client(_listen(self, Registry.fromModule(kinds)))
        self.assertEqual((yield client.callRemote("add", 2, 3)), 5)
        self.assertEqual((yield client.callRemote("later", 0.01, "x")), "x")
        self.assertEqual((yield client.callRemote("twice", 0.01, "y")), ["y", "y"])
        digest = yield client.callRemote("digest", b"abc", 2)
        self.assertEqual(digest, kinds.digest(b"abc", 2))
        self.assertEqual(len(digest), 64)
        # Arguments the signature cannot take are refused before it runs.
        yield self.assertFailure(client.callRemote("add", 1), InvalidParams)

    @inlineCallbacks
    def test_errors(self) -> Any:
        """
        C{withdraw} sends C{InvalidParams} and its own C{InsufficientFunds}
        with data; C{divide}'s exception arrives as its class name.
        """
        kinds = loadExample("handlers_kinds.py")
        client = self._client(_listen(self, Registry.fromModule(kinds)))
        self.assertEqual((yield client.callRemote("withdraw", 10, 3)), 7)
        yield self.assertFailure(client.callRemote("withdraw", 10, -1), InvalidParams)
        error = yield self.assertFailure(
            client.callRemote("withdraw", 10, 15), RemoteError
        )
        self.assertEqual(
            (error.type, error.message, error.data),
            ("InsufficientFunds", "not enough money", {"short": 5}),
        )
        error = yield self.assertFailure(client.callRemote("divide", 1, 0), RemoteError)
        self.assertEqual((type(error), error.type), (RemoteError, "ZeroDivisionError"))
        self.assertIn("division by zero", error.message)
        # The server logs the handler's unexpected exception.
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @inlineCallbacks
    def test_registry(self) -> Any:
        """
        C{handlers_registry.listen} serves the methods it registered, with
        their names and prefixes, and nothing else.
        """
        example = loadExample("handlers_registry.py")
        port = yield example.listen(reactor, 0)
        self.addCleanup(port.stopListening)
        client = self._client(port.getHost().port)
        self.assertEqual((yield client.callRemote("shout", "hi")), "HI")
        self.assertEqual((yield client.callRemote("length", [1, 2, 3])), 3)
        self.assertEqual((yield client.callRemote("counter.incr")), 1)
        self.assertEqual((yield client.callRemote("counter.incr", by=5)), 6)
        self.assertEqual((yield client.callRemote("counter.get")), 6)
        names = yield client.callRemote("system.listMethods")
        self.assertEqual(
            names,
            [
                "counter.get",
                "counter.incr",
                "length",
                "shout",
                "system.describe",
                "system.listMethods",
            ],
        )
        described = yield client.callRemote("system.describe")
        self.assertEqual(
            (
                described["counter.get"]["idempotent"],
                described["counter.incr"]["idempotent"],
            ),
            (True, False),
        )


class ClientTests(TestCase):
    """
    The Twisted client page's examples, against in-process servers.
    """

    timeout = BOUND

    @inlineCallbacks
    def test_basic(self) -> Any:
        """
        C{client_basic.main} greets, sums 100 pipelined calls and catches
        C{MethodNotFound}, then closes its client.
        """
        port = _listen(self, _helloRegistry())
        out = _captureStdout(self)
        yield _bounded(
            ensureDeferred(
                loadExample("client_basic.py").main(reactor, "127.0.0.1", port)
            )
        )
        self.assertEqual(
            out.getvalue().splitlines(),
            ["hello zhangsan", "9900", "MethodNotFound no method named 'nope'"],
        )

    @inlineCallbacks
    def test_basicScript(self) -> Any:
        """
        C{python client_basic.py PORT} runs the same program under
        C{task.react}, and exits 0.
        """
        port = _listen(self, _helloRegistry())
        done = yield deferToThread(
            _run, sys.executable, str(examplePath("client_basic.py")), str(port)
        )
        self.assertEqual(
            (done.returncode, done.stdout.splitlines()),
            (0, ["hello zhangsan", "9900", "MethodNotFound no method named 'nope'"]),
            done.stderr,
        )

    @inlineCallbacks
    def test_inlineCallbacks(self) -> Any:
        """
        C{client_inline.greet} returns a greeting per name.
        """
        port = _listen(self, _helloRegistry())
        greetings = yield _bounded(
            loadExample("client_inline.py").greet(
                reactor, "127.0.0.1", port, ["a", "b"]
            )
        )
        self.assertEqual(greetings, ["hello a", "hello b"])

    @inlineCallbacks
    def test_many(self) -> Any:
        """
        C{client_many.main} spreads its calls over both servers, times out
        its hurried call, and its notification reaches a server.
        """
        greeted: list[str] = []
        notified: list[Any] = []

        def sayHello(name: str) -> str:
            greeted.append(name)
            return "hello " + name

        def echo(x: Any) -> Any:
            notified.append(x)
            return x

        registry = _helloRegistry(sayHello=sayHello, echo=echo)
        one = _listen(self, registry)
        two = _listen(self, registry)
        out = _captureStdout(self)
        yield _bounded(
            ensureDeferred(
                loadExample("client_many.py").main(
                    reactor, [f"127.0.0.1:{one}", f"127.0.0.1:{two}"]
                )
            )
        )
        lines = out.getvalue().splitlines()
        self.assertEqual(
            lines[:2],
            ["['hello 0', 'hello 1', 'hello 2', 'hello 3']", "2 servers ready"],
        )
        self.assertTrue(
            lines[2].startswith("gave up: sleep() timed out after 0.2 s"), lines
        )
        self.assertEqual(len(lines), 3)
        self.assertEqual(sorted(greeted), ["0", "1", "2", "3"])
        # close() let the notification go out; the server runs it as it reads it.
        for _ in range(100):
            if notified:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(notified, ["fire and forget"])


class BlockingTests(TestCase):
    """
    The blocking client page: agileutil's scripts, import line aside.
    """

    timeout = BOUND * 2

    def test_agileutilScripts(self) -> None:
        """
        The agileutil server script serves the agileutil client script,
        which gets its answer again after the server closed the idle
        connection.
        """
        server = _Script(self, "blocking_server.py", "0", "0.5")
        port = int(server.waitFor(r"RpcServerFactory starting on (\d+)").group(1))
        out = _captureStdout(self)
        loadExample("blocking_client.py").main("127.0.0.1", port, pause=1.0)
        self.assertEqual(
            out.getvalue().splitlines(),
            ["resp hello zhangsan", "resp hello zhangsan"],
        )
        code = server.stop()
        # twistd's reactor re-raises the stopping signal once it is done.
        self.assertIn(code, (0, -signal.SIGTERM), server.output())

    @inlineCallbacks
    def test_errors(self) -> Any:
        """
        C{blocking_errors.main}, in a thread: results, C{MethodNotFound}, a
        handler's error by type, and a timeout.
        """
        port = _listen(self, _helloRegistry())
        out = _captureStdout(self)
        yield _bounded(
            deferToThread(loadExample("blocking_errors.py").main, "127.0.0.1", port)
        )
        self.assertEqual(
            out.getvalue().splitlines(),
            [
                "3",
                "xy",
                "MethodNotFound: no method named 'nope'",
                "TypeError",
                "timed out; it may or may not have run",
            ],
        )
        self.flushLoggedErrors(TypeError)


class KeepaliveTests(TestCase):
    """
    The keepalive page: an idle close the caller does not see, and a
    goaway crossing a request.
    """

    timeout = BOUND

    @inlineCallbacks
    def test_idle(self) -> Any:
        """
        After a pause longer than the keepalive, C{keepalive_idle.main}'s
        client is disconnected, and its next call succeeds on a second
        connection.
        """
        port = _listen(self, _helloRegistry(), keepalive=0.3)
        out = _captureStdout(self)
        yield _bounded(
            ensureDeferred(
                loadExample("keepalive_idle.py").main(reactor, "127.0.0.1", port, 1.0)
            )
        )
        self.assertEqual(
            out.getvalue().splitlines(),
            [
                "hello before",
                "connected after the pause: False",
                "hello after",
                "connections made: 2",
            ],
        )


class KeepaliveGoawayTests(SynchronousTestCase):
    def test_goaway(self) -> None:
        """
        C{keepalive_goaway.demo}: the request after C{last_msgid} is resent
        on a second connection and runs once; the one up to it is answered
        on the first.
        """
        out = _captureStdout(self)
        loadExample("keepalive_goaway.py").demo()
        self.assertEqual(
            out.getvalue().splitlines(),
            [
                "answers: ['b']",
                "runs: ['slow', 'b']",
                "connections: 2",
                "answers: ['b', 'done']",
                "open connections: 1",
                "resent: 1",
            ],
        )


class StreamingTests(TestCase):
    """
    The streaming page: generators and async generators served, taken by
    both clients, and cancelled.
    """

    timeout = BOUND

    def _stopped(self) -> list[str]:
        """
        The messages of C{ticks}' C{finally} block, as they are logged.
        """
        stopped: list[str] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            if "ticks stopped" in event.get("log_format", ""):
                stopped.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return stopped

    @inlineCallbacks
    def _waitFor(self, stopped: list[str]) -> Any:
        for _ in range(200):
            if stopped:
                return
            yield deferLater(reactor, 0.01, lambda: None)

    @inlineCallbacks
    def test_twistedClient(self) -> Any:
        """
        C{streaming_client.main} takes C{countdown}'s items and result both
        ways, and cancels C{ticks}, whose generator is closed on the server.
        """
        stopped = self._stopped()
        handlers = loadExample("streaming_handlers.py")
        port = _listen(self, Registry.fromModule(handlers))
        out = _captureStdout(self)
        yield _bounded(
            ensureDeferred(
                loadExample("streaming_client.py").main(reactor, "127.0.0.1", port)
            )
        )
        self.assertEqual(
            out.getvalue().splitlines(),
            [
                "item 3",
                "item 2",
                "item 1",
                "result liftoff",
                "[5, 4, 3, 2, 1] liftoff",
                "stopped at 2",
            ],
        )
        yield self._waitFor(stopped)
        self.assertEqual(len(stopped), 1)
        self.assertRegex(stopped[0], r"^ticks stopped after \d+ of 1000 items$")
        self.assertNotIn("after 1000 of", stopped[0])

    @inlineCallbacks
    def test_blockingClient(self) -> Any:
        """
        C{streaming_blocking.main} iterates over C{countdown}, and leaving
        its C{ticks} loop early closes the generator on the server.
        """
        stopped = self._stopped()
        handlers = loadExample("streaming_handlers.py")
        port = _listen(self, Registry.fromModule(handlers))
        out = _captureStdout(self)
        yield _bounded(
            deferToThread(loadExample("streaming_blocking.py").main, "127.0.0.1", port)
        )
        self.assertEqual(
            out.getvalue().splitlines(),
            ["item 3", "item 2", "item 1", "stopped at 2"],
        )
        yield self._waitFor(stopped)
        self.assertEqual(len(stopped), 1)
        self.assertNotIn("after 1000 of", stopped[0])


class TestingTests(SynchronousTestCase):
    """
    The testing page's example is a trial test module: its tests pass.
    """

    def test_exampleTestsPass(self) -> None:
        """
        Every test of C{testing_greeter.GreeterTests} runs and passes.
        """
        example = loadExample("testing_greeter.py")
        suite = TestLoader().loadClass(example.GreeterTests)
        result = reporter.TestResult()
        suite.run(result)
        self.assertEqual(
            (result.testsRun, result.errors, result.failures), (5, [], []), result
        )
