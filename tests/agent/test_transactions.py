from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agent.binlog.events import GTID, QUERY, XA_PREPARE_LOG, Event, make_event
from agent.binlog.transactions import Transaction, TransactionGrouper, whole_transactions
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


def _gtid(seq: int, flags: int = 0) -> Event:
    return Event.parse(make_event(GTID, 1, struct.pack("<QIB", seq, 0, flags) + b"\x00" * 6,
                                  log_pos=100 + seq, flags=0))


def _query(text: bytes) -> Event:
    body = struct.pack("<IIBHH", 1, 0, 2, 0, 0) + b"xa\x00" + text
    return Event.parse(make_event(QUERY, 1, body, log_pos=200, flags=0))


def test_xa_transactions_end_at_prepare_and_at_commit_or_rollback() -> None:
    """XA PREPARE ends with an XA_PREPARE_LOG event (0xA6), and its XA COMMIT or XA
    ROLLBACK is a transaction of its own: a grouper that missed them held the prepared
    transaction open for ever (the primary waited for its ACK) and then failed on the
    next GTID."""
    grouper = TransactionGrouper()
    prepare = [_gtid(5), _query(b"XA START X'7831',X'',1"),
               Event.parse(make_event(0x1E, 1, b"rows", log_pos=300, flags=0)),
               _query(b"XA END X'7831',X'',1"),
               Event.parse(make_event(XA_PREPARE_LOG, 1, b"\x00" * 8, log_pos=400, flags=0))]
    got = [grouper.feed(e) for e in prepare]
    assert got[:-1] == [None] * 4 and got[-1] is not None and got[-1].gtid == "0-1-5"
    for seq, text in ((6, b"XA COMMIT X'7831',X'',1"), (7, b"XA ROLLBACK X'7832',X'',1")):
        assert grouper.feed(_gtid(seq)) is None
        done = grouper.feed(_query(text))
        assert done is not None and done.gtid == f"0-1-{seq}"
    assert not grouper.in_transaction
