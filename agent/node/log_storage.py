"""Adapter: a walstore.WalStore seen as the consensus core's LogStorage.

The core reads the log synchronously (etcd-raft's Storage). Recent records come from the
store's memory or the page cache. A follower catching up asks for older records, batch
after batch: each disk read notes where it ended (`wanted`), and the node loop reads the
next few MiB of *committed* records ahead in a worker thread (`read_ahead`, `keep`), so the
following batches come from memory instead of stalling the event loop on the disk.
Committed records never change, which is what makes reading them in a thread safe and the
copies always current. Stored records are `consensus.Entry` values already.
"""

from __future__ import annotations

import consensus
import walstore

READ_AHEAD_BYTES = 4 << 20  # records read ahead per round
CACHE_BYTES = 16 << 20  # read-ahead kept at most (one contiguous run of records)


class WalLogStorage:
    def __init__(self, store: walstore.WalStore) -> None:
        self.store = store
        self._ahead: dict[int, consensus.Entry] = {}  # committed records by LSN, in order
        self._ahead_start = self._ahead_end = 0  # the run [start, end) held in _ahead
        self._ahead_bytes = 0
        self.wanted: int | None = None  # where the last read of older records ended
        self.cache_hits = 0
        self.disk_reads = 0

    def last_lsn(self) -> int:
        return self.store.end_lsn

    def last_term(self) -> int:
        return self.store.last_term

    def term_at(self, lsn: int) -> int | None:
        return self.store.term_at(lsn)

    def term_history(self) -> tuple[tuple[int, int], ...]:
        return self.store.term_history

    def entries(self, from_lsn: int, max_bytes: int) -> list[consensus.Entry]:
        if self._ahead_start <= from_lsn < self._ahead_end:
            out = self._from_cache(from_lsn, max_bytes)
            self.cache_hits += 1
        else:
            out = list(self.store.read(from_lsn, max_bytes=max_bytes))
            self.disk_reads += 1
        if out:
            self.wanted = out[-1].end_lsn
        return out

    def _from_cache(self, lsn: int, max_bytes: int) -> list[consensus.Entry]:
        out: list[consensus.Entry] = []
        size = 0
        while lsn < self._ahead_end and (not out or size < max_bytes):
            entry = self._ahead[lsn]
            out.append(entry)
            size += len(entry.payload)
            lsn = entry.end_lsn
        return out

    # ---- read-ahead: the loop asks where, a worker thread reads, the loop keeps ----------

    def read_ahead_from(self, committed: int) -> int | None:
        """Where a read-ahead should start, given the LSN up to which records are committed
        and on disk; None when none is needed (caught up, or enough read ahead)."""
        wanted = self.wanted
        if wanted is None or wanted >= committed:
            return None
        if self._ahead_start <= wanted < self._ahead_end:
            if self._ahead_end >= committed or self._ahead_end - wanted > READ_AHEAD_BYTES // 2:
                return None
            return self._ahead_end
        return wanted

    def read_ahead(self, start: int, committed: int) -> list[consensus.Entry]:
        """In a worker thread: committed records from START (a boundary), about
        READ_AHEAD_BYTES of them."""
        return list(self.store.read(start, max_bytes=READ_AHEAD_BYTES, until_lsn=committed))

    def keep(self, entries: list[consensus.Entry]) -> None:
        """On the loop: hold what a read-ahead read, extending the run or replacing it."""
        if not entries:
            return
        if entries[0].lsn != self._ahead_end or not self._ahead:
            self._ahead.clear()
            self._ahead_bytes = 0
            self._ahead_start = entries[0].lsn
        for entry in entries:
            self._ahead[entry.lsn] = entry
            self._ahead_bytes += len(entry.payload)
        self._ahead_end = entries[-1].end_lsn
        while self._ahead_bytes > CACHE_BYTES and len(self._ahead) > 1:
            lsn = self._ahead_start
            entry = self._ahead.pop(lsn)
            self._ahead_bytes -= len(entry.payload)
            self._ahead_start = entry.end_lsn

    def append(self, entry: consensus.Entry) -> None:
        end = self.store.append(
            entry.term,
            entry.payload,
            kind=entry.kind,
            gtid=entry.gtid,
            continued=entry.continued,
        )
        # The core assigns LSNs; the store must agree or the two logs have diverged.
        if end != entry.end_lsn:
            raise RuntimeError(f"LSN mismatch: store ended at {end}, core expected {entry.end_lsn}")
