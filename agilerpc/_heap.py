"""
Giving the memory of buffered input back to the system once it is freed.

Unfinished frames are held as the chunks the transport read (64 KiB each),
allocated from the C heap in the order they arrive, interleaved across
connections and with everything else the server allocates meanwhile.  When
those connections go, glibc keeps the freed chunks for reuse rather than
returning them: the heap cannot shrink past a block still in use above them.
C{malloc_trim(0)} returns every free page in the heap, wherever it lies.

It costs time in proportion to the heap (tens of milliseconds for a GiB),
and every page it returns must be faulted in again when used, so it runs
only after a large amount of buffered input was freed, once the amount
held has settled below half of its peak.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

if TYPE_CHECKING:
    from ._budget import Budget

#: Buffered input held at once, in bytes, after which its release trims.
TRIM_THRESHOLD = 64 * 1024 * 1024
#: Seconds the amount held must stay below half its peak before a trim.
TRIM_DELAY = 1.0


def _findTrim() -> Callable[[], object] | None:
    """
    glibc's C{malloc_trim(0)}, or L{None} on a C library without it.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover (not glibc)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


#: The trim of this process's C library, if it has one.
TRIM = _findTrim()


class HeapTrimmer:
    """
    Trims the heap once the buffered input a L{Budget} counts fell from a
    peak of at least C{threshold} bytes to half of it, and stayed there for
    C{delay} seconds (the connections of a burst close over a while; input
    that comes back meanwhile reuses the memory instead).

    @ivar peak: the most held at once since the last trim.
    @ivar trims: how many trims ran.
    """

    def __init__(
        self,
        budget: Budget[Any],
        reactor: IReactorTime,
        trim: Callable[[], object] | None = TRIM,
        threshold: int = TRIM_THRESHOLD,
        delay: float = TRIM_DELAY,
    ) -> None:
        self.budget = budget
        self.reactor = reactor
        self.trim = trim
        self.threshold = threshold
        self.delay = delay
        self.peak = 0
        self.trims = 0
        self._call: IDelayedCall | None = None

    def held(self) -> None:
        """
        The budget's total grew.
        """
        total = self.budget.total
        if total > self.peak:
            self.peak = total

    def released(self) -> None:
        """
        The budget's total fell: trim soon if it fell far enough.
        """
        if (
            self._call is None
            and self.peak >= self.threshold
            and self.budget.total <= self.peak // 2
            and self.trim is not None
        ):
            self._call = self.reactor.callLater(self.delay, self._trim)

    def _trim(self) -> None:
        self._call = None
        total = self.budget.total
        if total > self.peak // 2:
            # Held again meanwhile: the memory is in use.
            return
        assert self.trim is not None
        self.trim()
        self.trims += 1
        self.peak = total

    def stop(self) -> None:
        """
        Cancel a trim that is due.
        """
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
