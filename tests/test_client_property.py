"""
Property tests of the clients' promise: whatever interleaving of calls,
goaways, dropped connections and refused reconnects happens, every call
ends, either answered from exactly one execution or failed with a clear
error (and only a call that was in flight when its connection broke may fail,
with L{CallLost}); none runs twice.

They run against the sans-IO connection core both clients share
(L{CoreExactlyOnceTests}), against L{agilerpc.RpcClient} and against
L{agilerpc.TcpRpcClient}.
"""

from __future__ import annotations

import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import CallLost, RpcClient, TcpRpcClient, _blocking, _wire
from agilerpc._clientconnection import ClientConnection, State
from agilerpc.testing import MemoryServer

from .clienthelpers import (
    HELLO,
    Handlers,
    MemorySocket,
    RecordingEvents,
    assertExactlyOnce,
    frame,
    serverStep,
)
from .clienthelpers import MemoryServer as MemorySocketServer

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


class ExactlyOnceTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(_actions)
    def test_everyCallEndsAndNoneRunsTwice(
        self, actions: list[tuple[Any, ...]]
    ) -> None:
        """
        Any interleaving ends with each call answered from exactly one run,
        or failed with CallLost after at most one run.
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
            if serverStep(server, kind):
                continue
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
            elif kind == "pump":
                live = server.openConnections()
                if live:
                    live[action[1] % len(live)].pump.pump()
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


_coreActions = st.lists(
    st.one_of(
        st.just(("call",)),
        st.tuples(st.just("dispatch"), st.integers(0, 3)),
        st.tuples(st.just("answer"), st.integers(0, 50)),
        st.just(("goaway",)),
        st.just(("drop",)),
        st.just(("cancel",)),
    ),
    max_size=60,
)


class CoreExactlyOnceTests(SynchronousTestCase):
    """
    The exactly-once promise, against L{ClientConnection} directly: the
    test plays a server that receives requests in order, dispatches a prefix
    of them, answers dispatched ones in any order, and sends goaways naming
    the last one it dispatched.
    """

    @settings(max_examples=300, deadline=None)
    @given(_coreActions)
    def test_everyCallEndsOnce(self, actions: list[tuple[Any, ...]]) -> None:
        """
        Each call ends once: answered only if it ran, handed back as unrun
        only if it did not, or lost (it may have run); it runs at most once
        per sending, and a call is only ever resent after an unrun.
        """
        ran: list[int] = []
        ended: dict[int, list[str]] = {}
        queue: list[int] = []  # calls waiting for a connection, in order
        events = RecordingEvents()
        core = ClientConnection(events)
        core.dataReceived(frame(HELLO))
        received: list[tuple[int, int]] = []  # (msgid, token), arrival order
        dispatched = 0
        pending: list[tuple[int, int]] = []  # dispatched, not yet answered
        goneAway = False
        cancelled: set[int] = set()

        def newConnection() -> None:
            nonlocal core, received, dispatched, pending, goneAway, events
            events = RecordingEvents()
            core = ClientConnection(events)
            core.dataReceived(frame(HELLO))
            received, dispatched, pending, goneAway = [], 0, [], False
            while queue:
                send(queue.pop(0))

        def send(token: int) -> None:
            msgid, payload = core.sendRequest(token, "run", [token], None)
            message = _wire.unpack(payload)
            self.assertEqual(message[1], msgid)
            if not goneAway:
                received.append((msgid, token))

        def settle() -> None:
            for event in events.events:
                kind = event[0]
                if kind == "answered":
                    ended[event[1]].append("answered")
                elif kind == "goaway":
                    for token in event[2]:
                        self.assertNotIn(token, ran, f"unrun call {token} ran")
                        queue.append(token)
                elif kind == "violation":
                    self.fail(f"violation: {event}")
            events.events.clear()

        for action in actions:
            kind = action[0]
            if kind == "call":
                token = len(ended)
                ended[token] = []
                if core.state is State.READY:
                    send(token)
                else:
                    queue.append(token)
            elif kind == "dispatch" and not goneAway:
                for msgid, token in received[dispatched : dispatched + action[1]]:
                    ran.append(token)
                    pending.append((msgid, token))
                dispatched = min(len(received), dispatched + action[1])
            elif kind == "answer" and pending:
                msgid, token = pending.pop(action[1] % len(pending))
                core.dataReceived(frame([1, msgid, None, token]))
            elif kind == "cancel" and core.inflight:
                msgid = next(iter(core.calls))
                token = core.calls[msgid]
                self.assertIsNotNone(core.cancel(msgid))
                cancelled.add(token)
                ended[token].append("cancelled")
            elif kind == "goaway" and not goneAway and core.state is State.READY:
                last = received[dispatched - 1][0] if dispatched else None
                goneAway = True
                core.dataReceived(frame([3, "goaway", last, "shutdown"]))
            elif kind == "drop":
                for token in core.connectionLost():
                    ended[token].append("lost")
                settle()
                newConnection()
            settle()
            if core.finished:
                newConnection()
                settle()

        for token in core.connectionLost():
            ended[token].append("lost")
        for token in queue:
            ended[token].append("queued")
        runs: dict[int, int] = {}
        for token in ran:
            runs[token] = runs.get(token, 0) + 1
        for token, outcomes in ended.items():
            self.assertEqual(len(outcomes), 1, f"call {token}: {outcomes}")
            self.assertLessEqual(runs.get(token, 0), 1, f"call {token} ran twice")
            if outcomes == ["answered"]:
                self.assertEqual(runs.get(token), 1)
            elif outcomes == ["queued"]:
                self.assertNotIn(token, runs)


class _InstantTime:
    """
    The C{time} module for the blocking client, with C{sleep} a no-op.
    """

    monotonic = staticmethod(time.monotonic)

    def sleep(self, seconds: float) -> None:
        pass


# What the scripted server does with each request it receives.
_behaviours = st.lists(
    st.sampled_from(
        ["answer", "goawayBefore", "goawayAfter", "dropBefore", "dropAfter", "busy"]
    ),
    max_size=40,
)


class BlockingExactlyOnceTests(SynchronousTestCase):
    """
    The exactly-once promise, against L{TcpRpcClient} on in-memory sockets.
    """

    @settings(max_examples=200, deadline=None)
    @given(_behaviours, st.integers(1, 8))
    def test_everyCallEndsOnce(self, behaviours: list[str], calls: int) -> None:
        """
        Whatever the server does with each request (answer, go away before
        or after running it, drop the connection before or after running
        it, refuse a connection before its hello), each call returns its
        own run's result, or raises L{CallLost} after at most one run, or
        gives up without running; none runs twice.
        """
        plan = list(behaviours)
        ran: list[Any] = []

        def opened(sock: MemorySocket) -> None:
            if plan and plan[0] == "busy":
                plan.pop(0)
                sock.send_([3, "goaway", None, "ServerBusy"])
                sock.end()
            else:
                sock.send_(HELLO)

        def script(sock: MemorySocket, message: Any) -> None:
            if message[0] != 0:
                return
            msgid, token = message[1], message[3][0]
            what = plan.pop(0) if plan and plan[0] != "busy" else "answer"
            if what == "goawayBefore":
                sock.send_([3, "goaway", None if msgid == 0 else msgid - 1, "idle"])
                sock.end()
                return
            if what == "dropBefore":
                sock.end()
                return
            ran.append(token)
            if what == "dropAfter":
                sock.end()
                return
            if what == "goawayAfter":
                sock.send_([3, "goaway", msgid, "shutdown"])
            sock.send_([1, msgid, None, token])
            if what == "goawayAfter":
                sock.end()

        # Backoff delays pass at once.
        self.patch(_blocking, "time", _InstantTime())
        server = MemorySocketServer(opened=opened, script=script)
        client = TcpRpcClient("memory.invalid", 9988, timeout=60, socketFactory=server)
        outcomes: dict[int, list[Any]] = {}
        for token in range(calls):
            try:
                outcomes[token] = [client.call("run", (token,))]
            except CallLost as e:
                outcomes[token] = [Failure(e)]
            except ConnectionRefusedError:
                # Gave up (connections not served, or goaways before running
                # it every time): it did not run.
                self.assertNotIn(token, ran)
        assertExactlyOnce(self, outcomes, ran)
