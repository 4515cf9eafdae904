"""
Server streams (PROTOCOL.md 4.5): the items a streaming handler produces,
pulled as the caller's credit and the connection's send buffer allow, then
the handler's final value, or its error, as the call's answer.

A L{ServerStream} drives one handler's generator, async generator or
L{Stream} (what a handler returns to push items by hand, from an
L{IPushProducer}).  A L{StreamPump} takes turns between the streams of one connection, a batch of
items each, and gives the reactor back every few milliseconds, so that one
fast stream holds up neither the others nor the server.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import Context, copy_context
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IProducer,
    IPushProducer,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._errors import RpcError
from ._wire import MAX_MSGID

_log = Logger(namespace="agilerpc.server")

#: Items one stream sends in its turn before the next stream's turn.
BATCH = 64

#: Seconds of pulling after which the pump lets the reactor run.
SLICE = 0.005

#: The most credit a stream holds (PROTOCOL.md 4.5).
MAX_CREDIT = MAX_MSGID


@implementer(IConsumer)
class Stream:
    """
    A stream a handler feeds by hand: it returns one, then L{write}s items to
    it and L{finish}es it (or L{fail}s it) once.  For a source that pushes,
    such as a file being read or a subscription, register it as the
    stream's L{IPushProducer <twisted.internet.interfaces.IPushProducer>}:
    it is paused while the stream holds C{highWater} items it could not send
    yet (the caller's credit is used up, or the connection's send buffer is
    full), and resumed when they have gone.  When the caller cancels or goes
    away the producer is stopped and L{cancelled} becomes true; later writes
    are dropped.  A producer streaming a file's lines::

        @rpc
        def lines(path):
            stream = Stream()
            stream.registerProducer(LineReader(path, stream), True)
            return stream

    @ivar cancelled: the caller cancelled the stream, or went away.
    """

    def __init__(self, highWater: int = 64) -> None:
        if highWater < 1:
            raise ValueError("highWater must be >= 1")
        self.highWater = highWater
        self.cancelled = False
        self._items: deque[Any] = deque()
        self._waiting: Deferred[Any] | None = None
        self._end: Failure | None = None
        self._ended = False
        self._producer: IPushProducer | None = None
        self._producerPaused = False

    # -- what the handler does (IConsumer) ------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Pause and resume C{producer} as the stream fills and drains.

        @raise ValueError: for a pull producer (C{streaming} false): write
            items from an
            L{IPushProducer <twisted.internet.interfaces.IPushProducer>}, or
            yield them from a generator.
        """
        if not streaming or not IPushProducer.providedBy(producer):
            raise ValueError("a Stream takes push producers (streaming=True) only")
        if self._producer is not None:
            raise RuntimeError("a producer is already registered")
        self._producer = producer
        self._producerPaused = False
        if self.cancelled:
            producer.stopProducing()
        elif len(self._items) >= self.highWater:
            self._pauseProducer()

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, item: Any) -> None:
        """
        Send C{item} (once the caller's credit allows).
        """
        if self.cancelled or self._ended:
            return
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(item)
            return
        self._items.append(item)
        if len(self._items) >= self.highWater:
            self._pauseProducer()

    def finish(self, result: Any = None) -> None:
        """
        End the stream after the items written: the call's result is
        C{result}.
        """
        self._close(Failure(_Finished(result)))

    def fail(self, error: BaseException | Failure) -> None:
        """
        End the stream after the items written, with C{error}.
        """
        self._close(error if isinstance(error, Failure) else Failure(error))

    # -- what the server does ---------------------------------------------------

    def __aiter__(self) -> Stream:
        return self

    def __anext__(self) -> Deferred[Any]:
        if self._items:
            item = self._items.popleft()
            if self._producerPaused and not self._items:
                self._producerPaused = False
                if self._producer is not None:
                    self._producer.resumeProducing()
            return succeed(item)
        if self._ended:
            assert self._end is not None
            return fail(self._end)
        d: Deferred[Any] = Deferred(self._unwait)
        self._waiting = d
        return d

    async def aclose(self) -> None:
        """
        The caller cancelled, or went away: stop the producer, drop what is
        left.
        """
        if self.cancelled or self._ended:
            return
        self.cancelled = True
        self._items.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()

    def _unwait(self, d: Deferred[Any]) -> None:
        self._waiting = None

    def _pauseProducer(self) -> None:
        if not self._producerPaused and self._producer is not None:
            self._producerPaused = True
            self._producer.pauseProducing()

    def _close(self, end: Failure) -> None:
        if self._ended or self.cancelled:
            return
        self._ended = True
        self._end = end
        self._producer = None
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(end)


