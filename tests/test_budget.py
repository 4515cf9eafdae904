"""
Tests for L{agilerpc._budget}: bytes held across connections, and who gives
them up past the limit.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from agilerpc._budget import Budget


class BudgetTests(SynchronousTestCase):
    """
    Tests for L{Budget}.
    """

    def test_withinLimit(self) -> None:
        """
        Adding within the limit evicts nothing and counts per holder.
        """
        budget: Budget[str] = Budget(100)
        self.assertEqual(budget.add("a", 60), [])
        self.assertEqual(budget.add("b", 40), [])
        self.assertEqual(
            (budget.total, budget.held("a"), budget.held("b")), (100, 60, 40)
        )
        self.assertEqual(len(budget), 2)
        self.assertEqual(budget.evictions, 0)

    def test_overLimitEvictsLargest(self) -> None:
        """
        Past the limit, the largest holder is evicted (even when another
        holder's addition went over), and its share released.
        """
        budget: Budget[str] = Budget(100)
        budget.add("big", 70)
        budget.add("small", 20)
        self.assertEqual(budget.add("small", 20), ["big"])
        self.assertEqual(budget.total, 40)
        self.assertEqual(budget.held("big"), 0)
        self.assertEqual(budget.evictions, 1)

    def test_evictsOneToBeWithin(self) -> None:
        """
        One eviction always brings the total back within the limit: the
        largest holder holds at least what the last addition added.
        """
        budget: Budget[str] = Budget(100)
        budget.add("a", 30)
        budget.add("b", 35)
        budget.add("c", 30)
        self.assertEqual(budget.add("d", 80), ["d"])
        self.assertEqual(budget.add("e", 5), [])
        self.assertEqual(budget.total, 100)
        self.assertEqual(budget.add("a", 40), ["a"])
        self.assertEqual(budget.total, 70)

    def test_tieEvictsFirstHolder(self) -> None:
        """
        Between equal holders, the one that started holding first goes.
        """
        budget: Budget[str] = Budget(10)
        budget.add("first", 6)
        self.assertEqual(budget.add("second", 6), ["first"])

    def test_release(self) -> None:
        """
        L{Budget.release} takes back part of a holder's share, or all of it.
        """
        budget: Budget[str] = Budget(None)
        budget.add("a", 10)
        budget.release("a", 4)
        self.assertEqual((budget.held("a"), budget.total), (6, 6))
        budget.release("a", 100)
        self.assertEqual((budget.held("a"), budget.total, len(budget)), (0, 0, 0))
        budget.add("a", 3)
        budget.release("a")
        budget.release("nobody")
        self.assertEqual((budget.total, len(budget)), (0, 0))

    def test_noLimit(self) -> None:
        """
        Without a limit nothing is ever evicted.
        """
        budget: Budget[str] = Budget(None)
        self.assertEqual(budget.add("a", 2**40), [])

    def test_badLimit(self) -> None:
        """
        A limit below 1 is refused.
        """
        self.assertRaises(ValueError, Budget, 0)
