"""
Tests for L{agilerpc.RpcClient}'s safe retries: idempotent calls lost in
flight are sent again as the L{agilerpc.RetryPolicy} says, and nothing else
ever is; deterministic, on L{agilerpc.testing.MemoryServer}'s clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import (
    CallLost,
    CallTimeout,
    ClientClosed,
    NotIdempotent,
    QueueFull,
    Registry,
    RemoteError,
    RetryPolicy,
    RpcClient,
    _wire,
)
from agilerpc.testing import MemoryServer

from .clienthelpers import Handlers, assertExactlyOnce, serverStep

#: Exact delays: 0.05, 0.1, 0.2, ... s.
EXACT = RetryPolicy(jitter=0)


class RetryHarness:
    """
    A L{MemoryServer} with L{Handlers}, and a way to make clients of it.
    """

    def setUp(self) -> None:
        self.handlers = Handlers()
        self.server = MemoryServer(
            self.handlers.registry(), keepalive=10, lingerTimeout=2
        )

    def client(self, **kwargs: Any) -> RpcClient:
        kwargs.setdefault("retryPolicy", EXACT)
        client = RpcClient(self.server.reactor, "server", 9988, **kwargs)
        client.factory.jitter = 0
        return client

    def settle(self) -> None:
        """
        Let every backoff and reconnect delay pass, a second at a time.
        """
        for _ in range(5):
            self.server.advance(1)


class NoRetryWithoutIdempotentTests(RetryHarness, SynchronousTestCase):
    """
    The promise stands for every call not declared idempotent: lost in
    flight, it fails with L{CallLost} and is never sent again.
    """

    def test_plainCallNeverResent(self) -> None:
        """
        A call of a method outside the client's C{idempotent} set fails
        with CallLost and runs once, however long the client waits.
        """
        client = self.client(idempotent={"run"})
        d = client.callRemote("wait", "w")
        self.server.flush()
        self.server.drop()
        f = self.failureResultOf(d, CallLost)
        self.assertIn("so it was not resent", str(f.value))
        self.settle()
        self.assertEqual(self.handlers.runs, ["w"])
        self.assertEqual((client.stats.retries, client.stats.lost), (0, 1))

    def test_explicitFalseOverridesTheSet(self) -> None:
        """
        C{withCallOptions(idempotent=False)} is never retried, even for a
        method in the client's set.
        """
        client = self.client(idempotent={"wait"})
        d = client.withCallOptions(idempotent=False).callRemote("wait", "w")
        self.server.flush()
        self.server.drop()
        self.failureResultOf(d, CallLost)
        self.settle()
        self.assertEqual(self.handlers.runs, ["w"])

    def test_remoteErrorNotRetried(self) -> None:
        """
        An idempotent call the server answered with an error fails with it,
        once.
        """
        client = self.client()
        d = client.withCallOptions(idempotent=True).callRemote("add", 1)
        self.server.flush()
        self.failureResultOf(d, RemoteError)
        self.settle()
        self.assertEqual(client.stats.retries, 0)
        self.assertEqual(client.stats.remoteErrors, 1)

    def test_timeoutNotRetried(self) -> None:
        """
        An idempotent call that runs out of time fails with CallTimeout and
        is not sent again.
        """
        client = self.client()
        d = client.withCallOptions(idempotent=True, timeout=1).callRemote("wait", 1)
        self.server.flush()
        self.server.advance(1)
        self.failureResultOf(d, CallTimeout)
        self.settle()
        self.assertEqual(self.handlers.runs, [1])
        self.assertEqual(client.stats.retries, 0)

    def test_closingClientDoesNotRetry(self) -> None:
        """
        A call lost while the client closes fails with CallLost: nothing
        reconnects to send it again.
        """
        client = self.client(idempotent={"wait"})
        d = client.callRemote("wait", "w")
        self.server.flush()
        client.close()
        self.server.drop()
        self.failureResultOf(d, CallLost)
        self.settle()
        self.assertEqual(self.handlers.runs, ["w"])


class RetryTests(RetryHarness, SynchronousTestCase):
    """
    Idempotent calls lost in flight are sent again after their backoff.
    """

    def test_withCallOptionsRetried(self) -> None:
        """
        A call made with C{idempotent=True} lost in flight is sent again on
        the next connection, and its answer fires its Deferred once.
        """
        client = self.client()
        d = client.withCallOptions(idempotent=True).callRemote("wait", "w")
        self.server.flush()
        self.server.drop()
        self.assertNoResult(d)
        self.settle()
        self.assertEqual(self.handlers.runs, ["w", "w"])
        self.handlers.answer("w")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), "w")
        self.assertEqual(self.server.attempts, 2)
        stats = client.stats
        self.assertEqual(
            (stats.retries, stats.lost, stats.answered, stats.cancelled), (1, 0, 1, 0)
        )

    def test_clientSetRetried(self) -> None:
        """
        A plain C{callRemote} of a method in the client's C{idempotent} set
        is retried, with no options of its own.
        """
        client = self.client(idempotent=frozenset({"wait"}))
        d = client.callRemote("wait", "w")
        self.server.flush()
        self.server.drop()
        self.settle()
        self.handlers.answer("w")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), "w")
        self.assertEqual(self.handlers.runs, ["w", "w"])
        self.assertEqual(client.stats.retries, 1)

    def test_backoffAndAttempts(self) -> None:
        """
        The retries wait exactly the policy's backoffs (0.05, 0.1, 0.2 s
        with no jitter), and the call lost on its last attempt fails with
        CallLost saying how many times it was sent.
        """
        client = self.client(retryPolicy=RetryPolicy(maxAttempts=4, jitter=0))
        client.factory.initialDelay = client.factory.maxDelay = 0.01
        d = client.withCallOptions(idempotent=True).callRemote("wait", "w")
        self.server.flush()
        delays: list[float] = []
        for attempt in range(1, 4):
            self.server.drop()
            now = self.server.reactor.seconds()
            delays.extend(
                round(c.getTime() - now, 9)
                for c in self.server.reactor.getDelayedCalls()
                if getattr(c, "func", None) == client._resubmit
            )
            # The backoff, then the endpoint's reconnect delay.
            self.server.advance(0.5)
            self.server.advance(0.5)
            self.assertEqual(client.stats.retries, attempt)
            self.assertEqual(len(self.handlers.runs), attempt + 1)
        self.assertEqual(delays, [0.05, 0.1, 0.2])
        self.server.drop()
        f = self.failureResultOf(d, CallLost)
        self.assertIn(
            "it was sent 4 times, each time lost in flight, the most its retry "
            "policy allows (maxAttempts=4)",
            str(f.value),
        )
        self.settle()
        self.assertEqual(self.handlers.runs, ["w"] * 4)
        self.assertEqual((client.stats.retries, client.stats.lost), (3, 1))

    def test_jitterFromThePolicy(self) -> None:
        """
        The delay is the policy's, jitter drawn from its random: with
        jitter 0.5 and a draw of 0.5, 0.05 s becomes 0.0375 s.
        """
        policy = RetryPolicy(jitter=0.5, random=lambda: 0.5)
        client = self.client(retryPolicy=policy, idempotent={"wait"})
        client.callRemote("wait", "w")
        self.server.flush()
        self.server.drop()
        self.server.reactor.advance(0.0374)
        self.assertEqual(client.stats.retries, 0)
        self.server.reactor.advance(0.0001)
        self.assertEqual(client.stats.retries, 1)

    def test_goawayResendsDoNotCount(self) -> None:
        """
        A resend after a goaway (proved unrun) does not use up an attempt:
        with maxAttempts=2, a call resent after a goaway is still retried
        once after a loss.
        """
        client = self.client(retryPolicy=RetryPolicy(maxAttempts=2, jitter=0))
        client.connect()
        self.server.flush()
        d = client.withCallOptions(idempotent=True).callRemote("wait", "w")
        # The goaway goes out before the server reads the request.
        self.server.openConnections()[0].server.goaway("shutdown")
        self.server.flush()
        self.settle()
        self.assertEqual(self.handlers.runs, ["w"])
        self.assertEqual((client.stats.resent, client.stats.retries), (1, 0))
        self.server.drop()
        self.settle()
        self.assertEqual(self.handlers.runs, ["w", "w"])
        self.assertEqual(client.stats.retries, 1)
        self.server.drop()
        f = self.failureResultOf(d, CallLost)
        self.assertIn("maxAttempts=2", str(f.value))

    def test_protocolViolationRetried(self) -> None:
        """
        Calls in flight on a connection the server broke the protocol on
        are lost as well: idempotent ones are sent again.
        """
        client = self.client(idempotent={"wait"})
        d = client.callRemote("wait", "w")
        self.server.flush()
        connection = self.server.openConnections()[0]
        connection.server.transport.write(_wire.frame(_wire.pack([9, "what"])))
        self.server.flush()
        self.assertNoResult(d)
        self.settle()
        self.handlers.answer("w")
        self.server.flush()
        self.assertEqual(self.successResultOf(d), "w")
        self.assertEqual(client.stats.retries, 1)

    def test_retrySentBeforeQueuedCalls(self) -> None:
        """
        A call sent again goes out before the calls made while it waited
        for its backoff: it was made first.
        """
        client = self.client(idempotent={"wait"})
        client.callRemote("wait", "first")
        self.server.flush()
        self.server.drop()
        client.callRemote("run", "second")
        self.settle()
        self.assertEqual(self.handlers.runs, ["first", "first", "second"])


class DeadlineTests(RetryHarness, SynchronousTestCase):
    """
    A call's deadline bounds its retries.
    """

    def test_noRetryPastTheDeadline(self) -> None:
        """
        A call lost when less than its backoff is left of its deadline fails
        at once with CallLost saying so, not with a CallTimeout later.
        """
        client = self.client()
        d = client.withCallOptions(idempotent=True, timeout=1).callRemote("wait", 1)
        self.server.flush()
        self.server.reactor.advance(0.96)
        self.server.drop()
        f = self.failureResultOf(d, CallLost)
        self.assertIn(
            "its deadline would pass before it could be sent again", str(f.value)
        )
        self.assertEqual(client.stats.retries, 0)

    def test_clientTimeoutIsTheDeadline(self) -> None:
        """
        The client's own C{timeout} bounds a plain call's retries too.
        """
        client = self.client(idempotent={"wait"}, timeout=1)
        d = client.callRemote("wait", 1)
        self.server.flush()
        self.server.reactor.advance(0.96)
        self.server.drop()
        self.failureResultOf(d, CallLost)

    def test_timeoutWhileWaitingToBeSentAgain(self) -> None:
        """
        A retried call whose deadline passes while it waits for a
        connection fails with CallTimeout saying it was lost in flight
        before, so it may have run.
        """
        client = self.client(idempotent={"wait"}, timeout=1)
        d = client.callRemote("wait", 1)
        self.server.flush()
        self.server.refusing = True
        self.server.drop()
        self.settle()
        f = self.failureResultOf(d, CallTimeout)
        self.assertIn(
            "while waiting to be sent again (it was lost in flight once: it may "
            "or may not have run)",
            str(f.value),
        )
        self.assertEqual(client.stats.retries, 1)


class BackoffEndsTests(RetryHarness, SynchronousTestCase):
    """
    What ends a call waiting for its backoff.
    """

    def test_cancelDuringBackoff(self) -> None:
        """
        Cancelling a call waiting to be sent again fails it with
        CancelledError, and it is never sent.
        """
        client = self.client(idempotent={"wait"})
        d = client.callRemote("wait", "w")
        self.server.flush()
        self.server.drop()
        self.assertEqual(client.pending, 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(client.pending, 0)
        self.settle()
        self.assertEqual(self.handlers.runs, ["w"])
        self.assertEqual((client.stats.retries, client.stats.cancelled), (0, 1))
        self.assertEqual(self.server.reactor.getDelayedCalls(), [])

    def test_closeDuringBackoff(self) -> None:
        """
        Closing the client fails a call waiting to be sent again with
        ClientClosed, saying it may have run, and it is never sent.
        """
        client = self.client(idempotent={"wait"})
        d = client.callRemote("wait", "w")
        self.server.flush()
        self.server.drop()
        closed = client.close()
        f = self.failureResultOf(d, ClientClosed)
        self.assertIn("lost in flight once, and may or may not have run", str(f.value))
        self.successResultOf(closed)
        self.settle()
        self.assertEqual(self.handlers.runs, ["w"])
        self.assertEqual(client.stats.retries, 0)

    def test_backoffCountsAsPending(self) -> None:
        """
        A call waiting to be sent again counts against C{maxPending}.
        """
        client = self.client(idempotent={"wait"}, maxPending=1)
        client.callRemote("wait", "w")
        self.server.flush()
        self.server.drop()
        self.failureResultOf(client.callRemote("run", 1), QueueFull)
        self.failureResultOf(
            client.withCallOptions(timeout=5).callRemote("run", 1), QueueFull
        )


def streamRegistry(gates: list[Deferred[None]]) -> Registry:
    """
    A registry whose stream C{twice} waits for a gate before each of its two
    items; C{gates} collects them.
    """
    registry = Registry()

    async def twice() -> AsyncIterator[int]:
        for i in range(2):
            gate: Deferred[None] = Deferred()
            gates.append(gate)
            await gate
            yield i

    registry.register(twice)
    return registry


class StreamRetryTests(SynchronousTestCase):
    """
    A stream is retried only before its first item.
    """

    def setUp(self) -> None:
        self.gates: list[Deferred[None]] = []
        self.server = MemoryServer(streamRegistry(self.gates))
        self.client = RpcClient(
            self.server.reactor, "server", 9988, idempotent={"twice"}, retryPolicy=EXACT
        )

    def settle(self) -> None:
        # Streams take turns on the reactor: advance(0) runs them.
        for _ in range(5):
            self.server.advance(1)

    def test_lostBeforeItsFirstItem(self) -> None:
        """
        An idempotent stream lost before any item came is sent again, and
        its consumer sees each item once.
        """
        stream = self.client.callStream("twice")
        items: list[Any] = []
        done = stream.consume(items.append)
        self.server.advance(0)
        self.assertEqual(len(self.gates), 1)
        self.server.drop()
        self.settle()
        self.assertEqual(len(self.gates), 2)
        self.gates[1].callback(None)
        self.server.advance(0)
        self.gates[2].callback(None)
        self.server.advance(0)
        self.successResultOf(done)
        self.assertEqual(items, [0, 1])
        self.assertEqual(self.client.stats.retries, 1)

    def test_neverAfterAnItem(self) -> None:
        """
        An idempotent stream lost after an item came fails with CallLost
        after that item, and is not sent again.
        """
        stream = self.client.withCallOptions(idempotent=True).callStream("twice")
        items: list[Any] = []
        done = stream.consume(items.append)
        self.server.advance(0)
        self.gates[0].callback(None)
        self.server.advance(0)
        self.server.drop()
        self.failureResultOf(done, CallLost)
        self.settle()
        self.assertEqual(items, [0])
        self.assertEqual(len(self.gates), 2)
        self.assertEqual(self.client.stats.retries, 0)


class DescribeTests(SynchronousTestCase):
    """
    L{RpcClient.describe}: a client that read the server's description
    refuses to retry what the server says is not idempotent.
    """

    def setUp(self) -> None:
        self.runs: list[str] = []
        registry = Registry()
        registry.register(lambda: self.runs.append("get"), name="get", idempotent=True)
        registry.register(lambda: self.runs.append("put"), name="put")
        self.server = MemoryServer(registry)

    def describedClient(self, **kwargs: Any) -> RpcClient:
        client = RpcClient(self.server.reactor, "server", 9988, **kwargs)
        d = client.describe()
        self.server.flush()
        description = self.successResultOf(d)
        self.assertEqual(
            (description["get"]["idempotent"], description["put"]["idempotent"]),
            (True, False),
        )
        return client

    def test_refusesNotIdempotent(self) -> None:
        """
        After describe(), a call asking to be retried of a method described
        as not idempotent fails at once with NotIdempotent and is not sent;
        the same call without the option, and a retry of an idempotent
        method, go out.
        """
        client = self.describedClient()
        retried = client.withCallOptions(idempotent=True)
        f = self.failureResultOf(retried.callRemote("put"), NotIdempotent)
        self.assertIn("put()", str(f.value))
        self.server.flush()
        self.assertEqual(self.runs, [])
        get = retried.callRemote("get")
        put = client.callRemote("put")
        self.server.flush()
        self.successResultOf(get)
        self.successResultOf(put)
        self.assertEqual(self.runs, ["get", "put"])

    def test_refusesTheClientSet(self) -> None:
        """
        A method of the client's C{idempotent} set that the server describes
        as not idempotent is refused too, on plain calls and streams, unless
        the call says C{idempotent=False}.
        """
        client = self.describedClient(idempotent={"put", "get"})
        self.failureResultOf(client.callRemote("put"), NotIdempotent)
        self.failureResultOf(
            client.withCallOptions(timeout=5).callRemote("put"), NotIdempotent
        )
        stream = client.callStream("put")
        self.failureResultOf(stream.next(), NotIdempotent)
        d = client.withCallOptions(idempotent=False).callRemote("put")
        get = client.callRemote("get")
        self.server.flush()
        self.successResultOf(d)
        self.successResultOf(get)
        self.assertEqual(self.runs, ["put", "get"])

    def test_nothingRefusedBeforeDescribe(self) -> None:
        """
        A client that has not read the description takes the caller's
        word.
        """
        client = RpcClient(self.server.reactor, "server", 9988, idempotent={"put"})
        d = client.withCallOptions(idempotent=True).callRemote("put")
        self.server.flush()
        self.successResultOf(d)
        self.assertEqual(self.runs, ["put"])

    def test_describeFailure(self) -> None:
        """
        A describe() that fails changes nothing.
        """
        client = RpcClient(self.server.reactor, "server", 9988, idempotent={"put"})
        d = client.describe()
        client.close()
        self.failureResultOf(d, ClientClosed)
        self.assertEqual(client._described, {})


class ArgumentTests(SynchronousTestCase):
    """
    The client's retry arguments are checked.
    """

    def test_badArguments(self) -> None:
        """
        A bare string as the idempotent set, or a policy that is not a
        RetryPolicy, is a TypeError.
        """
        server = MemoryServer(Registry())
        with self.assertRaises(TypeError):
            RpcClient(server.reactor, "server", 9988, idempotent="get")
        with self.assertRaises(TypeError):
            RpcClient(server.reactor, "server", 9988, retryPolicy=3)  # type: ignore[arg-type]

    def test_defaults(self) -> None:
        """
        By default nothing is idempotent, and the policy is the default one.
        """
        client = RpcClient(MemoryServer(Registry()).reactor, "server", 9988)
        self.assertEqual(client.idempotent, frozenset())
        self.assertEqual(repr(client.retryPolicy), repr(RetryPolicy()))
        other = RpcClient(MemoryServer(Registry()).reactor, "server", 9988)
        self.assertIsNot(client.retryPolicy, other.retryPolicy)


_actions = st.lists(
    st.one_of(
        st.tuples(st.just("call"), st.booleans(), st.booleans()),
        st.tuples(st.just("answer"), st.integers(0, 50)),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.just(("goaway",)),
        st.just(("drop",)),
        st.just(("refuse",)),
        st.just(("accept",)),
        st.just(("flush",)),
        st.tuples(st.just("advance"), st.sampled_from([0.01, 0.05, 0.3, 3.0])),
    ),
    max_size=60,
)


class RetryPropertyTests(SynchronousTestCase):
    """
    Whatever interleaving of calls, answers, cancels, goaways, drops and
    refused reconnects happens, idempotent calls end once, from at most
    maxAttempts runs, and the others keep the exactly-once promise.
    """

    @settings(max_examples=200, deadline=None)
    @given(_actions)
    def test_everyCallEndsOnce(self, actions: list[tuple[Any, ...]]) -> None:
        """
        Each call ends exactly once.  An idempotent one answered ran at least
        once and at most maxAttempts times; failed, it is CallLost (or
        CancelledError, cancelled) after at most maxAttempts runs.  The runs
        of idempotent calls beyond one each are at most the retries
        counted.  Other calls ran at most once, as assertExactlyOnce checks.
        """
        handlers = Handlers()
        server = MemoryServer(handlers.registry(), keepalive=10, lingerTimeout=2)
        policy = RetryPolicy(maxAttempts=3, jitter=0)
        client = RpcClient(server.reactor, "server", 9988, retryPolicy=policy)
        client.factory.jitter = 0
        outcomes: dict[int, list[Any]] = {}
        idempotent: set[int] = set()
        deferreds: list[Deferred[Any]] = []
        cancelled: set[int] = set()

        def record(result: Any, token: int) -> None:
            outcomes[token].append(result)

        for action in actions:
            kind = action[0]
            if serverStep(server, kind):
                continue
            if kind == "call":
                token = len(outcomes)
                outcomes[token] = []
                method = "wait" if action[2] else "run"
                if action[1]:
                    idempotent.add(token)
                    d = client.withCallOptions(idempotent=True).callRemote(
                        method, token
                    )
                else:
                    d = client.callRemote(method, token)
                d.addBoth(record, token)
                deferreds.append(d)
            elif kind == "answer":
                waiting = sorted(handlers.waiting)
                if waiting:
                    handlers.answer(waiting[action[1] % len(waiting)])
            elif kind == "cancel":
                if deferreds:
                    token = action[1] % len(deferreds)
                    if not outcomes[token]:
                        cancelled.add(token)
                    deferreds[token].cancel()
            elif kind == "advance":
                server.reactor.advance(action[1])

        server.refusing = False
        for _ in range(50):
            server.flush()
            for token in sorted(handlers.waiting):
                handlers.answer(token)
            server.flush()
            server.reactor.advance(client.factory.maxDelay)
            if all(outcomes.values()) and not handlers.waiting:
                break

        runs: dict[int, int] = {}
        for token in handlers.runs:
            runs[token] = runs.get(token, 0) + 1
        for token in idempotent:
            results = outcomes[token]
            self.assertEqual(len(results), 1, f"call {token} ended {results}")
            result = results[0]
            self.assertLessEqual(runs.get(token, 0), policy.maxAttempts)
            if isinstance(result, Failure):
                expected: list[type[BaseException]] = [CallLost]
                if token in cancelled:
                    expected.append(CancelledError)
                self.assertTrue(result.check(*expected), f"call {token}: {result}")
            else:
                self.assertEqual(result, token)
                self.assertGreaterEqual(runs.get(token, 0), 1)
        extra = sum(max(runs.get(t, 0) - 1, 0) for t in idempotent)
        self.assertLessEqual(extra, client.stats.retries)
        others = {
            t: o
            for t, o in outcomes.items()
            if t not in idempotent and t not in cancelled
        }
        assertExactlyOnce(
            self, others, [t for t in handlers.runs if t not in idempotent]
        )
        self.assertEqual(client.pending, 0)
