"""
What a server reports about its connections, and who listens: the
L{IServerObserver} interface the server protocol calls, the call log of
C{--log-calls}, and L{observing}, which gives the protocol one observer (or
none) for any number of them.

The protocol calls an observer at each event; without one it pays a single
C{is None} check per call, so metrics and logs cost nothing when they are off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger
from zope.interface import Interface, implementer

_log = Logger(namespace="agilerpc.server")


class IServerObserver(Interface):
    """
    Told what a server's connections do.  Every method is called in the
    reactor thread and must return quickly: it runs on the server's hot path.

    C{connection} is the L{agilerpc.RpcServerProtocol} concerned: its C{peer},
    C{inFlight} and C{factory} may be read, nothing changed.
    """

    def connectionOpened(connection: Any) -> None:
        """
        A connection was made (including one refused as busy).
        """

    def connectionClosed(connection: Any) -> None:
        """
        A connection is closed.
        """

    def callFinished(
        connection: Any, msgid: int, method: str, outcome: str, duration: float
    ) -> None:
        """
        A call was answered: C{outcome} is C{"ok"} or the error type sent
        (C{"MethodNotFound"}, C{"Cancelled"}, C{"ValueError"}...), C{duration}
        the seconds from its dispatch to its answer.
        """

    def frameRefused(connection: Any, reason: str) -> None:
        """
        A frame (or, for C{ServerBusy}, the connection) was refused:
        C{reason} is C{InvalidRequest}, C{MessageTooLarge}, C{Unauthorized}
        or C{ServerBusy}.
        """

    def goawaySent(connection: Any, reason: str) -> None:
        """
        A goaway was sent with C{reason} (C{idle} when the keepalive fired).
        """

    def connectionAborted(connection: Any, reason: str) -> None:
        """
        The server aborted the connection for going over a limit: C{reason}
        is C{UnsentLimit} (it held more than C{maxUnsent} of responses its
        client had not read) or C{UnsentTotalLimit} (all connections held
        more than C{maxUnsentTotal}, and it held the most).
        """

    def itemSent(connection: Any, msgid: int, method: str) -> None:
        """
        One item of the stream C{msgid} (a call of C{method}) was written;
        the stream's end is a C{callFinished}.
        """

    def receivedBytes(connection: Any, count: int) -> None:
        """
        C{count} bytes were read from the connection.
        """

    def sentBytes(connection: Any, count: int) -> None:
        """
        C{count} bytes, frame headers included, were written to it.
        """


@implementer(IServerObserver)
class IgnoringObserver:
    """
    An observer that ignores every event: a base for observers that hear
    only some of them (L{CallLog} and the tracing observer hear finished
    calls), which override those.
    """

    def connectionOpened(self, connection: Any) -> None:
        pass

    def connectionClosed(self, connection: Any) -> None:
        pass

    def callFinished(
        self, connection: Any, msgid: int, method: str, outcome: str, duration: float
    ) -> None:
        pass

    def frameRefused(self, connection: Any, reason: str) -> None:
        pass

    def goawaySent(self, connection: Any, reason: str) -> None:
        pass

    def connectionAborted(self, connection: Any, reason: str) -> None:
        pass

    def itemSent(self, connection: Any, msgid: int, method: str) -> None:
        pass

    def receivedBytes(self, connection: Any, count: int) -> None:
        pass

    def sentBytes(self, connection: Any, count: int) -> None:
        pass


class CallLog(IgnoringObserver):
    """
    Logs every call (peer, method, msgid, outcome, duration) at debug level:
    C{twistd agilerpc --log-calls}.
    """

    def callFinished(
        self, connection: Any, msgid: int, method: str, outcome: str, duration: float
    ) -> None:
        _log.debug(
            "{peer}: {method} #{msgid}: {outcome} in {duration:.6f}s",
            peer=connection.peer,
            method=method,
            msgid=msgid,
            outcome=outcome,
            duration=duration,
        )


@implementer(IServerObserver)
class _Observers:
    """
    Several observers told the same events in order.
    """

    def __init__(self, observers: Sequence[IServerObserver]) -> None:
        self.observers = tuple(observers)

    def connectionOpened(self, connection: Any) -> None:
        for o in self.observers:
            o.connectionOpened(connection)

    def connectionClosed(self, connection: Any) -> None:
        for o in self.observers:
            o.connectionClosed(connection)

    def callFinished(
        self, connection: Any, msgid: int, method: str, outcome: str, duration: float
    ) -> None:
        for o in self.observers:
            o.callFinished(connection, msgid, method, outcome, duration)

    def frameRefused(self, connection: Any, reason: str) -> None:
        for o in self.observers:
            o.frameRefused(connection, reason)

    def goawaySent(self, connection: Any, reason: str) -> None:
        for o in self.observers:
            o.goawaySent(connection, reason)

    def connectionAborted(self, connection: Any, reason: str) -> None:
        for o in self.observers:
            o.connectionAborted(connection, reason)

    def itemSent(self, connection: Any, msgid: int, method: str) -> None:
        for o in self.observers:
            o.itemSent(connection, msgid, method)

    def receivedBytes(self, connection: Any, count: int) -> None:
        for o in self.observers:
            o.receivedBytes(connection, count)

    def sentBytes(self, connection: Any, count: int) -> None:
        for o in self.observers:
            o.sentBytes(connection, count)


def observing(observers: Sequence[IServerObserver]) -> IServerObserver | None:
    """
    One observer telling all of C{observers}: L{None} for none (the protocol
    then skips every report), the observer itself for one.
    """
    if not observers:
        return None
    if len(observers) == 1:
        return observers[0]
    return _Observers(observers)
