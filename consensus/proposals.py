"""What a leader may tell its proposers: which of their proposals are committed.

A proposal is committed when the commit LSN reaches its end *and its entry is still the
one at that position*. The second half matters to a deposed leader: one step from a newer
leader can both cut its uncommitted suffix and commit the newer leader's entries past the
old proposals' end LSNs. So a driver reports, for each Ready, first `truncated(lsn)`, then
`committed(commit_lsn)`, then `dropped()` once the node no longer leads; the tracker
answers with the proposals whose outcome is now settled.
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Generic, TypeVar

T = TypeVar("T")


class PendingProposals(Generic[T]):
    def __init__(self) -> None:
        self._items: list[tuple[int, int, T]] = []  # (end LSN, arrival, token), sorted
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, end_lsn: int, token: T) -> None:
        bisect.insort(self._items, (end_lsn, next(self._arrivals), token),
                      key=lambda item: item[:2])

    def truncated(self, lsn: int) -> list[T]:
        """The log was cut at LSN: proposals ending beyond it are gone (not committed)."""
        index = bisect.bisect_right(self._items, (lsn, math.inf), key=lambda item: item[:2])
        gone, self._items = self._items[index:], self._items[:index]
        return [token for _end, _n, token in gone]

    def committed(self, commit_lsn: int) -> list[T]:
        """The commit LSN reached COMMIT_LSN: proposals ending at or below it are committed."""
        index = bisect.bisect_right(self._items, (commit_lsn, math.inf),
                                    key=lambda item: item[:2])
        done, self._items = self._items[:index], self._items[index:]
        return [token for _end, _n, token in done]

    def dropped(self) -> list[T]:
        """Leadership is lost: every pending proposal's outcome is unknown from here."""
        pending, self._items = self._items, []
        return [token for _end, _n, token in pending]
