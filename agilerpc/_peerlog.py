"""
Logging what a peer can make the server log, at a rate the peer cannot
raise: a client that sends a thousand bad frames, or opens a thousand
connections to a full server, gets a few lines and a count, not a thousand
lines.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

#: Events a peer may cause at once, and per second after that.
BURST = 10
PER_SECOND = 1.0
#: Peers remembered; the least recently seen is forgotten first.
PEERS = 4096


def _hostOf(peer: object) -> object:
    # Every connection from one host counts together: a client can open as
    # many connections as it likes.
    host = getattr(peer, "host", None)
    return host if host is not None else type(peer).__name__


class PeerLog:
    """
    Let at most C{burst} events per peer host through at once, then
    C{perSecond}, each with the number of that host's events held back
    since its last one (C{suppressed}, in the text when not 0).

    @param seconds: the clock, e.g. C{reactor.seconds}.
    """

    def __init__(
        self,
        seconds: Callable[[], float],
        burst: int = BURST,
        perSecond: float = PER_SECOND,
        peers: int = PEERS,
    ) -> None:
        self._seconds = seconds
        self._burst = burst
        self._perSecond = perSecond
        self._peers = peers
        # host -> [tokens, when they were counted, events held back]
        self._state: OrderedDict[object, list[float]] = OrderedDict()

    def allow(self, peer: object) -> int | None:
        """
        May an event of C{peer} be logged now?  L{None} if not (it is
        counted); else how many of its events were held back before it.
        """
        host = _hostOf(peer)
        now = self._seconds()
        state = self._state.get(host)
        if state is None:
            state = self._state[host] = [float(self._burst), now, 0.0]
            if len(self._state) > self._peers:
                self._state.popitem(last=False)
        else:
            self._state.move_to_end(host)
            state[0] = min(
                float(self._burst), state[0] + (now - state[1]) * self._perSecond
            )
            state[1] = now
        if state[0] < 1:
            state[2] += 1
            return None
        state[0] -= 1
        suppressed, state[2] = int(state[2]), 0.0
        return suppressed

    def emit(
        self,
        logger: Logger,
        level: LogLevel,
        format: str,
        peer: object,
        failure: Failure | None = None,
        **fields: Any,
    ) -> None:
        """
        Log C{format} at C{level} (with C{failure}, if given) for C{peer},
        if L{allow} lets it through.
        """
        suppressed = self.allow(peer)
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} more from this host were not logged)"
        if failure is None:
            logger.emit(level, format, peer=peer, suppressed=suppressed, **fields)
        else:
            logger.failure(
                format, failure, level, peer=peer, suppressed=suppressed, **fields
            )
