from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agent.binlog.events import Event
from agent.binlog.transactions import Transaction, whole_transactions
from consensus import RecordKind
from walstore import WalStore


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


@given(st.lists(st.integers(min_value=23, max_value=300), min_size=1, max_size=12),
       st.integers(min_value=1, max_value=700))
def test_pieces_cut_a_transaction_without_losing_or_reordering_bytes(
    sizes: list[int], piece_size: int
) -> None:
    events = [Event(0, 0x1E, 1, n, 0, 0, bytes([i % 251]) * n) for i, n in enumerate(sizes)]
    transaction = Transaction("0-1-1", events)
    pieces = transaction.pieces(piece_size)
    assert b"".join(pieces) == transaction.raw
    assert all(len(p) == piece_size for p in pieces[:-1]) and 0 < len(pieces[-1]) <= piece_size
