"""
A budget of bytes shared by every connection of a server.

What the connections hold together (unfinished frames they have read,
responses they have not sent yet) has a limit; past it, the connections
holding the most lose their share, as redis 7's C{maxmemory-clients} evicts
the clients using the most memory.  The budget only counts and chooses: the
caller ends what it chose (refuses its frame, closes its connection).
"""

from __future__ import annotations

from typing import Generic, TypeVar

_Holder = TypeVar("_Holder")


class Budget(Generic[_Holder]):
    """
    Bytes held by holders (connections), with a limit on their total.

    @ivar limit: the most all holders may hold together; L{None}: no limit.
    @ivar total: what they hold now.
    @ivar evictions: holders chosen by L{add} to give up their share so far.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("a budget's limit must be >= 1 or None")
        self.limit = limit
        self.total = 0
        self.evictions = 0
        self._held: dict[_Holder, int] = {}

    def __len__(self) -> int:
        """
        How many holders hold something.
        """
        return len(self._held)

    def held(self, holder: _Holder) -> int:
        """
        What C{holder} holds.
        """
        return self._held.get(holder, 0)

    def add(self, holder: _Holder, count: int) -> list[_Holder]:
        """
        C{holder} now holds C{count} bytes more.

        @return: the holders that must give up what they hold to bring the
            total back within the limit, largest first (ties: the one that
            started holding first); often C{holder} itself.  Their shares
            are already released: the caller must make each one stop holding
            (drop its buffer, close its connection) and not L{release} it.
        """
        held = self._held
        held[holder] = held.get(holder, 0) + count
        self.total += count
        limit = self.limit
        if limit is None or self.total <= limit:
            return []
        evicted = []
        while self.total > limit:
            largest = max(held, key=held.__getitem__)
            self.total -= held.pop(largest)
            evicted.append(largest)
        self.evictions += len(evicted)
        return evicted

    def release(self, holder: _Holder, count: int | None = None) -> None:
        """
        C{holder} holds C{count} bytes less (L{None}: nothing any more).
        """
        held = self._held
        current = held.get(holder, 0)
        if count is None or count >= current:
            count = current
            held.pop(holder, None)
        else:
            held[holder] = current - count
        self.total -= count
