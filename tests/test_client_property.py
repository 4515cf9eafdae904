"""
A property test of L{agilerpc.RpcClient}'s promise: whatever interleaving of
calls, goaways, dropped connections and refused reconnects happens, every
call ends, either answered from exactly one execution or failed with a clear
error (and only a call that was in flight when its connection broke may fail,
with L{ConnectionLost}); none runs twice.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import ConnectionLost, RpcClient
from agilerpc.testing import MemoryServer

from .test_client import Handlers

_actions = st.lists(
    st.one_of(
        st.just(("call",)),
        st.just(("slowCall",)),
        st.tuples(st.just("answer"), st.integers(0, 50)),
        st.just(("goaway",)),
        st.just(("drop",)),
        st.just(("refuse",)),
        st.just(("accept",)),
        st.just(("flush",)),
        st.tuples(st.just("pump"), st.integers(0, 5)),
        st.tuples(st.just("advance"), st.sampled_from([0.05, 0.5, 3.0, 11.0])),
    ),
    max_size=60,
)


def assertExactlyOnce(
    testCase: SynchronousTestCase, outcomes: dict[int, list[Any]], ran: list[Any]
) -> None:
    """
    Each call (by token, in C{outcomes}: what its Deferred fired with) ended
    exactly once: answered with its token by exactly one run (C{ran} lists the
    tokens every handler run saw), or failed with L{ConnectionLost} after at
    most one run.
    """
    runs: dict[int, int] = {}
    for token in ran:
        runs[token] = runs.get(token, 0) + 1
    for token, results in outcomes.items():
        testCase.assertEqual(
            len(results), 1, f"call {token} ended {len(results)} times"
        )
        result = results[0]
        testCase.assertLessEqual(runs.get(token, 0), 1, f"call {token} ran twice")
        if isinstance(result, Failure):
            testCase.assertTrue(result.check(ConnectionLost), f"call {token}: {result}")
        else:
            testCase.assertEqual(result, token)
            testCase.assertEqual(
                runs.get(token), 1, f"call {token} answered without running"
            )


class ExactlyOnceTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(_actions)
    def test_everyCallEndsAndNoneRunsTwice(
        self, actions: list[tuple[Any, ...]]
    ) -> None:
        """
        Any interleaving ends with each call answered from exactly one run,
        or failed with ConnectionLost after at most one run.
        """
        handlers = Handlers()
        server = MemoryServer(handlers.registry(), keepalive=10, lingerTimeout=2)
        client = RpcClient(server.reactor, "server", 9988)
        client.factory.jitter = 0
        outcomes: dict[int, list[Any]] = {}

        def record(result: Any, token: int) -> None:
            outcomes[token].append(result)

        for action in actions:
            kind = action[0]
            if kind in ("call", "slowCall"):
                token = len(outcomes)
                outcomes[token] = []
                method = "run" if kind == "call" else "wait"
                d: Deferred[Any] = client.callRemote(method, token)
                d.addBoth(record, token)
            elif kind == "answer":
                waiting = sorted(handlers.waiting)
                if waiting:
                    handlers.answer(waiting[action[1] % len(waiting)])
            elif kind == "goaway":
                for connection in server.openConnections():
                    connection.server.goAway("shutdown")
            elif kind == "drop":
                server.drop()
            elif kind == "refuse":
                server.refusing = True
            elif kind == "accept":
                server.refusing = False
            elif kind == "flush":
                server.flush()
            elif kind == "pump":
                live = server.openConnections()
                if live:
                    live[action[1] % len(live)].pump.pump(advanceClock=False)
            elif kind == "advance":
                server.reactor.advance(action[1])

        # Let everything settle: accept connections, answer every handler.
        server.refusing = False
        for _ in range(50):
            server.flush()
            for token in sorted(handlers.waiting):
                handlers.answer(token)
            server.flush()
            server.reactor.advance(client.factory.maxDelay)
            if all(outcomes.values()) and not handlers.waiting:
                break

        assertExactlyOnce(self, outcomes, handlers.runs)
