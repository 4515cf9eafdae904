"""
Tests for the server's side of per-call context: deadlines the server
enforces (PROTOCOL.md 4.1, 7.2), metadata, and L{agilerpc.currentCall} in
every kind of handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks

from agilerpc import CallContext, currentCall
from agilerpc._context import current

from .serverhelpers import ServerTestCase


def options(msgid: int, method: str, args: list[Any], **opts: Any) -> list[Any]:
    """
    A request with an options map.
    """
    return [0, msgid, method, args, {}, opts]


class ContextServerTestCase(ServerTestCase):
    """
    A server whose handlers report what L{currentCall} says, in every kind
    of handler.

    @ivar seen: the contexts the handlers read, in order.
    @ivar cancelled: the keys of the handlers that were cancelled.
    """

    def setUp(self) -> None:
        super().setUp()
        self.seen: list[CallContext] = []
        self.cancelled: list[str] = []
        registry = self.registry

        def plain() -> dict[str, Any]:
            call = currentCall()
            self.seen.append(call)
            return dict(call.metadata)

        def slow(key: str) -> Deferred[str]:
            call = currentCall()
            d: Deferred[str] = Deferred(lambda d: self.cancelled.append(key))

            def answer(value: str) -> str:
                # A callback that runs later sees the call it captured.
                self.seen.append(call)
                return value

            d.addCallback(answer)
            self.pending[key] = d
            return d

        async def awaiting(key: str) -> dict[str, Any]:
            d: Deferred[None] = Deferred()
            self.pending[key] = d
            try:
                await d
            except CancelledError:
                self.cancelled.append(key)
                raise
            call = currentCall()
            self.seen.append(call)
            return dict(call.metadata)

        @inlineCallbacks
        def generatorStyle(key: str) -> Any:
            d: Deferred[None] = Deferred()
            self.pending[key] = d
            yield d
            call = currentCall()
            self.seen.append(call)
            return dict(call.metadata)

        def inThread() -> dict[str, Any]:
            call = currentCall()
            self.seen.append(call)
            return dict(call.metadata)

        def items(n: int) -> Iterator[Any]:
            for i in range(n):
                self.seen.append(currentCall())
                yield i

        async def asyncItems(n: int) -> AsyncIterator[Any]:
            for i in range(n):
                self.seen.append(currentCall())
                yield i

        def endless(key: str) -> Iterator[int]:
            try:
                while True:
                    yield 1
            finally:
                self.cancelled.append(key)

        def told() -> None:
            self.seen.append(currentCall())

        def slowStart(key: str) -> Deferred[str]:
            # Its synchronous part takes 1.5 s before it returns a Deferred.
            self.reactor.advance(1.5)
            return slow(key)

        for f in (plain, slow, awaiting, generatorStyle, items, asyncItems, told):
            registry.register(f)
        for f in (slowStart,):
            registry.register(f)
        registry.register(endless)
        registry.register(inThread, thread=True)


class DeadlineTests(ContextServerTestCase):
    """
    A request's C{deadline} option: the server cancels the call when it
    passes, and answers C{DeadlineExceeded}.
    """

    def deadlineTimers(self) -> list[Any]:
        """
        The deadline timers armed and not fired or cancelled.
        """
        return [
            c
            for c in self.reactor.getDelayedCalls()
            if c.active()
            and getattr(getattr(c, "func", None), "__name__", "") == "_deadlinePassed"
        ]

    def test_deadlinePassesCancelsAndAnswers(self) -> None:
        """
        When a call's deadline passes, its Deferred is cancelled and the
        caller gets C{DeadlineExceeded} with the call's msgid.
        """
        connection = self.connect()
        connection.send(options(3, "slow", ["a"], deadline=2.0))
        self.reactor.advance(1.999)
        self.assertEqual(connection.received(), [])
        self.reactor.advance(0.001)
        self.assertEqual(self.cancelled, ["a"])
        [response] = connection.received()
        self.assertEqual(response[:2], [1, 3])
        self.assertEqual(response[2]["type"], "DeadlineExceeded")
        self.assertIsNone(response[3])
        self.assertEqual(connection.protocol.inFlight, 0)

    def test_countedFromArrival(self) -> None:
        """
        A deadline counts from when the request was read, not from when its
        handler returned: the 1.5 s its synchronous part took are part of it.
        """
        connection = self.connect()
        connection.send(options(3, "slowStart", ["a"], deadline=2.0))
        self.reactor.advance(0.499)
        self.assertEqual(self.cancelled, [])
        self.reactor.advance(0.001)
        self.assertEqual(self.cancelled, ["a"])
        connection.received()

    def test_answeredInTime(self) -> None:
        """
        A call answered before its deadline gets its result, and its timer
        is gone: nothing more is sent when the deadline would have passed.
        """
        connection = self.connect()
        connection.send(options(3, "slow", ["a"], deadline=2.0))
        self.pending["a"].callback("done")
        self.assertEqual(connection.received(), [[1, 3, None, "done"]])
        self.assertEqual(self.deadlineTimers(), [])
        self.reactor.advance(2.5)
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.cancelled, [])

    def test_coroutineGetsCancelledError(self) -> None:
        """
        A coroutine handler whose deadline passes gets L{CancelledError} at
        its C{await}.
        """
        connection = self.connect()
        connection.send(options(1, "awaiting", ["k"], deadline=0.5))
        self.reactor.advance(0.5)
        self.assertEqual(self.cancelled, ["k"])
        [response] = connection.received()
        self.assertEqual(response[2]["type"], "DeadlineExceeded")

    def test_threadHandlerAbandoned(self) -> None:
        """
        A thread handler cannot be stopped: at its deadline the caller gets
        C{DeadlineExceeded}, and the result it returns later is dropped.
        """
        connection = self.connect()
        connection.send(options(1, "threaded", [21], deadline=1.0))
        self.reactor.advance(1.0)
        [response] = connection.received()
        self.assertEqual(response[2]["type"], "DeadlineExceeded")
        self.reactor.pool.runAll()
        self.assertEqual(self.calls, [("thread", 21)])
        self.assertEqual(connection.received(), [])

    def test_clientGoneWorkStillStops(self) -> None:
        """
        The deadline stops the work even when nobody will read the answer:
        a client that went silent (its end never came) gets its calls
        cancelled at their deadline, the answer going nowhere it can read.
        """
        connection = self.connect()
        connection.send(options(1, "slow", ["a"], deadline=1.0))
        connection.clientCloses()  # then nothing: no reset, no close
        self.reactor.advance(1.0)
        self.assertEqual(self.cancelled, ["a"])

    def test_deadlineOfAStream(self) -> None:
        """
        A stream's deadline is the whole stream's: when it passes, its
        generator is closed and the stream ends with C{DeadlineExceeded}
        after the items it sent.
        """
        connection = self.connect()
        connection.send(options(4, "endless", ["s"], stream=2, deadline=3.0))
        self.reactor.advance(0.1)
        self.assertEqual([m[:2] for m in connection.received()], [[4, 4], [4, 4]])
        self.reactor.advance(3.0)
        [end] = connection.received()
        self.assertEqual(end[:2], [1, 4])
        self.assertEqual(end[2]["type"], "DeadlineExceeded")
        self.assertEqual(self.cancelled, ["s"])

    def test_cancelBeforeDeadline(self) -> None:
        """
        A call the client cancels before its deadline is answered
        C{Cancelled}, not C{DeadlineExceeded}.
        """
        connection = self.connect()
        connection.send(options(1, "slow", ["a"], deadline=5.0))
        connection.send([3, "cancel", 1])
        [response] = connection.received()
        self.assertEqual(response[2]["type"], "Cancelled")
        self.reactor.advance(6)
        self.assertEqual(connection.received(), [])

    def test_invalidDeadlines(self) -> None:
        """
        A deadline that is not a number of seconds above 0 and at most a
        year is refused with C{InvalidRequest} for that msgid; the handler
        does not run.
        """
        connection = self.connect()
        for msgid, deadline in enumerate(
            [0, -1, 0.0, "1", None, float("nan"), float("inf"), 366 * 86400, True]
        ):
            if deadline is None:
                continue
            connection.send(options(msgid, "plain", [], deadline=deadline))
            [response] = connection.received()
            self.assertEqual(response[1], msgid, deadline)
            self.assertEqual(response[2]["type"], "InvalidRequest", deadline)
            self.assertIn("deadline", response[2]["message"])
        self.assertEqual(self.seen, [])

    def test_deadlineReadByHandler(self) -> None:
        """
        C{currentCall().deadline} is the seconds left, counted from when the
        request arrived.
        """
        self.reactor.advance(100)
        connection = self.connect()
        connection.send(options(1, "slow", ["a"], deadline=2.5))
        self.reactor.advance(1)
        self.pending["a"].callback("x")
        [call] = self.seen
        self.assertEqual(call.deadline, 1.5)
        self.reactor.advance(5)
        self.assertEqual(call.deadline, 0.0)
        connection.received()

    def test_noDeadline(self) -> None:
        """
        Without a deadline (and no C{maxCallTime}), C{currentCall().deadline}
        is L{None} and no timer is armed.
        """
        connection = self.connect()
        connection.call(1, "plain")
        [call] = self.seen
        self.assertIsNone(call.deadline)
        self.assertEqual(self.deadlineTimers(), [])

    def test_outcomeObserved(self) -> None:
        """
        The observers see a call past its deadline end with the outcome
        C{DeadlineExceeded}: L{ServerMetrics} counts them by method.
        """
        from agilerpc import ServerMetrics

        metrics = ServerMetrics()
        connection = self.connect(observers=[metrics])
        connection.send(options(1, "slow", ["a"], deadline=1.0))
        connection.send(options(2, "slow", ["b"], deadline=1.0))
        self.pending["b"].callback("b")
        self.reactor.advance(1)
        connection.received()
        self.assertEqual(
            metrics.calls, {("slow", "DeadlineExceeded"): 1, ("slow", "ok"): 1}
        )


class MaxCallTimeTests(ContextServerTestCase):
    """
    The server's C{maxCallTime} (C{--max-call-time}): the deadline of calls
    whose caller set none, and the longest one a caller may set.
    """

    def test_defaultDeadline(self) -> None:
        """
        A call without a deadline gets C{maxCallTime}.
        """
        connection = self.connect(maxCallTime=4.0)
        connection.call(1, "slow", "a")
        self.reactor.advance(4.0)
        self.assertEqual(self.cancelled, ["a"])
        [response] = connection.received()
        self.assertEqual(response[2]["type"], "DeadlineExceeded")

    def test_plainHandlerReadsIt(self) -> None:
        """
        A handler answering at once reads C{maxCallTime} as its deadline.
        """
        connection = self.connect(maxCallTime=4.0)
        self.assertEqual(connection.call(1, "plain"), [[1, 1, None, {}]])
        [call] = self.seen
        self.assertEqual(call.deadline, 4.0)

    def test_callerDeadlineCapped(self) -> None:
        """
        A caller's deadline longer than C{maxCallTime} is cut to it; a shorter
        one is kept.
        """
        connection = self.connect(maxCallTime=4.0)
        connection.send(options(1, "slow", ["long"], deadline=60))
        connection.send(options(2, "slow", ["short"], deadline=1))
        self.reactor.advance(1)
        self.assertEqual(self.cancelled, ["short"])
        self.reactor.advance(3)
        self.assertEqual(self.cancelled, ["short", "long"])
        self.assertEqual(
            [m[2]["type"] for m in connection.received()], ["DeadlineExceeded"] * 2
        )

    def test_streamsToo(self) -> None:
        """
        C{maxCallTime} bounds a stream whose caller set no deadline.
        """
        connection = self.connect(maxCallTime=2.0)
        connection.send(options(1, "endless", ["s"], stream=1))
        self.reactor.advance(2.0)
        messages = connection.received()
        self.assertEqual(messages[-1][2]["type"], "DeadlineExceeded")

    def test_invalid(self) -> None:
        """
        C{maxCallTime} must be above 0 and at most a year.
        """
        for value in (0, -1, 400 * 86400.0):
            self.assertRaises(ValueError, self.makeFactory, maxCallTime=value)


class MetadataTests(ContextServerTestCase):
    """
    A request's C{metadata} option reaches its handler through
    L{currentCall}, within the server's C{maxMetadataSize}.
    """

    def test_helloAnnounces(self) -> None:
        """
        The hello lists the C{deadline} and C{metadata} features and the
        C{max_metadata_size}.
        """
        connection = self.connect(maxMetadataSize=100)
        [[_, _, info]] = connection.hello
        self.assertEqual(info["features"], ["stream", "deadline", "metadata"])
        self.assertEqual(info["max_metadata_size"], 100)

    def test_plainHandler(self) -> None:
        """
        A handler reads the metadata, its method and its peer.
        """
        connection = self.connect()
        metadata = {"request-id": "r1", "key": b"\x00\xff"}
        connection.send(options(1, "plain", [], metadata=metadata))
        self.assertEqual(connection.received(), [[1, 1, None, metadata]])
        [call] = self.seen
        self.assertEqual(call.method, "plain")
        self.assertEqual(call.peer, connection.transport.getPeer())
        self.assertIsNone(call.deadline)

    def test_withoutMetadata(self) -> None:
        """
        A request without options (the hot path) gives an empty metadata
        map.
        """
        connection = self.connect()
        self.assertEqual(connection.call(1, "plain"), [[1, 1, None, {}]])
        self.assertEqual(dict(self.seen[0].metadata), {})

    def test_deferredCallbackUsesCaptured(self) -> None:
        """
        A Deferred's callback that runs later uses the context its handler
        read: L{currentCall} outside the handler raises L{LookupError}.
        """
        connection = self.connect()
        connection.send(options(1, "slow", ["a"], metadata={"t": "1"}))
        self.assertRaises(LookupError, currentCall)
        self.pending["a"].callback("x")
        self.assertEqual(dict(self.seen[0].metadata), {"t": "1"})
        self.assertEqual(connection.received(), [[1, 1, None, "x"]])

    def test_coroutineAcrossAwait(self) -> None:
        """
        A coroutine reads its call's context after an C{await} that resumed
        from outside the handler, while another call ran in between.
        """
        connection = self.connect()
        connection.send(options(1, "awaiting", ["a"], metadata={"who": "a"}))
        connection.send(options(2, "plain", [], metadata={"who": "b"}))
        self.pending["a"].callback(None)
        self.assertEqual(
            connection.received(),
            [[1, 2, None, {"who": "b"}], [1, 1, None, {"who": "a"}]],
        )

    def test_inlineCallbacks(self) -> None:
        """
        An C{inlineCallbacks} generator reads its call's context after a
        C{yield}.
        """
        connection = self.connect()
        connection.send(options(1, "generatorStyle", ["a"], metadata={"x": "y"}))
        self.pending["a"].callback(None)
        self.assertEqual(connection.received(), [[1, 1, None, {"x": "y"}]])

    def test_threadHandler(self) -> None:
        """
        A thread handler reads its call's context in its thread.
        """
        connection = self.connect()
        connection.send(options(1, "inThread", [], metadata={"x": "t"}))
        self.assertRaises(LookupError, currentCall)
        self.reactor.pool.runAll()
        self.assertEqual(connection.received(), [[1, 1, None, {"x": "t"}]])

    def test_streamGenerators(self) -> None:
        """
        A stream's generator, plain or async, reads its call's context for
        every item it makes.
        """
        connection = self.connect()
        connection.send(options(1, "items", [2], stream=8, metadata={"s": "1"}))
        connection.send(options(2, "asyncItems", [2], stream=8, metadata={"s": "2"}))
        self.reactor.advance(0.1)
        connection.received()
        self.assertEqual(
            sorted(dict(c.metadata)["s"] for c in self.seen), ["1", "1", "2", "2"]
        )

    def test_notification(self) -> None:
        """
        A notification's handler reads its method, and its metadata when it
        carries an options map (PROTOCOL.md 4.3).
        """
        connection = self.connect()
        connection.send([2, "told", []])
        connection.send([2, "told", [], {}, {"metadata": {"n": "1"}}])
        self.assertEqual([c.method for c in self.seen], ["told", "told"])
        self.assertEqual([dict(c.metadata) for c in self.seen], [{}, {"n": "1"}])
        self.assertEqual(connection.received(), [])

    def test_contextResetAfterHandler(self) -> None:
        """
        Once a handler returns, nothing is left current, whatever way it
        ended.
        """
        connection = self.connect()
        connection.call(1, "plain")
        connection.call(2, "fail", "boom")
        connection.call(3, "nope")
        connection.send(options(4, "plain", [], metadata={"a": "b"}))
        connection.send(options(5, "fail", ["x"], deadline=1))
        connection.received()
        self.assertIsNone(current.get())
        self.flushLoggedErrors(ValueError)

    def test_atTheLimit(self) -> None:
        """
        Metadata of exactly C{maxMetadataSize} bytes (keys and values, as
        UTF-8) is taken; one byte more is refused with C{InvalidRequest} for
        that call, saying the limit; the handler does not run.
        """
        connection = self.connect(maxMetadataSize=10)
        connection.send(options(1, "plain", [], metadata={"ké": "1234567"}))
        self.assertEqual(connection.received(), [[1, 1, None, {"ké": "1234567"}]])
        connection.send(options(2, "plain", [], metadata={"ké": b"12345678"}))
        [response] = connection.received()
        self.assertEqual(response[:2], [1, 2])
        self.assertEqual(response[2]["type"], "InvalidRequest")
        self.assertIn("max_metadata_size of 10", response[2]["message"])
        self.assertEqual(len(self.seen), 1)

    def test_notificationOverLimit(self) -> None:
        """
        A notification whose metadata is over the limit does not run, and is
        refused with a nil msgid.
        """
        connection = self.connect(maxMetadataSize=2)
        connection.send([2, "told", [], {}, {"metadata": {"abc": ""}}])
        [response] = connection.received()
        self.assertEqual(response[:2], [1, None])
        self.assertEqual(response[2]["type"], "InvalidRequest")
        self.assertEqual(self.seen, [])

    def test_invalidMetadata(self) -> None:
        """
        Metadata that is not a map of str keys to str or bin values is
        refused with C{InvalidRequest}, saying why.
        """
        connection = self.connect()
        for msgid, metadata in enumerate(
            [[], {"a": 1}, {1: "a"}, {b"k": "v"}, {"a": None}, {"a": ["x"]}]
        ):
            connection.send(options(msgid, "plain", [], metadata=metadata))
            [response] = connection.received()
            self.assertEqual(response[1], msgid, metadata)
            self.assertEqual(response[2]["type"], "InvalidRequest", metadata)
            self.assertIn("metadata", response[2]["message"])
        self.assertEqual(self.seen, [])

    def test_unknownOptionsIgnored(self) -> None:
        """
        Option keys the server does not know are ignored.
        """
        connection = self.connect()
        connection.send(options(1, "plain", [], later={"x": 1}))
        self.assertEqual(connection.received(), [[1, 1, None, {}]])


class CallContextTests(ContextServerTestCase):
    """
    L{CallContext} itself.
    """

    def test_repr(self) -> None:
        """
        Its repr names the method, the peer, the deadline and how much
        metadata there is.
        """
        connection = self.connect()
        connection.send(options(1, "plain", [], metadata={"a": "b"}, deadline=2))
        connection.received()
        text = repr(self.seen[0])
        self.assertIn("plain", text)
        self.assertIn(str(connection.transport.getPeer()), text)
        self.assertIn("deadline 2.0", text)
        self.assertIn("1 metadata", text)

    def test_outsideHandler(self) -> None:
        """
        L{currentCall} outside a handler raises L{LookupError} saying where
        it works.
        """
        e = self.assertRaises(LookupError, currentCall)
        self.assertIn("handler", str(e))

    def test_readOnlyEmptyMetadata(self) -> None:
        """
        The empty metadata of a call without any cannot be changed (it is
        shared).
        """
        connection = self.connect()
        connection.call(1, "plain")
        with self.assertRaises(TypeError):
            self.seen[0].metadata["x"] = "y"  # type: ignore[index]
