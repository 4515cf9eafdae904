"""
Integration tests of L{agilerpc.RpcClient} against a real
C{twistd -n agilerpc} subprocess on 127.0.0.1, with the real reactor.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from agilerpc import CallLost, RpcClient

from .incrstream import IncrStream
from .serverprocess import ServerProcess


def _pause(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


class RpcClientIntegrationTests(TestCase):
    timeout = 90

    def _client(self, port: int, **kwargs: Any) -> RpcClient:
        client = RpcClient(reactor, "127.0.0.1", port, **kwargs)
        self.addCleanup(client.close, 1)
        return client

    def _readLedger(self, path: str) -> Counter[str]:
        with open(path, encoding="utf-8") as f:
            return Counter(line.strip() for line in f if line.strip())

    @inlineCallbacks
    def test_idleCloseIsInvisible(self) -> Any:
        """
        The agileutil article's promise, three times over: a call after the
        server closed the idle connection reconnects and succeeds.
        """
        server = ServerProcess.start(self, keepalive=1)
        client = self._client(server.port)
        for i in range(3):
            result = yield client.callRemote("sayHello", f"zhangsan{i}")
            self.assertEqual(result, f"hello zhangsan{i}")
            yield _pause(1.5)
            self.assertFalse(client.connected)

    @inlineCallbacks
    def test_rollingRestartLosesNothing(self) -> Any:
        """
        A client keeps calling incr() with unique tokens while the server is
        stopped with SIGTERM and started again twice: every call succeeds and
        ran exactly once.
        """
        ledger = os.path.abspath(self.mktemp())
        server = ServerProcess.start(self, ledger=ledger)
        port = server.port
        client = self._client(port, timeout=30)
        stream = IncrStream(self, [client], 20)
        results = stream.results
        for _ in range(2):
            yield _pause(0.3)
            code = yield deferToThread(server.stop)
            # twistd re-raises the signal that stopped it once it has shut down.
            self.assertIn(code, (0, -signal.SIGTERM), server.output())
            server = yield deferToThread(
                ServerProcess.start, self, ledger=ledger, port=port
            )
        yield _pause(0.3)
        yield stream.stop()

        failures = Counter(
            r.getErrorMessage()[:200]
            for r in results.values()
            if isinstance(r, Failure)
        )
        self.assertEqual(failures.most_common(3), [])
        runs = self._readLedger(ledger)
        self.assertEqual(set(runs), set(results))
        self.assertEqual([t for t, n in runs.items() if n != 1], [])
        self.assertGreater(len(results), 100)

    @inlineCallbacks
    def test_crashFailsInflightOnly(self) -> Any:
        """
        When the server dies (SIGKILL, no goaway), calls in flight fail with
        CallLost and are not resent; a new server answers new calls.
        """
        ledger = os.path.abspath(self.mktemp())
        server = ServerProcess.start(self, ledger=ledger)
        port = server.port
        client = self._client(port, timeout=30)
        yield client.callRemote("incr", "before")
        slow = client.callRemote("sleep", 30)
        yield _pause(0.2)
        server.stop(signal.SIGKILL)
        failure = yield self.assertFailure(slow, CallLost)
        self.assertIn("may or may not have run", str(failure))
        server = yield deferToThread(
            ServerProcess.start, self, ledger=ledger, port=port
        )
        result = yield client.callRemote("incr", "after")
        self.assertEqual(result, 1)
        self.assertEqual(self._readLedger(ledger), Counter(["before", "after"]))
