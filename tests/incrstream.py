"""
Callers that keep calling C{incr(token)} with unique tokens (on Twisted
clients, or on a blocking client in a thread), for the tests
that stop or restart servers under load and then check, with the ledger of
C{tests/handlers.py}, that no call was lost or ran twice.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import ClientClosed, RpcClient, TcpRpcClient


class IncrStream:
    """
    C{callersPerClient} callers per client, each calling C{incr} with the
    next unique token (C{"t0"}, C{"t1"}, ...) as soon as its last call ended,
    until L{stop}.

    @ivar results: each token's outcome: the result, or the L{Failure}.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        clients: Sequence[RpcClient],
        callersPerClient: int,
    ) -> None:
        self.results: dict[str, Any] = {}
        self._next = 0
        self._stopped = False
        # Stop calling even when the test fails half-way.
        testCase.addCleanup(self._stop)
        self._done = DeferredList(
            [self._caller(c) for c in clients for _ in range(callersPerClient)],
            consumeErrors=True,
        )

    def _stop(self) -> None:
        self._stopped = True

    def stop(self) -> Deferred[Any]:
        """
        Make no more calls; fires when every caller's last call has ended.
        """
        self._stopped = True
        return self._done

    @property
    def issued(self) -> int:
        """
        How many calls were made so far: the next token is C{f"t{issued}"}.
        """
        return self._next

    def failures(self) -> list[Failure]:
        """
        The calls that failed.
        """
        return [r for r in self.results.values() if isinstance(r, Failure)]

    def answered(self) -> set[str]:
        """
        The tokens whose calls succeeded.
        """
        return {t for t, r in self.results.items() if not isinstance(r, Failure)}

    @inlineCallbacks
    def _caller(self, client: RpcClient) -> Any:
        while not self._stopped:
            token = f"t{self._next}"
            self._next += 1
            try:
                self.results[token] = yield client.callRemote("incr", token)
            except Exception:
                self.results[token] = Failure()
                if isinstance(self.results[token].value, ClientClosed):
                    break


class BlockingIncrStream:
    """
    One caller in a thread, calling C{incr} on a blocking client with the
    next unique token (C{prefix} then a number, C{"t0"}, C{"t1"}, ...) as soon
    as its last call ended, until L{stop}.

    @ivar results: each token's outcome: the result, or the exception.
    """

    def __init__(
        self, testCase: SynchronousTestCase, client: TcpRpcClient, prefix: str = "t"
    ) -> None:
        self.results: dict[str, Any] = {}
        self._client = client
        self._prefix = prefix
        self._stopped = threading.Event()
        # Stop calling even when the test fails half-way.
        testCase.addCleanup(self._stopped.set)
        self._done = deferToThread(self._call)

    def _call(self) -> None:
        i = 0
        while not self._stopped.is_set():
            token = f"{self._prefix}{i}"
            i += 1
            try:
                self.results[token] = self._client.call("incr", (token,))
            except Exception as e:
                self.results[token] = e

    def stop(self) -> Deferred[None]:
        """
        Make no more calls; fires when the last call has ended.
        """
        self._stopped.set()
        return self._done

    def failures(self) -> list[Exception]:
        """
        The calls that failed.
        """
        return [r for r in self.results.values() if isinstance(r, Exception)]
