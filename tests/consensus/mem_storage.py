"""An in-memory log for scripted consensus scenarios (tests/consensus): the core's
LogStorage with a durable prefix. The simulator runs the real WAL store instead."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from consensus import Entry


class MemStorage:
    """An in-memory log with a durable prefix: what a crash keeps."""

    def __init__(self) -> None:
        self.log: list[Entry] = []
        self.ends: list[int] = []
        self.synced = 0  # entries durable

    def last_lsn(self) -> int:
        return self.ends[-1] if self.ends else 0

    def last_term(self) -> int:
        return self.log[-1].term if self.log else 0

    def term_at(self, lsn: int) -> int | None:
        if lsn == 0:
            return 0
        index = bisect.bisect_left(self.ends, lsn)
        if index < len(self.ends) and self.ends[index] == lsn:
            return self.log[index].term
        return None

    def entries(self, from_lsn: int, max_bytes: int) -> list[Entry]:
        index = 0 if from_lsn == 0 else bisect.bisect_left(self.ends, from_lsn) + 1
        out: list[Entry] = []
        total = 0
        for entry in self.log[index:]:
            if out and total + len(entry.payload) > max_bytes:
                break
            out.append(entry)
            total += len(entry.payload)
        return out

    def term_history(self) -> Sequence[tuple[int, int]]:
        history: list[tuple[int, int]] = []
        for entry in self.log:
            if not history or history[-1][0] != entry.term:
                history.append((entry.term, entry.lsn))
        return history

    def append(self, entry: Entry) -> None:
        assert entry.lsn == self.last_lsn(), "entry does not continue the log"
        self.log.append(entry)
        self.ends.append(entry.end_lsn)

    def truncate(self, lsn: int) -> None:
        index = 0 if lsn == 0 else bisect.bisect_left(self.ends, lsn) + 1
        assert lsn == 0 or self.ends[index - 1] == lsn, "truncation off a boundary"
        del self.log[index:]
        del self.ends[index:]
        self.synced = min(self.synced, index)

    @property
    def synced_lsn(self) -> int:
        return self.ends[self.synced - 1] if self.synced else 0