class _Finished(StopAsyncIteration):
    """
    A L{Stream}'s normal end, carrying its result.
    """

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


def isStream(result: object) -> bool:
    """
    Is C{result}, what a handler returned, a stream of items: a generator,
    an async generator, or a L{Stream}?
    """
    return (
        inspect.isgenerator(result)
        or inspect.isasyncgen(result)
        or isinstance(result, Stream)
    )


def closeStream(source: Any) -> Deferred[None] | None:
    """
    Close a generator (its C{finally} blocks run now) or an async generator
    (they run as it awaits: the Deferred fires when they have).  Errors are
    logged, not raised.
    """
    if inspect.isgenerator(source):
        try:
            source.close()
        except Exception:
            _log.failure("closing a stream's generator")
        return None

    async def aclose() -> None:
        await source.aclose()

    d = Deferred.fromCoroutine(aclose())
    d.addErrback(lambda f: _log.failure("closing a stream's generator", f))
    return d


async def _anext(source: AsyncGenerator[Any, None]) -> Any:
    return await source.__anext__()


class ServerStream:
    """
    One stream being answered.

    @ivar msgid: the call's msgid.
    @ivar credit: items the caller has granted and not received yet.
    @ivar done: fires with the handler's final value when it has produced
        its last item, or fails with its error; cancelling it (the
        caller's cancel, or its connection lost) closes the handler's
        generator.
    @ivar queued: it waits for its turn in its pump.
    """

    def __init__(
        self,
        msgid: int,
        method: str,
        source: Generator[Any, None, Any] | AsyncGenerator[Any, None] | Stream,
        window: int,
        send: Callable[[int, Any, str], None],
        pump: StreamPump,
        awaiting: Callable[[bool], None] | None = None,
        context: Context | None = None,
    ) -> None:
        """
        @param send: writes one item; raises L{RpcError} when the item
            cannot be sent (the stream then ends with that error).
        @param awaiting: told C{True} when the stream has used its credit
            and waits for the client, C{False} when it no longer does.
        @param context: the L{contextvars} context the generator's body runs
            in (its handler's, where L{agilerpc.currentCall} works), or
            L{None} for the pump's.
        """
        self.msgid = msgid
        self.method = method
        self.credit = min(window, MAX_CREDIT)
        self.queued = False
        self._source = source
        self._async = not inspect.isgenerator(source)
        self._send = send
        self._pump = pump
        self._pulling: Deferred[Any] | None = None
        self._finished = False
        self._awaiting = awaiting
        self._run = copy_context().run if context is None else context.run
        self.done: Deferred[Any] = Deferred(self._cancelled)
        pump.open.add(self)
        pump.ready(self)

    def cancel(self) -> None:
        """
        Stop the stream: its generator is closed and L{done} fails with
        L{CancelledError}.
        """
        self.done.cancel()

    def grant(self, count: int) -> None:
        """
        The caller grants C{count} more items.
        """
        if self._finished:
            return
        waiting = self.credit == 0
        self.credit = min(self.credit + count, MAX_CREDIT)
        if waiting:
            self._tell(False)
            if self._pulling is None:
                self._pump.ready(self)

    def pull(self, budget: int) -> bool:
        """
        Send up to C{budget} items, as the credit and the pump allow.

        @return: whether the stream can go on at once (it has credit left,
            is not waiting for its async generator, and has not ended).
        """
        pump = self._pump
        while budget and self.credit and not pump.paused:
            budget -= 1
            if self._async:
                d = self._run(Deferred.fromCoroutine, _anext(self._source))  # type: ignore[arg-type]
                if not d.called:
                    self._pulling = d
                    d.addBoth(self._arrived)
                    return False
                outcome: list[Any] = []
                d.addBoth(outcome.append)
                if not self._deliver(outcome[0]):
                    return False
                continue
            try:
                item = self._run(next, self._source)  # type: ignore[arg-type]
            except StopIteration as e:
                self._end(e.value)
                return False
            except BaseException:
                self._fail(Failure())
                return False
            if not self._deliver(item):
                return False
        return bool(self.credit) and not self._finished

    def _arrived(self, outcome: Any) -> None:
        """
        The async generator produced an item, or ended.
        """
        self._pulling = None
        if self._finished:
            return
        if self._deliver(outcome) and self.credit:
            self._pump.ready(self)

    def _deliver(self, outcome: Any) -> bool:
        """
        Send an item, or end the stream with an async generator's end or
        error; whether it goes on.
        """
        if isinstance(outcome, Failure):
            finished = outcome.value
            if isinstance(finished, _Finished):
                self._end(finished.result)
            elif outcome.check(StopAsyncIteration):
                self._end(None)
            else:
                self._fail(outcome)
            return False
        try:
            self._send(self.msgid, outcome, self.method)
        except RpcError:
            failure = Failure()
            self._run(closeStream, self._source)
            self._fail(failure)
            return False
        self.credit -= 1
        if not self.credit:
            self._tell(True)
        return True

    def _tell(self, awaiting: bool) -> None:
        """
        Tell whoever counts the streams waiting for credit that this one
        now waits (its credit went to 0) or no longer does.
        """
        if self._awaiting is not None:
            self._awaiting(awaiting)

    def _stop(self) -> None:
        """
        The stream ends: no more turns, and if it waited for credit, it no
        longer does.
        """
        self._finished = True
        self._pump.discard(self)
        if not self.credit:
            self._tell(False)

    def _end(self, value: Any) -> None:
        self._stop()
        self.done.callback(value)

    def _fail(self, failure: Failure) -> None:
        self._stop()
        self.done.errback(failure)

    def _cancelled(self, done: Deferred[Any]) -> None:
        """
        L{done} was cancelled: close the generator (L{Deferred.cancel} then
        fails L{done} with L{CancelledError}).
        """
        self._stop()
        pulling, self._pulling = self._pulling, None
        if pulling is not None:
            # Throws CancelledError into the async generator's await.
            pulling.cancel()
        # In the stream's context, as its items were made: the generator's
        # finally blocks see currentCall() and the call's trace span.
        self._run(closeStream, self._source)


