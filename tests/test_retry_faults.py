# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Safe retries against a real C{twistd -n agilerpc} subprocess, with the real
reactor: a proxy cuts connections at random bytes (L{tests.chaosproxy})
while many calls of C{incr}, which writes every run to a ledger, go through
it.

 - Declared idempotent, every call succeeds, once from its caller's view;
   the server ran each at least once and at most C{maxAttempts} times, and
   the runs beyond one per call are no more than the retries the client
   counted (a lost attempt may never have reached the server, so the two
   need not be equal).
 - Not declared idempotent (the same run, the same proxy seed), the promise
   stands: a call fails with L{CallLost} or succeeds, each ran at most
   once, and nothing was retried.

Each runs a short version by default (seconds), and 10,000 calls with
C{AGILERPC_STRESS=1}.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from agilerpc import CallLost, NotIdempotent, RetryPolicy, RpcClient

from .chaosproxy import ChaosProxy
from .serverprocess import STRESS, ServerProcess, scale

#: Retries for the chaos runs: a call in flight when the proxy cuts is lost
#: about one time in three, so 20 attempts make a call that fails them all
#: (about 0.3 ** 20) as good as impossible, and short backoffs keep the run
#: to seconds.
CHAOS_POLICY = RetryPolicy(maxAttempts=20, initialBackoff=0.01, maxBackoff=0.1)


def readLedger(path: str) -> Counter[str]:
    """
    How many times each token ran, from the C{incr} ledger.
    """
    if not os.path.exists(path):
        return Counter()
    with open(path, encoding="utf-8") as f:
        return Counter(line.strip() for line in f if line.strip())


def callAll(
    call: Callable[[str], Deferred[Any]],
    tokens: list[str],
    concurrency: int,
    outcomes: dict[str, list[Any]],
) -> Deferred[Any]:
    """
    Make C{call(token)} for every token, C{concurrency} at a time, recording
    every outcome of each (a result or a L{Failure}) in C{outcomes}.
    """
    left = list(reversed(tokens))

    @inlineCallbacks
    def worker() -> Generator[Deferred[Any], Any, None]:
        while left:
            token = left.pop()
            outcomes[token] = []
            d = call(token)
            d.addBoth(outcomes[token].append)
            yield d

    return DeferredList([worker() for _ in range(concurrency)], consumeErrors=True)


