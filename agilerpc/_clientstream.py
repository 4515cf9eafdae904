"""
The caller's side of a stream (PROTOCOL.md 4.5) in the Twisted client:
L{RpcStream}, the items of one stream call as they come, taken one at a
time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(IPushProducer)
class RpcStream:
    """
    The items of a stream call, in order, then its end.

    Take them with L{next} (a
    L{Deferred <twisted.internet.defer.Deferred>} of the next item), or as
    an async iterator::

        async for item in client.callStream("ticks", 5, 0.1):
            ...

    or have each handed to a function as it arrives, which costs no
    L{Deferred <twisted.internet.defer.Deferred>} per item (the fast way for
    many small items)::

        d = stream.consume(rows.append)     # fires with the result at the end

    As an L{IPushProducer <twisted.internet.interfaces.IPushProducer>}, it
    stops taking items (and so stops the server, once the window is used) on
    L{pauseProducing}, until L{resumeProducing}; L{stopProducing} cancels it.

    The server sends no more items than the stream's window ahead of what
    was taken: a consumer that stops taking holds the server's memory for
    this stream at the window, never the whole stream.

    @ivar result: the handler's final value, once the stream has ended
        without error (L{None} before).
    @ivar ended: whether the stream's end (or error) has come.
    """

    def __init__(
        self, method: str, take: Callable[[], None], cancel: Callable[[], None]
    ) -> None:
        """
        @param take: called each time the consumer takes an item, so that
            the server may send another.
        @param cancel: asks for the stream to stop (see L{cancel}).
        """
        self.method = method
        self.result: Any = None
        self.ended = False
        self._take = take
        self._cancel = cancel
        self._items: deque[Any] = deque()
        self._waiting: Deferred[Any] | None = None
        self._failure: Failure | None = None
        self._consumer: Callable[[Any], object] | None = None
        self._done: Deferred[Any] | None = None
        self._paused = False

    def __repr__(self) -> str:
        state = "ended" if self.ended else "open"
        return f"<RpcStream {self.method} {state}, {len(self._items)} items waiting>"

    def __aiter__(self) -> RpcStream:
        return self

    def __anext__(self) -> Deferred[Any]:
        return self.next()

    def next(self) -> Deferred[Any]:
        """
        The next item.

        @return: a L{Deferred <twisted.internet.defer.Deferred>} that
            fires with the next item, or fails with L{StopAsyncIteration}
            after the last one, or with the stream's error (a
            L{RemoteError}, L{CallLost} when its connection was lost
            mid-stream,
            L{CancelledError <twisted.internet.defer.CancelledError>} once
            cancelled) after the items that came before it.  Cancelling that
            Deferred cancels the stream.
        @raise RuntimeError: if the previous L{next} has not fired yet.
        """
        if self._waiting is not None:
            raise RuntimeError(f"{self.method}(): next() while the previous one waits")
        if self._consumer is not None:
            raise RuntimeError(f"{self.method}(): next() on a stream being consumed")
        if self._items:
            item = self._items.popleft()
            self._take()
            return succeed(item)
        if self.ended:
            return fail(self._endFailure())
        d: Deferred[Any] = Deferred(lambda d: self.cancel())
        self._waiting = d
        return d

    def consume(self, consumer: Callable[[Any], object]) -> Deferred[Any]:
        """
        Hand every item, in order, to C{consumer} as it arrives (those that
        came already first), in the reactor thread.

        @return: a L{Deferred <twisted.internet.defer.Deferred>} that
            fires with the stream's result after the last item, or fails with
            its error; cancelling it cancels the stream.  An exception
            C{consumer} raises cancels the stream and fails the Deferred with
            it.
        @raise RuntimeError: if the stream is already being consumed, or a
            L{next} waits.
        """
        if self._consumer is not None or self._waiting is not None:
            raise RuntimeError(f"{self.method}(): consumed twice")
        self._consumer = consumer
        self._done = Deferred(lambda d: self.cancel())
        done = self._done
        self._drain()
        return done

    def pauseProducing(self) -> None:
        """
        Stop handing items to the consumer (and granting the server more)
        until L{resumeProducing}.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._drain()

    def stopProducing(self) -> None:
        self.cancel()

    def _drain(self) -> None:
        """
        Hand the consumer what has come, unless paused; then the end.
        """
        consumer = self._consumer
        if consumer is None:
            return
        items = self._items
        while items and not self._paused:
            if not self._hand(consumer, items.popleft()):
                return
        if self.ended and not items:
            self._finish(self._failure)

    def _hand(self, consumer: Callable[[Any], object], item: Any) -> bool:
        """
        Give C{item} to C{consumer}; whether it took it (an exception it
        raises cancels the stream and fails L{consume}'s Deferred).
        """
        self._take()
        try:
            consumer(item)
        except BaseException:
            failure = Failure()
            self._consumer = None
            self.cancel()
            self._finish(failure)
            return False
        return True

    def _finish(self, failure: Failure | None) -> None:
        done, self._done = self._done, None
        self._consumer = None
        if done is None:
            return
        if failure is None:
            done.callback(self.result)
        else:
            done.errback(failure)

    def cancel(self) -> None:
        """
        Stop the stream: the server is told and closes the handler's
        generator; items not taken yet are dropped, and L{next} fails with
        L{CancelledError <twisted.internet.defer.CancelledError>}.
        """
        if self.ended:
            return
        self._items.clear()
        self._cancel()

    def _endFailure(self) -> Failure:
        if self._failure is not None:
            return self._failure
        return Failure(StopAsyncIteration())

    # -- what the connection reports ------------------------------------------

    def itemReceived(self, item: Any) -> None:
        """
        The server sent C{item}.
        """
        consumer = self._consumer
        if consumer is not None and not self._paused and not self._items:
            # consume()'s usual case: straight to the consumer.
            self._hand(consumer, item)
            return
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            self._items.append(item)
            if consumer is not None:
                self._drain()
        else:
            self._take()
            waiting.callback(item)

    def endReceived(self, result: Any) -> None:
        """
        The stream ended with C{result}.
        """
        self.ended = True
        self.result = result
        self._wake()

    def failed(self, failure: Failure) -> None:
        """
        The stream ended with an error, or was cancelled or lost.
        """
        self.ended = True
        if failure.check(CancelledError):
            self._items.clear()
        self._failure = failure
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(self._endFailure())
        if self._consumer is not None:
            self._drain()
