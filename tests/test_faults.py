# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Fault tests: real sockets on 127.0.0.1 against C{twistd -n agilerpc}
subprocesses, with the real reactor.

 - Rolling restart: calls stream while the server is stopped (SIGTERM) and
   started again twice on the same port; each call succeeds and runs once.
 - Chaos: a proxy cuts connections at random bytes; calls end with their
   result or L{CallLost}, none twice, none hangs.
 - Keepalive storm: many idle connections reaped at once while active
   clients keep calling.
 - Soak: many calls and connect/close cycles; the server's memory and file
   descriptors come back to where they were after warm-up.

Each runs a short version by default (seconds), and the sizes of issue 6
with C{AGILERPC_STRESS=1} (C{tox -e stress}).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import struct
import time
from collections import Counter
from collections.abc import Callable, Generator, Sized
from functools import partial
from typing import Any

import msgpack
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from agilerpc import CallLost, RpcClient

from .chaosproxy import ChaosProxy
from .serverprocess import STRESS, ServerProcess, rssKiB, scale


def _pause(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def waitUntil(
    condition: Callable[[], bool], timeout: float, what: str
) -> Generator[Deferred[Any], Any, None]:
    """
    Poll C{condition} until it holds.

    @raise AssertionError: if it does not within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        yield _pause(0.01)


def reached(collection: Sized, count: float) -> Callable[[], bool]:
    """
    A condition: C{collection} holds at least C{count} items.
    """
    return lambda: len(collection) >= count


def stream(
    call: Callable[[str], Deferred[Any]],
    tokens: list[str],
    concurrency: int,
    results: dict[str, Any],
) -> Deferred[Any]:
    """
    Make C{call(token)} for every token, C{concurrency} at a time, recording
    each outcome (a result or a L{Failure}) in C{results}.

    @return: fires when every call has ended.
    """
    tokens = list(tokens)
    tokens.reverse()

    @inlineCallbacks
    def worker() -> Generator[Deferred[Any], Any, None]:
        while tokens:
            token = tokens.pop()
            try:
                results[token] = yield call(token)
            except Exception:
                results[token] = Failure()

    return DeferredList([worker() for _ in range(concurrency)], consumeErrors=True)


def readLedger(path: str) -> Counter[str]:
    """
    How many times each token ran, from the C{incr} ledger.
    """
    if not os.path.exists(path):
        return Counter()
    with open(path, encoding="utf-8") as f:
        return Counter(line.strip() for line in f if line.strip())


def fdCount(pid: int) -> int:
    """
    How many file descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def failureSummary(results: dict[str, Any]) -> Counter[str]:
    """
    The failures in C{results}, by type and message.
    """
    return Counter(
        f"{type(r.value).__name__}: {r.getErrorMessage()[:120]}"
        for r in results.values()
        if isinstance(r, Failure)
    )


class HelloWatcher(Protocol):
    """
    A raw connection that records the server's frames and when it ended.

    With C{closeOnHello} it closes as soon as the hello arrives (a
    connect/close cycle); otherwise it stays idle until the server ends it.
    """

    factory: HelloWatcherFactory
    transport: Any

    def __init__(self, closeOnHello: bool) -> None:
        self.closeOnHello = closeOnHello
        self.buffer = b""
        self.messages: list[Any] = []
        self.helloAt: float | None = None
        self.closedAt: float | None = None
        self.attemptAt: float | None = None
        self.ended: Deferred[HelloWatcher] = Deferred()

    def connectionMade(self) -> None:
        self.attemptAt = self.factory.attemptAt.pop(self.transport.connector, None)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            (length,) = struct.unpack_from(">I", self.buffer)
            if len(self.buffer) < 4 + length:
                break
            payload = self.buffer[4 : 4 + length]
            self.buffer = self.buffer[4 + length :]
            message = msgpack.unpackb(payload, raw=False)
            self.messages.append(message)
            if message[:2] == [3, "hello"] and self.helloAt is None:
                self.helloAt = time.monotonic()
                self.factory.hellos += 1
                if self.closeOnHello:
                    self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closedAt = time.monotonic()
        self.ended.callback(self)


class HelloWatcherFactory(ClientFactory):
    """
    Builds L{HelloWatcher}s and counts hellos; C{failed} collects failed
    connection attempts, and C{attempts} counts attempts (when the test
    counts them).
    """

    noisy = False

    def __init__(self, closeOnHello: bool) -> None:
        self.closeOnHello = closeOnHello
        self.hellos = 0
        self.watchers: list[HelloWatcher] = []
        self.failed: list[Failure] = []
        self.attempts = 0
        self.attemptAt: dict[Any, float] = {}

    def startedConnecting(self, connector: Any) -> None:
        # The server's idle timer starts when it sends the hello, which is
        # after this: the earliest moment the timer can be measured from
        # without depending on how late this busy reactor reads the hello.
        self.attemptAt[connector] = time.monotonic()

    def fewWaiting(self) -> bool:
        """
        Are fewer than 40 of the C{attempts} still waiting for a hello?
        """
        return self.attempts - self.hellos - len(self.failed) < 40

    def buildProtocol(self, addr: Any) -> HelloWatcher:  # type: ignore[override]
        watcher = HelloWatcher(self.closeOnHello)
        watcher.factory = self
        self.watchers.append(watcher)
        return watcher

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.failed.append(reason)


class FaultTests(TestCase):
    """
    The fault scenarios of issue 6, bounded in count and time.
    """

    timeout = 3600 if STRESS else 60

    def client(self, port: int, **kwargs: Any) -> RpcClient:
        """
        An L{RpcClient} of 127.0.0.1:C{port}, closed in cleanup.
        """
        client = RpcClient(reactor, "127.0.0.1", port, **kwargs)
        self.addCleanup(client.close, 1)
        return client

    def report(self, figures: dict[str, Any]) -> None:
        """
        Log what a run measured (shown in C{_trial_temp/test.log}, and
        printed under C{AGILERPC_STRESS}).
        """
        line = f"{self.id()}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
        if STRESS:
            print("\n" + line)
        else:
            from twisted.python import log

            log.msg(line)

    @inlineCallbacks
    def test_rollingRestartLosesNothing(self) -> Generator[Deferred[Any], Any, None]:
        """
        Calls to incr() stream while the server is stopped with SIGTERM and
        started again twice on the same port: every call succeeds, and each
        ran exactly once.
        """
        n = scale(1500, 10_000)
        ledger = os.path.abspath(self.mktemp())
        server = ServerProcess.start(self, ledger=ledger)
        port = server.port
        client = self.client(port, timeout=60)
        tokens = [f"t{i}" for i in range(n)]
        results: dict[str, Any] = {}
        started = time.monotonic()
        done = stream(partial(client.callRemote, "incr"), tokens, 20, results)
        doneAtStop = []
        for fraction in (0.2, 0.6):
            yield waitUntil(reached(results, n * fraction), 60, "calls")
            doneAtStop.append(len(results))
            code = yield deferToThread(server.stop)
            # twistd re-raises the signal that stopped it once it has shut down.
            self.assertIn(code, (0, -signal.SIGTERM), server.output())
            server = yield deferToThread(
                ServerProcess.start, self, ledger=ledger, port=port
            )
        yield done
        elapsed = time.monotonic() - started

        self.assertEqual(failureSummary(results).most_common(5), [])
        self.assertEqual(len(results), n)
        # The restarts happened while calls were still being made.
        self.assertLess(doneAtStop[-1], n)
        runs = readLedger(ledger)
        self.assertEqual(set(runs), set(tokens))
        self.assertEqual([t for t, c in runs.items() if c != 1], [])
        self.report(
            {
                "calls": n,
                "restarts": 2,
                "doneAtStops": doneAtStop,
                "seconds": round(elapsed, 1),
            }
        )

    @inlineCallbacks
    def test_chaosProxy(self) -> Generator[Deferred[Any], Any, None]:
        """
        Through a proxy that cuts connections after a random number of bytes
        (mid-frame too), every call ends before its timeout: with its result,
        from exactly one run, or with CallLost (it was in flight), after
        at most one run; no token runs twice.
        """
        n = scale(1500, 10_000)
        concurrency = 20
        callTimeout = 30.0
        ledger = os.path.abspath(self.mktemp())
        server = ServerProcess.start(self, ledger=ledger)
        proxy = ChaosProxy(
            reactor, "127.0.0.1", server.port, random.Random(6), maxBudget=4000
        )
        listening = reactor.listenTCP(0, proxy, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(listening.stopListening)
        address = listening.getHost()
        assert isinstance(address, IPv4Address)
        client = self.client(address.port, timeout=callTimeout)
        # Reconnect quickly after a cut: a run of cuts before the hello
        # would otherwise back off for seconds.
        client.factory.maxDelay = 0.5
        tokens = [f"c{i}" for i in range(n)]
        results: dict[str, Any] = {}
        started = time.monotonic()
        yield stream(
            lambda t: client.callRemote("incr", t), tokens, concurrency, results
        )
        elapsed = time.monotonic() - started
        yield client.close(1)
        yield waitUntil(lambda: not proxy.live, 10, "proxied connections to close")

        failures = {t: r for t, r in results.items() if isinstance(r, Failure)}
        lost = [t for t, r in failures.items() if r.check(CallLost)]
        other = {t: r for t, r in failures.items() if not r.check(CallLost)}
        self.assertEqual(failureSummary(other).most_common(5), [])
        self.assertEqual(len(results), n)
        self.assertGreaterEqual(proxy.cuts, 3)
        # Only calls in flight on a cut connection fail: none on a connection
        # cut before its hello, whose calls were still queued.
        self.assertLessEqual(len(lost), proxy.cutsAfterHello * concurrency)
        runs = readLedger(ledger)
        self.assertEqual([t for t, c in runs.items() if c > 1], [])
        succeeded = [t for t, r in results.items() if not isinstance(r, Failure)]
        self.assertEqual([t for t in succeeded if runs[t] != 1], [])
        self.assertEqual(set(runs) - set(tokens), set())
        self.assertLess(elapsed, callTimeout * 10)
        self.report(
            {
                "calls": n,
                "connections": proxy.opened,
                "cuts": proxy.cuts,
                "cutsAfterHello": proxy.cutsAfterHello,
                "connectionLost": len(lost),
                "lostButRan": sum(1 for t in lost if runs[t] == 1),
                "seconds": round(elapsed, 1),
            }
        )

    @inlineCallbacks
    def test_keepaliveStorm(self) -> Generator[Deferred[Any], Any, None]:
        """
        Many idle connections are all reaped by a 1 s keepalive (a hello,
        then a goaway "idle", then the close) at about the same time, while
        active clients keep calling: every active call succeeds.
        """
        idle = scale(300, 2000)
        active = scale(10, 100)
        keepalive = 1.0
        server = ServerProcess.start(self, keepalive=keepalive)
        clients = [self.client(server.port, timeout=30) for _ in range(active)]
        state = {"stop": False}
        self.addCleanup(state.__setitem__, "stop", True)
        outcomes: list[list[Any]] = [[] for _ in clients]

        @inlineCallbacks
        def caller(i: int) -> Generator[Deferred[Any], Any, None]:
            n = 0
            while not state["stop"]:
                try:
                    result = yield clients[i].callRemote("echo", [i, n])
                    outcomes[i].append(result == [i, n] or result)
                except Exception:
                    outcomes[i].append(Failure())
                n += 1

        callers = DeferredList([caller(i) for i in range(active)], consumeErrors=True)
        yield waitUntil(lambda: all(outcomes), 30, "every active client's first call")

        factory = HelloWatcherFactory(closeOnHello=False)
        started = time.monotonic()
        # At most 40 connections wait for their hello at once: the server
        # listens with Twisted's default backlog of 50, and connections
        # beyond it are dropped by the kernel without a word (see the report).
        for _ in range(idle):
            yield waitUntil(factory.fewWaiting, 30, "earlier connections' hellos")
            factory.attempts += 1
            reactor.connectTCP("127.0.0.1", server.port, factory)
        yield waitUntil(
            lambda: factory.hellos + len(factory.failed) >= idle, 60, "idle hellos"
        )
        helloSpread = time.monotonic() - started
        self.assertEqual(factory.failed, [])
        yield DeferredList([w.ended for w in factory.watchers])
        reapedBy = time.monotonic() - started
        state["stop"] = True
        yield callers

        for watcher in factory.watchers:
            self.assertEqual(
                [m[:2] for m in watcher.messages], [[3, "hello"], [3, "goaway"]]
            )
            self.assertEqual(watcher.messages[1], [3, "goaway", None, "idle"])
            assert watcher.attemptAt is not None and watcher.closedAt is not None
            self.assertGreaterEqual(
                watcher.closedAt - watcher.attemptAt, keepalive * 0.99
            )
        self.assertLess(reapedBy, helloSpread + keepalive + 10)
        calls = [o for results in outcomes for o in results]
        self.assertEqual([o for o in calls if o is not True], [])
        self.report(
            {
                "idle": idle,
                "active": active,
                "activeCalls": len(calls),
                "hellosWithin": round(helloSpread, 2),
                "allReapedWithin": round(reapedBy, 2),
            }
        )

    @inlineCallbacks
    def test_soak(self) -> Generator[Deferred[Any], Any, None]:
        """
        After many calls and connect/close cycles, the server's RSS is within
        10 MiB of its RSS after warm-up and its file descriptor count is back
        to its warm-up value.
        """
        calls = scale(6000, 200_000)
        cycles = scale(600, 20_000)
        server = ServerProcess.start(self)
        clients = [self.client(server.port, timeout=60) for _ in range(4)]

        @inlineCallbacks
        def run(nCalls: int, nCycles: int) -> Generator[Deferred[Any], Any, None]:
            results: dict[str, Any] = {}
            perClient = nCalls // len(clients)
            work = [
                stream(
                    partial(c.callRemote, "echo"),
                    [f"{i}:{j}" for j in range(perClient)],
                    25,
                    results,
                )
                for i, c in enumerate(clients)
            ]
            factory = HelloWatcherFactory(closeOnHello=True)
            remaining = [nCycles]

            @inlineCallbacks
            def cycler() -> Generator[Deferred[Any], Any, None]:
                while remaining[0] > 0:
                    remaining[0] -= 1
                    before = len(factory.watchers)
                    reactor.connectTCP("127.0.0.1", server.port, factory)
                    yield waitUntil(
                        reached(factory.watchers, before + 1), 10, "a connection"
                    )
                    self.assertEqual(factory.failed, [])
                    yield factory.watchers[-1].ended

            work += [cycler() for _ in range(8)]
            yield DeferredList(work, consumeErrors=True)
            wrong = {t: r for t, r in results.items() if r != t}
            self.assertEqual(failureSummary(wrong).most_common(5), [])
            self.assertEqual(wrong, {})
            self.assertEqual(len(results), perClient * len(clients))
            self.assertEqual(factory.hellos, nCycles)

        started = time.monotonic()
        yield run(calls // 10, cycles // 10)
        rssWarm = rssKiB(server.pid)
        fdWarm = fdCount(server.pid)
        yield run(calls - calls // 10, cycles - cycles // 10)
        elapsed = time.monotonic() - started
        # Closes may take a moment to reach the server.
        with contextlib.suppress(AssertionError):
            yield waitUntil(lambda: fdCount(server.pid) <= fdWarm, 10, "fds")
        rssEnd = rssKiB(server.pid)
        fdEnd = fdCount(server.pid)
        self.report(
            {
                "calls": calls,
                "cycles": cycles,
                "rssWarmKiB": rssWarm,
                "rssEndKiB": rssEnd,
                "fdWarm": fdWarm,
                "fdEnd": fdEnd,
                "seconds": round(elapsed, 1),
            }
        )
        self.assertEqual(fdEnd, fdWarm)
        self.assertLessEqual(rssEnd - rssWarm, 10 * 1024)
