"""Adapter: a walstore.WalStore seen as the consensus core's LogStorage.

The core reads the log synchronously (etcd-raft's Storage); reads of recent records are
served from the store's memory or the page cache, so they do not stall the event loop.
"""

from __future__ import annotations

import consensus
import walstore


def entry_of(record: walstore.Record) -> consensus.Entry:
    return consensus.Entry(
        lsn=record.lsn,
        term=record.term,
        kind=consensus.RecordKind(int(record.kind)),
        payload=record.payload,
        gtid=record.gtid,
        continued=record.continued,
    )


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
        return [entry_of(r) for r in self.store.read(from_lsn, max_bytes=max_bytes)]

    def append(self, entry: consensus.Entry) -> None:
        end = self.store.append(
            entry.term,
            entry.payload,
            kind=walstore.RecordKind(int(entry.kind)),
            gtid=entry.gtid,
            continued=entry.continued,
        )
        # The core assigns LSNs; the store must agree or the two logs have diverged.
        if end != entry.lsn + len(entry.payload):
            raise RuntimeError(f"LSN mismatch: store ended at {end}, core expected {entry.end_lsn}")
