"""
Integration tests of the clients with several servers: two real
C{twistd -n agilerpc} subprocesses on 127.0.0.1 sharing one ledger, one of
them stopped with SIGTERM while a client streams C{incr(token)} calls.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from agilerpc import RpcClient, TcpRpcClient

from .incrstream import BlockingIncrStream, IncrStream
from .serverprocess import ServerProcess


def _pause(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def _readLedger(path: str) -> Counter[str]:
    with open(path, encoding="utf-8") as f:
        return Counter(line.strip() for line in f if line.strip())


class TwoServersTests(TestCase):
    timeout = 60

    def _servers(self) -> tuple[str, ServerProcess, ServerProcess]:
        ledger = os.path.abspath(self.mktemp())
        return (
            ledger,
            ServerProcess.start(self, ledger=ledger),
            ServerProcess.start(self, ledger=ledger),
        )

    @inlineCallbacks
    def test_rpcClientSurvivesOneServerStopping(self) -> Any:
        """
        RpcClient spreads calls over both servers; when one is stopped with
        SIGTERM mid-stream, every call still succeeds and ran exactly once.
        """
        ledger, one, two = self._servers()
        client = RpcClient(
            reactor,
            endpoints=[("127.0.0.1", one.port), ("127.0.0.1", two.port)],
            timeout=30,
        )
        self.addCleanup(client.close, 1)
        client.connect()
        while len(client.readyEndpoints) < 2:
            yield _pause(0.02)
        pids = yield DeferredList([client.callRemote("pid") for _ in range(2)])
        self.assertEqual({pid for _, pid in pids}, {one.pid, two.pid})

        stream = IncrStream(self, [client], 20)
        results = stream.results
        yield _pause(0.5)
        before = len(results)
        code = yield deferToThread(one.stop)
        # twistd re-raises the signal that stopped it once it has shut down.
        self.assertIn(code, (0, -signal.SIGTERM), one.output())
        yield _pause(0.5)
        yield stream.stop()

        failures = [
            r.getErrorMessage() for r in results.values() if isinstance(r, Failure)
        ]
        self.assertEqual(failures[:3], [])
        runs = _readLedger(ledger)
        self.assertEqual(set(runs), set(results))
        self.assertEqual([t for t, n in runs.items() if n != 1], [])
        self.assertGreater(before, 50)
        self.assertGreater(len(results) - before, 50)
        self.assertEqual(list(client.readyEndpoints), [("127.0.0.1", two.port)])

    @inlineCallbacks
    def test_tcpClientSurvivesOneServerStopping(self) -> Any:
        """
        TcpRpcClient with servers=[...] fails over when the server it is
        connected to is stopped with SIGTERM: every call succeeds and ran
        exactly once.
        """
        ledger, one, two = self._servers()
        client = TcpRpcClient(
            servers=[f"127.0.0.1:{one.port}", ("127.0.0.1", two.port)], timeout=10
        )
        self.addCleanup(client.close)
        self.assertEqual(client.call("pid"), one.pid)
        calls = BlockingIncrStream(self, client, "b")
        results = calls.results
        yield _pause(0.3)
        before = len(results)
        code = yield deferToThread(one.stop)
        self.assertIn(code, (0, -signal.SIGTERM), one.output())
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            yield _pause(0.05)
        yield calls.stop()

        self.assertEqual(calls.failures()[:3], [])
        runs = _readLedger(ledger)
        self.assertEqual(set(runs), set(results))
        self.assertEqual([t for t, n in runs.items() if n != 1], [])
        self.assertGreater(before, 20)
        self.assertGreater(len(results) - before, 20)
        self.assertEqual(client.call("pid"), two.pid)
