"""A follower catching up is fed from records read ahead in a worker thread: after the
first batch from disk, the core's batches come from memory, identical to the log, and the
read-ahead never reaches past what is committed."""

from __future__ import annotations

import random
from pathlib import Path

import trio

import consensus
import walstore
from agent.node import log_storage
from agent.node.log_storage import WalLogStorage

DATA = consensus.RecordKind.DATA


def filled_store(path: Path, records: int) -> walstore.WalStore:
    store = walstore.WalStore.open(path)
    rng = random.Random(5)
    for _ in range(records):
        store.append(1, rng.randbytes(rng.randrange(1000, 60_000)), kind=DATA)
    store.flush()
    return store


async def test_catch_up_reads_come_from_the_read_ahead(tmp_path: Path) -> None:
    store = filled_store(tmp_path / "wal", 1500)  # ~45 MB
    committed = store.end_lsn - 1_000_000  # the tail is not committed yet
    committed = max(e.end_lsn for e in store.read(0) if e.end_lsn <= committed)
    storage = WalLogStorage(store)
    got: list[consensus.Entry] = []
    lsn = 0
    while lsn < store.end_lsn:
        batch = storage.entries(lsn, 1 << 20)  # what the core asks for a lagging follower
        got += batch
        lsn = batch[-1].end_lsn
        start = storage.read_ahead_from(committed)
        if start is not None:  # what the node loop does: read in a thread, keep on the loop
            ahead = await trio.to_thread.run_sync(storage.read_ahead, start, committed)
            assert all(e.end_lsn <= committed for e in ahead)
            storage.keep(ahead)
        assert storage._ahead_bytes <= log_storage.CACHE_BYTES + 60_000
    assert got == list(store.read(0))
    assert storage.cache_hits > 5 * storage.disk_reads, (storage.cache_hits, storage.disk_reads)
    # past the committed end every batch is read from the store itself
    assert storage.read_ahead_from(committed) is None
