"""The core's view of its log: the caller's storage, minus a pending truncation, plus
entries not yet handed out in a Ready.

Contract with the caller: after `Node.ready()` returns, the caller applies `truncate_to`
and then `entries` to its storage before the next call into the node. So once handed
out, entries are read back from storage.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Protocol

from consensus.messages import Entry, TermStart


class LogStorage(Protocol):
    def last_lsn(self) -> int: ...

    def last_term(self) -> int: ...

    def term_at(self, lsn: int) -> int | None:
        """Term of the entry ending at LSN; 0 for LSN 0; None if LSN is not a boundary."""
        ...

    def entries(self, from_lsn: int, max_bytes: int) -> list[Entry]:
        """Entries from FROM_LSN (a boundary), payload total ≤ MAX_BYTES but at least one."""
        ...

    def term_history(self) -> Sequence[tuple[int, int]]:
        """(term, start LSN) of each run of equal-term entries, ascending."""
        ...


class RaftLog:
    def __init__(self, storage: LogStorage) -> None:
        self.storage = storage
        self.truncated_to: int | None = None  # pending truncation, not yet applied by the caller
        self.unstable: list[Entry] = []  # appended here, not yet handed out

    def _stored_last(self) -> int:
        last = self.storage.last_lsn()
        return last if self.truncated_to is None else min(last, self.truncated_to)

    def last_lsn(self) -> int:
        return self.unstable[-1].end_lsn if self.unstable else self._stored_last()

    def last_term(self) -> int:
        if self.unstable:
            return self.unstable[-1].term
        term = self.term_at(self._stored_last())
        return 0 if term is None else term

    def term_at(self, lsn: int) -> int | None:
        if self.unstable and lsn > self.unstable[0].lsn:
            index = bisect.bisect_left(self.unstable, lsn, key=lambda e: e.end_lsn)
            if index < len(self.unstable) and self.unstable[index].end_lsn == lsn:
                return self.unstable[index].term
            return None
        if lsn > self._stored_last():
            return None
        return self.storage.term_at(lsn)

    def entries(self, from_lsn: int, max_bytes: int) -> list[Entry]:
        out: list[Entry] = []
        stored_last = self._stored_last()
        if from_lsn < stored_last:
            for entry in self.storage.entries(from_lsn, max_bytes):
                if entry.end_lsn > stored_last:
                    break
                out.append(entry)
            if out:
                from_lsn = out[-1].end_lsn
                max_bytes -= sum(len(e.payload) for e in out)
        if from_lsn >= stored_last and (max_bytes > 0 or not out):
            for entry in self.unstable:
                if entry.lsn < from_lsn:
                    continue
                if out and max_bytes <= 0:
                    break
                out.append(entry)
                max_bytes -= len(entry.payload)
        return out

    def term_history(self) -> list[TermStart]:
        stored_last = self._stored_last()
        history = [
            TermStart(term, start)
            for term, start in self.storage.term_history()
            if start < stored_last
        ]
        for entry in self.unstable:
            if not history or history[-1].term != entry.term:
                history.append(TermStart(entry.term, entry.lsn))
        return history

    def append(self, entry: Entry) -> None:
        assert entry.lsn == self.last_lsn(), (entry.lsn, self.last_lsn())
        self.unstable.append(entry)

    def truncate(self, lsn: int) -> None:
        """Drop everything after LSN (a boundary)."""
        if self.unstable and lsn >= self.unstable[0].lsn:
            self.unstable = [e for e in self.unstable if e.end_lsn <= lsn]
            return
        self.unstable = []
        if lsn < self._stored_last():
            self.truncated_to = lsn

    def take(self) -> tuple[int | None, list[Entry]]:
        truncated, entries = self.truncated_to, self.unstable
        self.truncated_to, self.unstable = None, []
        return truncated, entries
