"""
Tests for L{agilerpc._retry}, the retry rules both clients keep: plain
numbers in, delays and decisions out, with a seeded random.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import (
    CallLost,
    CallTimeout,
    ClientClosed,
    InvalidResponse,
    MethodNotFound,
    NotIdempotent,
    RemoteError,
    RetryPolicy,
)
from agilerpc._retry import (
    checkMethods,
    describedIdempotence,
    refusal,
    retryable,
)


def noJitter(**kwargs: Any) -> RetryPolicy:
    """
    A policy whose backoffs are exact.
    """
    return RetryPolicy(jitter=0, **kwargs)


class RetryDelayTests(SynchronousTestCase):
    """
    L{RetryPolicy.retryDelay}: how many attempts, how long between them, and
    never past the deadline.
    """

    def test_defaults(self) -> None:
        """
        By default a call is sent at most 3 times, 0.05 s then 0.1 s apart
        before jitter, and backoffs double up to 1 s.
        """
        policy = RetryPolicy()
        self.assertEqual(
            (policy.maxAttempts, policy.initialBackoff, policy.maxBackoff),
            (3, 0.05, 1.0),
        )
        self.assertEqual((policy.multiplier, policy.jitter), (2.0, 0.5))
        self.assertEqual(
            repr(policy),
            "RetryPolicy(maxAttempts=3, initialBackoff=0.05, maxBackoff=1, "
            "multiplier=2, jitter=0.5)",
        )

    def test_attemptsCountTheFirst(self) -> None:
        """
        With maxAttempts=3, the first and second losses are retried, the
        third is not.
        """
        policy = noJitter()
        self.assertEqual(
            [policy.retryDelay(lost, 0.0, None) for lost in (1, 2, 3, 4)],
            [0.05, 0.1, None, None],
        )

    def test_oneAttemptNeverRetries(self) -> None:
        """
        maxAttempts=1 means the first attempt is the last.
        """
        self.assertIsNone(noJitter(maxAttempts=1).retryDelay(1, 0.0, None))

    def test_backoffDoublesToItsCap(self) -> None:
        """
        Each backoff is the one before times the multiplier, at most
        maxBackoff.
        """
        policy = noJitter(maxAttempts=100, initialBackoff=0.05, maxBackoff=0.3)
        self.assertEqual(
            [policy.retryDelay(lost, 0.0, None) for lost in range(1, 7)],
            [0.05, 0.1, 0.2, 0.3, 0.3, 0.3],
        )
        # A huge attempt number neither overflows nor passes the cap.
        self.assertEqual(policy.retryDelay(99, 0.0, None), 0.3)

    def test_multiplier(self) -> None:
        """
        The multiplier may be 1: a constant backoff.
        """
        policy = noJitter(maxAttempts=4, multiplier=1)
        self.assertEqual(
            [policy.retryDelay(lost, 0.0, None) for lost in (1, 2, 3)],
            [0.05, 0.05, 0.05],
        )

    def test_jitterDrawsFromTheUpperFraction(self) -> None:
        """
        With jitter j, a backoff b becomes b * (1 - j * r), r drawn from
        the policy's random: the same seed gives the same delays, and every
        delay lies in [b * (1 - j), b].
        """
        draws = [0.0, 0.5, 0.999]
        policy = RetryPolicy(jitter=0.5, random=iter(draws).__next__)
        self.assertEqual(
            [policy.backoff(1) for _ in draws],
            [0.05, 0.05 * 0.75, 0.05 * (1 - 0.5 * 0.999)],
        )
        seeded = [
            RetryPolicy(maxAttempts=10, random=random.Random(7).random)
            for _ in range(2)
        ]
        first = [seeded[0].retryDelay(n, 0.0, None) for n in range(1, 10)]
        second = [seeded[1].retryDelay(n, 0.0, None) for n in range(1, 10)]
        self.assertEqual(first, second)
        for lost, delay in enumerate(first, 1):
            assert delay is not None
            base = min(0.05 * 2 ** (lost - 1), 1.0)
            self.assertTrue(base / 2 <= delay <= base, (lost, delay))

    def test_fullJitter(self) -> None:
        """
        jitter=1 draws anything from 0 to the backoff.
        """
        policy = RetryPolicy(jitter=1, random=lambda: 0.75)
        self.assertAlmostEqual(policy.backoff(2), 0.025)

    def test_deadlineStopsRetries(self) -> None:
        """
        A retry that would be due at or after the call's deadline is not
        made; one due before it is.
        """
        policy = noJitter()
        self.assertEqual(policy.retryDelay(1, 10.0, 10.06), 0.05)
        self.assertIsNone(policy.retryDelay(1, 10.0, 10.05))
        self.assertIsNone(policy.retryDelay(1, 10.0, 10.01))
        self.assertIsNone(policy.retryDelay(1, 11.0, 10.0))

    def test_giveUp(self) -> None:
        """
        L{RetryPolicy.giveUp} says how many times the call was sent and
        whether attempts or the deadline ran out.
        """
        policy = noJitter()
        self.assertEqual(
            policy.giveUp(3),
            "it was sent 3 times, each time lost in flight, the most its retry "
            "policy allows (maxAttempts=3)",
        )
        self.assertEqual(
            policy.giveUp(1),
            "it was sent once, each time lost in flight, and its deadline would "
            "pass before it could be sent again",
        )

    def test_invalid(self) -> None:
        """
        Values out of range are refused with a ValueError naming them.
        """
        cases: list[dict[str, Any]] = [
            {"maxAttempts": 0},
            {"maxAttempts": 2.0},
            {"maxAttempts": True},
            {"initialBackoff": 0},
            {"initialBackoff": float("nan")},
            {"maxBackoff": 0.01},
            {"maxBackoff": float("inf")},
            {"multiplier": 0.5},
            {"jitter": -0.1},
            {"jitter": 1.5},
        ]
        for kwargs in cases:
            with self.assertRaises(ValueError, msg=str(kwargs)) as caught:
                RetryPolicy(**kwargs)
            self.assertIn(next(iter(kwargs)), str(caught.exception))


class RetryableTests(SynchronousTestCase):
    """
    L{retryable}: only a loss in flight may be retried.
    """

    def test_lossOnly(self) -> None:
        """
        CallLost is retryable; an error the server sent, a timeout, an
        undecodable answer and a closed client are not.
        """
        self.assertTrue(retryable(CallLost("lost")))
        for error in [
            RemoteError("ValueError", "no"),
            MethodNotFound("nope"),
            CallTimeout("late"),
            InvalidResponse("garbled"),
            ClientClosed("closed"),
            ConnectionResetError(),
        ]:
            self.assertFalse(retryable(error), error)


class MethodSetTests(SynchronousTestCase):
    """
    L{checkMethods}: a client's set of idempotent method names.
    """

    def test_anyIterable(self) -> None:
        """
        Any iterable of str makes a frozenset.
        """
        self.assertEqual(checkMethods(["a", "b", "a"]), frozenset({"a", "b"}))
        self.assertEqual(checkMethods(()), frozenset())

    def test_stringRefused(self) -> None:
        """
        A bare string (whose letters would become the set) is refused, and
        so are names that are not strings.
        """
        for bad in ["get", b"get", [1], 5]:
            with self.assertRaises(TypeError, msg=repr(bad)):
                checkMethods(bad)


class DescribedTests(SynchronousTestCase):
    """
    What a client learns from C{system.describe}, and the refusal it allows.
    """

    def test_described(self) -> None:
        """
        Each method described with a boolean C{idempotent} is kept; one
        without the key (an earlier server), or with another type, is
        unknown; a result that is not a map says nothing.
        """
        self.assertEqual(
            describedIdempotence(
                {
                    "get": {"idempotent": True},
                    "put": {"idempotent": False},
                    "old": {"doc": ""},
                    "odd": {"idempotent": 1},
                    "bad": [],
                    7: {"idempotent": True},
                }
            ),
            {"get": True, "put": False},
        )
        self.assertEqual(describedIdempotence([1, 2]), {})

    def test_refusal(self) -> None:
        """
        Only a method the server described as not idempotent is refused.
        """
        described = {"get": True, "put": False}
        self.assertIsNone(refusal("get", described))
        self.assertIsNone(refusal("unknown", described))
        error = refusal("put", described)
        assert isinstance(error, NotIdempotent)
        self.assertIn("put()", str(error))
        self.assertIn("not idempotent; it was not sent", str(error))
