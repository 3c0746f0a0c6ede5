"""walstore against an in-memory model, under hypothesis: appends, syncs, truncations,
commit advances, segment removal, clean reopens and crashes with torn tails."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from consensus import Entry, RecordKind
from walstore import Control, WalStore
from walstore._record import encode

SEGMENT = 700


class WalModel(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="walmodel-"))
        self.store = WalStore.open(self.dir, segment_size=SEGMENT)
        self.records: list[tuple[int, bytes, str | None]] = []  # (term, payload, gtid)
        self.first = 0  # index of the first record not removed
        self.flushed = 0  # records durable
        self.commit = 0  # records committed
        self.term = 1
        self.seq = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def ends(self) -> list[int]:
        out, lsn = [], 0
        for _term, payload, _gtid in self.records:
            lsn += len(payload)
            out.append(lsn)
        return out

    def lsn_at(self, count: int) -> int:
        return self.ends()[count - 1] if count else 0

    @rule(size=st.integers(1, 300), new_term=st.booleans(), with_gtid=st.booleans())
    def append(self, size: int, new_term: bool, with_gtid: bool) -> None:
        if new_term:
            self.term += 1
        self.seq += 1
        gtid = f"0-1-{self.seq}" if with_gtid else None
        payload = bytes([self.seq % 256]) * size
        end = self.store.append(self.term, payload, gtid=gtid, kind=RecordKind.DATA)
        self.records.append((self.term, payload, gtid))
        assert end == self.lsn_at(len(self.records))

    @rule()
    def flush(self) -> None:
        assert self.store.flush() == self.lsn_at(len(self.records))
        self.flushed = len(self.records)

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        keep = data.draw(st.integers(max(self.commit, self.first), len(self.records)))
        self.store.truncate(self.lsn_at(keep))
        del self.records[keep:]
        self.flushed = min(self.flushed, keep)

    @precondition(lambda self: self.flushed > self.commit)
    @rule(data=st.data())
    def advance_commit(self, data: st.DataObject) -> None:
        self.commit = data.draw(st.integers(self.commit, self.flushed))
        self.store.save_control(Control(term=self.term, commit_lsn=self.lsn_at(self.commit)))

    @rule(data=st.data())
    def remove_segments(self, data: st.DataObject) -> None:
        upto = data.draw(st.integers(self.first, self.flushed))
        self.store.remove_segments_before(self.lsn_at(upto))
        first_lsn = self.store.first_lsn
        while self.first < len(self.records) and self.lsn_at(self.first) < first_lsn:
            self.first += 1
        assert self.lsn_at(self.first) == first_lsn

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = WalStore.open(self.dir, segment_size=SEGMENT)
        del self.records[self.flushed :]

    @rule(extra=st.integers(1, 3), cut=st.integers(1, 400))
    def crash_with_torn_tail(self, extra: int, cut: int) -> None:
        """Unsynced records partly reached the disk before a crash."""
        self.store.close()
        del self.records[self.flushed :]
        lsn = self.lsn_at(len(self.records))
        frames = b""
        torn = []
        for i in range(extra):
            frame = encode(Entry(lsn, self.term, RecordKind.DATA, b"t" * (50 + i)))
            torn.append((len(frames) + len(frame), (self.term, b"t" * (50 + i), None)))
            frames += frame
            lsn += 50 + i
        written = min(cut, len(frames) - 1)
        segs = sorted(self.dir.glob("*.seg"))
        if segs:
            with open(segs[-1], "ab") as handle:
                handle.write(frames[:written])
            # whole records that reached the disk before the crash are kept
            self.records += [rec for frame_end, rec in torn if frame_end <= written]
            self.flushed = len(self.records)
        self.store = WalStore.open(self.dir, segment_size=SEGMENT)
        self.term = max(self.term, self.store.last_term)

    @rule(data=st.data())
    def read_from(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(self.first, len(self.records)))
        got = list(self.store.read(self.lsn_at(start)))
        want = self.records[start:]
        assert [(r.term, r.payload, r.gtid) for r in got] == want
        assert [r.end_lsn for r in got] == self.ends()[start:]

    @invariant()
    def positions(self) -> None:
        if not hasattr(self, "store"):
            return
        assert self.store.end_lsn == self.lsn_at(len(self.records))
        assert self.store.flush_lsn == self.lsn_at(self.flushed)
        assert self.store.first_lsn == self.lsn_at(self.first)
        if self.records:
            assert self.store.last_term == self.records[-1][0]
            assert self.store.term_at(self.store.end_lsn) == self.records[-1][0]
        seen: dict[int, str] = {}
        for index, (_t, _p, gtid) in enumerate(self.records):
            if gtid is not None:
                seen[0] = gtid
                if index >= self.first:
                    assert self.store.gtid_end_lsn(gtid) == self.lsn_at(index + 1)
        assert self.store.last_gtids() == seen


WalModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWalModel = WalModel.TestCase
