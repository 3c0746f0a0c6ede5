"""Quorum arithmetic, kept apart so tests can check it and break it on purpose."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

QuorumRule = Callable[[Mapping[str, int], frozenset[str]], int]


def majority(voters: Iterable[str]) -> int:
    return len(set(voters)) // 2 + 1


def committed_lsn(flushed: Mapping[str, int], voters: frozenset[str]) -> int:
    """The highest LSN that a majority of VOTERS has durably flushed."""
    positions = sorted((flushed.get(v, 0) for v in voters), reverse=True)
    if not positions:
        return 0
    return positions[majority(voters) - 1]


def vote_won(granted: Iterable[str], voters: frozenset[str]) -> bool:
    return len(set(granted) & voters) >= majority(voters)