class StreamPump:
    """
    Takes turns between the streams of one connection that can send.

    @ivar paused: the connection's send buffer is full: no stream sends.
    """

    def __init__(self, reactor: IReactorTime, timer: Callable[[], float]) -> None:
        self._reactor = reactor
        self._timer = timer
        self._ready: deque[ServerStream] = deque()
        self._call: IDelayedCall | None = None
        self.paused = False
        #: The streams not ended yet.
        self.open: set[ServerStream] = set()

    def ready(self, stream: ServerStream) -> None:
        """
        C{stream} can send: give it a turn.
        """
        if not stream.queued:
            stream.queued = True
            self._ready.append(stream)
            self._schedule()

    def discard(self, stream: ServerStream) -> None:
        """
        C{stream} has ended: take it out of the turns.
        """
        self.open.discard(stream)
        if stream.queued:
            stream.queued = False
            self._ready.remove(stream)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._schedule()

    def stop(self) -> None:
        """
        The connection is gone: no more turns.
        """
        self.paused = True
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _schedule(self) -> None:
        if self._call is None and self._ready and not self.paused:
            self._call = self._reactor.callLater(0, self._run)

    def _run(self) -> None:
        """
        Turns, a batch of items each, until nobody can send or the slice is
        used up.
        """
        self._call = None
        ready = self._ready
        timer = self._timer
        deadline = timer() + SLICE
        while ready and not self.paused:
            stream = ready.popleft()
            stream.queued = False
            if stream.pull(BATCH):
                stream.queued = True
                ready.append(stream)
            if timer() > deadline:
                break
        self._schedule()
