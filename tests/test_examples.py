"""
Tests for L{agilerpc.examples.hello}, the handlers the README's server runs,
and for C{python -m agilerpc}.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from agilerpc import InvalidParams, Registry, RpcServerFactory
from agilerpc import _wire as wire
from agilerpc.examples import hello


class HelloTests(SynchronousTestCase):
    def test_registry(self) -> None:
        """
        The module's marked handlers are the five the README names.
        """
        names = set(Registry.fromModule(hello).names())
        self.assertEqual(
            names - {"system.listMethods", "system.describe"},
            {"sayHello", "add", "echo", "sleep", "ticks"},
        )

    def test_sayHello(self) -> None:
        """
        sayHello greets, as in the agileutil article.
        """
        self.assertEqual(hello.sayHello("zhangsan"), "hello zhangsan")

    def test_addAndEcho(self) -> None:
        """
        add adds and echo returns its argument.
        """
        self.assertEqual(hello.add(2, 3), 5)
        self.assertEqual(hello.echo({"a": [1, b"x"]}), {"a": [1, b"x"]})


class SleepTests(TestCase):
    @inlineCallbacks
    def test_sleep(self) -> Any:
        """
        sleep waits on the running reactor and returns its argument.
        """
        result = yield hello.sleep(0.01)
        self.assertEqual(result, 0.01)


class SleepArgumentTests(SynchronousTestCase):
    def test_refusesWhatCallLaterCannotTake(self) -> None:
        """
        sleep refuses NaN, infinities, negative or huge numbers, booleans and
        non-numbers as C{InvalidParams}, before they reach the reactor.
        """
        refused: list[Any] = [
            float("nan"),
            float("inf"),
            -1,
            -0.5,
            86401,
            True,
            "1",
            None,
        ]
        for seconds in refused:
            with self.assertRaises(InvalidParams) as caught:
                hello.sleep(seconds)
            self.assertIn(
                "seconds must be a number from 0 to 86400", str(caught.exception)
            )

    def test_servedAsInvalidParams(self) -> None:
        """
        Through a server, a NaN gets an C{InvalidParams} answer and nothing is
        logged.
        """
        factory = RpcServerFactory(Registry.fromModule(hello), Clock())
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        transport.clear()
        protocol.dataReceived(
            wire.frame(wire.encodeRequest(1, "sleep", [float("nan")]))
        )
        response = wire.parseServerMessage(transport.value()[4:])
        assert type(response) is wire.Response and response.error is not None
        self.assertEqual((response.msgid, response.error["type"]), (1, "InvalidParams"))
        self.assertEqual(self.flushLoggedErrors(), [])


class MainTests(SynchronousTestCase):
    def test_pythonDashM(self) -> None:
        """
        C{python -m agilerpc} runs the command line and exits with its status
        (2: usage error, for no arguments).
        """
        self.patch(sys, "argv", ["agilerpc"])
        self.patch(sys, "stderr", _Sink())
        with self.assertRaises(SystemExit) as caught:
            runpy.run_module("agilerpc", run_name="__main__")
        self.assertEqual(caught.exception.code, 2)


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class TicksTests(TestCase):
    """
    The example stream C{ticks}.
    """

    async def test_ticks(self) -> None:
        """
        ticks yields 0 to n - 1, waiting between them on the running reactor.
        """
        self.assertEqual([i async for i in hello.ticks(3, 0.001)], [0, 1, 2])
        self.assertEqual([i async for i in hello.ticks(2, 0)], [0, 1])

    async def test_refused(self) -> None:
        """
        ticks refuses a count or an interval out of range as C{InvalidParams}.
        """
        for n, every in [(-1, 0), (True, 0), (10**7, 0), (1, -1), (1, 61), (1, "1")]:
            with self.assertRaises(InvalidParams):
                [i async for i in hello.ticks(n, every)]  # type: ignore[arg-type]
