"""How far behind the leader each member is, in seconds (sans-I/O; time comes in as NOW).

A follower's byte lag is exact on the leader (log end − match LSN), but its lag in time
is not known from positions alone. The leader keeps, per member, a *target*: its log end
at some moment T. Once the member's match LSN reaches the target, the member is known to
hold everything the leader held at T — its *synced* time — and a new target (the end now)
is set. The lag is then `now − synced` while the member is behind the end, and 0 when it
matches it. Because the target moves only when reached, the figure is an upper bound:
at most one replication round trip (append, fsync, ack) above the true age of the
member's position, with constant memory and O(members) work per pass of the node loop.

A member behind when this agent became leader counts from that moment (nothing older is
known here), so right after an election the figure is a lower bound for such a member.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class HasMatch(Protocol):
    @property
    def match_lsn(self) -> int: ...


class MemberLag:
    def __init__(self) -> None:
        self._target: dict[str, tuple[int, float]] = {}  # member -> (leader's end, when)
        self._synced: dict[str, float] = {}  # member -> a time whose whole log it holds

    def reset(self) -> None:
        """Leadership lost (or a new term): nothing known about anyone."""
        self._target.clear()
        self._synced.clear()

    def observe(self, now: float, end_lsn: int, progress: Mapping[str, HasMatch]) -> None:
        """One look at every member's match LSN against the leader's log END_LSN (PROGRESS:
        the core's per-follower progress, read as it is: this runs on every loop pass)."""
        for member, member_progress in progress.items():
            match = member_progress.match_lsn
            target = self._target.get(member)
            if target is None:
                self._synced[member] = now
                self._target[member] = (end_lsn, now)
            elif match >= target[0]:
                self._synced[member] = target[1]
                self._target[member] = (end_lsn, now)
        if len(self._target) > len(progress):  # a member was removed
            for gone in self._target.keys() - progress.keys():
                del self._target[gone]
                del self._synced[gone]

    def seconds(self, member: str, now: float, end_lsn: int, match_lsn: int) -> float | None:
        """MEMBER's lag in seconds; None when it is not tracked (not a follower here)."""
        synced = self._synced.get(member)
        if synced is None:
            return None
        return 0.0 if match_lsn >= end_lsn else max(0.0, now - synced)
