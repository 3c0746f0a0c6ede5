"""Adapter: a walstore.WalStore seen as the consensus core's LogStorage.

The core reads the log synchronously (etcd-raft's Storage); reads of recent records are
served from the store's memory or the page cache, so they do not stall the event loop.
Stored records are `consensus.Entry` values already: nothing is converted.
"""

from __future__ import annotations

import consensus
import walstore


class WalLogStorage:
    def __init__(self, store: walstore.WalStore) -> None:
        self.store = store

    def last_lsn(self) -> int:
        return self.store.end_lsn

    def last_term(self) -> int:
        return self.store.last_term

    def term_at(self, lsn: int) -> int | None:
        return self.store.term_at(lsn)

    def term_history(self) -> tuple[tuple[int, int], ...]:
        return self.store.term_history

    def entries(self, from_lsn: int, max_bytes: int) -> list[consensus.Entry]:
        return list(self.store.read(from_lsn, max_bytes=max_bytes))

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
