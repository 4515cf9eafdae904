"""
Tests for L{agilerpc.examples.hello}, the handlers the README's server runs,
and for C{python -m agilerpc}.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from agilerpc import Registry
from agilerpc.examples import hello


class HelloTests(SynchronousTestCase):
    def test_registry(self) -> None:
        """
        The module's marked handlers are the four the README names.
        """
        names = set(Registry.fromModule(hello).names())
        self.assertEqual(
            names - {"system.listMethods", "system.describe"},
            {"sayHello", "add", "echo", "sleep"},
        )

    def test_sayHello(self) -> None:
        """
        sayHello greets, as in the seed article.
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