class RetryChaosTests(TestCase):
    """
    Idempotent and other calls through a proxy that cuts connections.
    """

    timeout = 3600 if STRESS else 60

    def report(self, figures: dict[str, Any]) -> None:
        """
        Log what a run measured (in C{_trial_temp/test.log}; printed under
        C{AGILERPC_STRESS}).
        """
        line = f"{self.id()}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
        if STRESS:
            print("\n" + line)
        else:
            from twisted.python import log

            log.msg(line)

    @inlineCallbacks
    def chaosRun(
        self, idempotent: bool
    ) -> Generator[
        Deferred[Any],
        Any,
        tuple[dict[str, list[Any]], Counter[str], RpcClient],
    ]:
        """
        Call C{incr} with a token per call through a chaos proxy; the
        outcomes of each call, the ledger's runs per token, and the client.
        """
        n = scale(600, 10_000)
        ledger = os.path.abspath(self.mktemp())
        server = ServerProcess.start(self, ledger=ledger)
        proxy = ChaosProxy(
            reactor, "127.0.0.1", server.port, random.Random(15), maxBudget=4000
        )
        listening = reactor.listenTCP(0, proxy, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(listening.stopListening)
        address = listening.getHost()
        assert isinstance(address, IPv4Address)
        client = RpcClient(
            reactor, "127.0.0.1", address.port, timeout=30, retryPolicy=CHAOS_POLICY
        )
        self.addCleanup(client.close, 1)
        # Reconnect quickly after a cut: a run of cuts before the hello
        # would otherwise back off for seconds.
        client.factory.maxDelay = 0.5
        caller = client.withCallOptions(idempotent=idempotent)
        tokens = [f"r{i}" for i in range(n)]
        outcomes: dict[str, list[Any]] = {}
        started = time.monotonic()
        yield callAll(lambda t: caller.callRemote("incr", t), tokens, 20, outcomes)
        elapsed = time.monotonic() - started
        yield client.close(1)
        deadline = time.monotonic() + 10
        while proxy.live and time.monotonic() < deadline:
            yield deferLater(reactor, 0.01, lambda: None)
        runs = readLedger(ledger)
        self.assertEqual(sorted(outcomes), sorted(tokens))
        # A Deferred fires once; a call must not have ended twice either.
        self.assertEqual([t for t, o in outcomes.items() if len(o) != 1], [])
        self.assertEqual(set(runs) - set(tokens), set())
        self.assertGreaterEqual(proxy.cutsAfterHello, 3)
        self.report(
            {
                "calls": n,
                "connections": proxy.opened,
                "cuts": proxy.cuts,
                "cutsAfterHello": proxy.cutsAfterHello,
                "retries": client.stats.retries,
                "lost": client.stats.lost,
                "runs": sum(runs.values()),
                "ranTwiceOrMore": sum(1 for c in runs.values() if c > 1),
                "seconds": round(elapsed, 1),
            }
        )
        return outcomes, runs, client

    @inlineCallbacks
    def test_idempotentCallsAllSucceed(self) -> Generator[Deferred[Any], Any, None]:
        """
        Idempotent calls cut at random all succeed, each from at least one
        and at most maxAttempts runs, and the extra runs are bounded by the
        retries counted.
        """
        outcomes, runs, client = yield self.chaosRun(idempotent=True)
        failures = Counter(
            f"{type(o[0].value).__name__}: {o[0].getErrorMessage()[:100]}"
            for o in outcomes.values()
            if isinstance(o[0], Failure)
        )
        self.assertEqual(failures.most_common(5), [])
        # incr answers with how many times the server ran it: each run's
        # answer is its own, so no two calls got the same one.
        answers = [o[0] for o in outcomes.values()]
        self.assertEqual(len(set(answers)), len(answers))
        self.assertLessEqual(max(answers), sum(runs.values()))
        self.assertEqual(
            [t for t in outcomes if not 1 <= runs[t] <= CHAOS_POLICY.maxAttempts], []
        )
        extraRuns = sum(runs.values()) - len(outcomes)
        self.assertLessEqual(extraRuns, client.stats.retries)
        # The cuts did hit calls in flight, and they were retried.
        self.assertGreater(client.stats.retries, 0)
        self.assertEqual(client.stats.lost, 0)
        self.assertEqual(client.stats.answered, len(outcomes))

    @inlineCallbacks
    def test_otherCallsNeverResent(self) -> Generator[Deferred[Any], Any, None]:
        """
        The same run without idempotent: each call succeeded from exactly
        one run or failed with CallLost after at most one, and none was
        retried.
        """
        outcomes, runs, client = yield self.chaosRun(idempotent=False)
        results = {t: o[0] for t, o in outcomes.items()}
        other = [
            r
            for r in results.values()
            if isinstance(r, Failure) and not r.check(CallLost)
        ]
        self.assertEqual(other, [])
        lost = [t for t, r in results.items() if isinstance(r, Failure)]
        self.assertGreater(len(lost), 0)
        self.assertEqual([t for t, c in runs.items() if c > 1], [])
        self.assertEqual(
            [
                t
                for t, r in results.items()
                if not isinstance(r, Failure) and runs[t] != 1
            ],
            [],
        )
        self.assertEqual((client.stats.retries, client.stats.lost), (0, len(lost)))

    @inlineCallbacks
    def test_describeRefuses(self) -> Generator[Deferred[Any], Any, None]:
        """
        After describe(), the server's description decides: a retry of
        C{echo} (marked idempotent) is allowed, one of C{incr} (not) is
        refused before it is sent.
        """
        ledger = os.path.abspath(self.mktemp())
        server = ServerProcess.start(self, ledger=ledger)
        client = RpcClient(reactor, "127.0.0.1", server.port, timeout=10)
        self.addCleanup(client.close, 1)
        description = yield client.describe()
        self.assertEqual(
            (description["echo"]["idempotent"], description["incr"]["idempotent"]),
            (True, False),
        )
        caller = client.withCallOptions(idempotent=True)
        result = yield caller.callRemote("echo", "x")
        self.assertEqual(result, "x")
        with self.assertRaises(NotIdempotent):
            yield caller.callRemote("incr", "t")
        yield client.callRemote("incr", "u")
        self.assertEqual(readLedger(ledger), Counter({"u": 1}))
