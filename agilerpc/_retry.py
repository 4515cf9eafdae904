"""
Safe retries of idempotent calls, without I/O: L{RetryPolicy}, and what a
server's C{system.describe} says of idempotence.

Both clients keep these rules (the Twisted one waits with
C{reactor.callLater}, the blocking one with C{time.sleep}); none of them
reads a clock or a socket:

 - Only a call its caller declared idempotent is ever retried (never by
   default), and only after its connection was lost, or the server broke the
   protocol, while it was in flight (L{CallLost}): the failures that say
   nothing of whether it ran.  An answer is never retried, an error the
   server sent included (it ran, or the server refused it, and would
   again), and neither is a call that ran out of time (L{CallTimeout}), a
   response that could not be decoded (it would be the same again) or a
   closed client.
 - A call is sent at most C{maxAttempts} times in all that may have run it
   (3 by default).  A resend after a goaway is not counted: the server
   proved that the earlier attempt did not run (gRPC's "transparent
   retry").
 - Before each retry the call waits: C{initialBackoff} (0.05 s), times
   C{multiplier} (2) for each retry before it, at most C{maxBackoff} (1 s),
   each drawn at random from the upper C{jitter} fraction of that (by
   default from half of it to all of it), so that clients that lost the
   same server at once do not all come back at once.
 - A retry that could not be sent before the call's deadline is not made:
   the call fails with L{CallLost} at once rather than with a timeout
   later.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._errors import CallLost, NotIdempotent


class RetryPolicy:
    """
    How often, and how soon, an idempotent call lost in flight is sent
    again (see the module docstring).

    @ivar maxAttempts: the most times a call is sent that may run it, the
        first included; 1 never retries.
    @ivar initialBackoff: seconds before the first retry, before jitter.
    @ivar multiplier: what each retry's backoff is multiplied by for the
        next.
    @ivar maxBackoff: the longest backoff, before jitter.
    @ivar jitter: the fraction of each backoff drawn at random, from 0 (the
        backoff exactly) to 1 (anything from 0 to the backoff).
    @ivar random: returns a float in [0, 1); tests pass a seeded
        C{random.Random().random}.
    """

    __slots__ = (
        "initialBackoff",
        "jitter",
        "maxAttempts",
        "maxBackoff",
        "multiplier",
        "random",
    )

    def __init__(
        self,
        maxAttempts: int = 3,
        initialBackoff: float = 0.05,
        maxBackoff: float = 1.0,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        random: Callable[[], float] = random.random,
    ) -> None:
        """
        @raise ValueError: if a value is out of its range: C{maxAttempts} an
            int of at least 1, C{initialBackoff} above 0, C{maxBackoff} at
            least C{initialBackoff}, C{multiplier} at least 1, C{jitter}
            from 0 to 1.
        """
        if type(maxAttempts) is not int or maxAttempts < 1:
            raise ValueError(f"maxAttempts must be an int >= 1, not {maxAttempts!r}")
        if not _finite(initialBackoff) or initialBackoff <= 0:
            raise ValueError(f"initialBackoff must be > 0, not {initialBackoff!r}")
        if not _finite(maxBackoff) or maxBackoff < initialBackoff:
            raise ValueError(
                f"maxBackoff must be >= initialBackoff ({initialBackoff!r}), "
                f"not {maxBackoff!r}"
            )
        if not _finite(multiplier) or multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, not {multiplier!r}")
        if not _finite(jitter) or not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be from 0 to 1, not {jitter!r}")
        self.maxAttempts = maxAttempts
        self.initialBackoff = float(initialBackoff)
        self.maxBackoff = float(maxBackoff)
        self.multiplier = float(multiplier)
        self.jitter = float(jitter)
        self.random = random

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(maxAttempts={self.maxAttempts}, "
            f"initialBackoff={self.initialBackoff:g}, maxBackoff={self.maxBackoff:g}, "
            f"multiplier={self.multiplier:g}, jitter={self.jitter:g})"
        )

    def backoff(self, lost: int) -> float:
        """
        The seconds to wait before sending a call again after its attempt
        number C{lost} (1 for the first) was lost, jitter included.
        """
        # min() before the power could overflow: lost is small anyway.
        base = self.initialBackoff * self.multiplier ** min(lost - 1, 64)
        base = min(base, self.maxBackoff)
        return base * (1 - self.jitter * self.random())

    def retryDelay(self, lost: int, now: float, expires: float | None) -> float | None:
        """
        After attempt number C{lost} of a call (1 for the first) was lost in
        flight at C{now}: the seconds to wait before sending it again, or
        L{None} when it must not be (see L{giveUp} for why).

        @param expires: when the call's deadline passes, on the same clock as
            C{now}, or L{None}.
        """
        if lost >= self.maxAttempts:
            return None
        delay = self.backoff(lost)
        if expires is not None and now + delay >= expires:
            return None
        return delay

    def giveUp(self, lost: int) -> str:
        """
        Why a call whose attempt C{lost} was lost is not sent again, for
        the end of its L{CallLost} message (after L{retryDelay} said
        L{None}).
        """
        if lost >= self.maxAttempts:
            return (
                f"it was sent {times(lost)}, each time lost in flight, the most "
                f"its retry policy allows (maxAttempts={self.maxAttempts})"
            )
        return (
            f"it was sent {times(lost)}, each time lost in flight, and its "
            "deadline would pass before it could be sent again"
        )


def _finite(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def times(n: int) -> str:
    """
    C{"once"}, or C{"n times"}, for messages.
    """
    return "once" if n == 1 else f"{n} times"


def retryable(error: BaseException) -> bool:
    """
    May a call of an idempotent method that failed with C{error} be sent
    again?  Only when its connection was lost (or the server broke the
    protocol) with it in flight: L{CallLost}.
    """
    return isinstance(error, CallLost)


def checkMethods(methods: object, name: str = "idempotent") -> frozenset[str]:
    """
    A client's set of idempotent method names, from any iterable of str.

    @raise TypeError: if it is a str itself (a set of its letters is never
        what was meant), or holds something else than str.
    """
    if isinstance(methods, (str, bytes)):
        raise TypeError(f"{name} must be a collection of method names, not a string")
    if not isinstance(methods, Iterable):
        raise TypeError(f"{name} must be a collection of method names, not {methods!r}")
    names: set[str] = set()
    for method in methods:
        if type(method) is not str:
            raise TypeError(f"{name} must hold method names (str), not {method!r}")
        names.add(method)
    return frozenset(names)


def describedIdempotence(description: object) -> dict[str, bool]:
    """
    From C{system.describe}'s result (PROTOCOL.md 7.2), which methods the
    server says are idempotent (C{True}) or not (C{False}); a method
    described without the key (an earlier server) is left out: unknown.
    """
    if not isinstance(description, Mapping):
        return {}
    described: dict[str, bool] = {}
    for name, entry in description.items():
        if isinstance(name, str) and isinstance(entry, Mapping):
            flag: Any = entry.get("idempotent")
            if type(flag) is bool:
                described[name] = flag
    return described


def refusal(method: str, described: Mapping[str, bool]) -> NotIdempotent | None:
    """
    The error that refuses a call of C{method} asking to be retried, when
    the server described it as not idempotent; else L{None}.

    @param described: from L{describedIdempotence}.
    """
    if described.get(method) is not False:
        return None
    return NotIdempotent(
        f"{method}(): the call asks to be retried after a loss (idempotent), "
        "but the server's system.describe says this method is not "
        "idempotent; it was not sent"
    )
