from __future__ import annotations

from pathlib import Path

from agent.transactions import whole_transactions
from walstore import RecordKind, WalStore


def test_pieces_join_and_a_term_change_drops_a_fragment(tmp_path: Path) -> None:
    with WalStore.open(tmp_path) as store:
        store.append(1, b"small", gtid="0-1-1")
        store.append(1, b"aa", continued=True)
        store.append(1, b"bb", gtid="0-1-2")
        store.append(1, b"cc", continued=True)  # a leader died mid-transaction ...
        store.append(2, b"term 2", kind=RecordKind.TERM_START)
        store.append(2, b"cc", continued=True)  # ... and the next one stored it whole
        end = store.append(2, b"dd", gtid="0-1-3")
        store.append(2, b"uncommitted", gtid="0-1-4")
        got = list(whole_transactions(store.read(0), upto_lsn=end))
    assert got == [("0-1-1", b"small"), ("0-1-2", b"aabb"), ("0-1-3", b"ccdd")]
