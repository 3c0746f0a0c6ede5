from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

import walstore
import walstore.fs
from consensus import Membership, RecordKind
from walstore import Control, WalStore


def test_append_flush_read_reopen(tmp_path: Path) -> None:
    with WalStore.open(tmp_path, segment_size=4096) as store:
        ends = [store.append(1, b"a" * 100, gtid="0-1-1"), store.append(1, b"b" * 50)]
        assert ends == [100, 150]
        assert store.flush_lsn == 0 and store.end_lsn == 150
        # unflushed records are readable
        assert [r.payload for r in store.read(0)] == [b"a" * 100, b"b" * 50]
        assert store.flush() == 150
        store.append(2, b"c" * 10, kind=RecordKind.TERM_START)
    with WalStore.open(tmp_path, segment_size=4096) as store:
        # the unflushed record was never written
        assert store.end_lsn == 150 and store.last_term == 1
        records = list(store.read(0))
        assert [(r.lsn, r.term, r.gtid) for r in records] == [(0, 1, "0-1-1"), (100, 1, None)]
        assert store.gtid_end_lsn("0-1-1") == 100
        assert list(store.read(100)) == records[1:]
        assert list(store.read(150)) == []


def test_segments_roll_over_and_are_named_by_first_lsn(tmp_path: Path) -> None:
    with WalStore.open(tmp_path, segment_size=1000) as store:
        for i in range(40):
            store.append(1, bytes([i]) * 100)
        store.flush()
        names = sorted(p.name for p in tmp_path.glob("*.seg"))
        assert len(names) >= 4
        assert names[0] == "0000000000000000.seg"
        firsts = [int(n.split(".")[0], 16) for n in names]
        assert firsts == sorted(firsts)
        assert all(os.path.getsize(tmp_path / n) <= 1000 for n in names)
    with WalStore.open(tmp_path, segment_size=1000) as store:
        assert [r.payload[0] for r in store.read(0)] == list(range(40))


def test_read_from_non_boundary_and_max_bytes(tmp_path: Path) -> None:
    with WalStore.open(tmp_path) as store:
        for _ in range(10):
            store.append(1, b"x" * 100)
        store.flush()
        with pytest.raises(walstore.NotARecordBoundary):
            list(store.read(50))
        with pytest.raises(walstore.NotARecordBoundary):
            list(store.read(2000))
        assert len(list(store.read(0, max_bytes=250))) == 3
        assert len(list(store.read(0, max_bytes=1))) == 1


def test_term_at(tmp_path: Path) -> None:
    with WalStore.open(tmp_path) as store:
        store.append(1, b"a" * 10)
        store.append(3, b"b" * 10)
        store.append(3, b"c" * 10)
        assert [store.term_at(x) for x in (0, 10, 20, 30, 5, 40)] == [0, 1, 3, 3, None, None]
        assert store.term_history == ((1, 0), (3, 10))
        with pytest.raises(walstore.WalError, match="below"):
            store.append(2, b"d")


def test_limits_and_bad_input(tmp_path: Path) -> None:
    with WalStore.open(tmp_path, max_record_size=1000) as store:
        with pytest.raises(walstore.RecordTooLarge, match="split"):
            store.append(1, b"x" * 1001)
        with pytest.raises(ValueError):
            store.append(1, b"")
    with pytest.raises(walstore.WalError, match="no such"):
        WalStore.open(tmp_path / "absent", create=False)


def test_truncate_drops_suffix_and_gtids(tmp_path: Path) -> None:
    with WalStore.open(tmp_path, segment_size=500) as store:
        ends = [store.append(1, b"x" * 100, gtid=f"0-1-{i}") for i in range(12)]
        store.flush()
        store.append(2, b"y" * 100, gtid="0-1-99")  # unflushed, also cut
        store.truncate(ends[4])
        assert store.end_lsn == store.flush_lsn == ends[4]
        assert store.gtid_end_lsn("0-1-5") is None and store.gtid_end_lsn("0-1-4") == ends[4]
        assert store.last_gtids() == {0: "0-1-4"} and store.last_term == 1
        store.append(2, b"z" * 100, gtid="0-2-1")
        store.flush()
    with WalStore.open(tmp_path, segment_size=500) as store:
        assert [r.payload[:1] for r in store.read(0)] == [b"x"] * 5 + [b"z"]
        assert store.last_gtids() == {0: "0-2-1"}


def test_truncate_refuses_committed_history(tmp_path: Path) -> None:
    with WalStore.open(tmp_path) as store:
        ends = [store.append(1, b"x" * 10) for _ in range(5)]
        store.flush()
        store.save_control(Control(term=1, commit_lsn=ends[2]))
        with pytest.raises(walstore.TruncateBelowCommit):
            store.truncate(ends[1])
        store.truncate(ends[2])
        assert store.end_lsn == ends[2]


def test_remove_segments_keeps_term_history(tmp_path: Path) -> None:
    with WalStore.open(tmp_path, segment_size=400) as store:
        for term in (1, 2, 3):
            for _ in range(6):
                store.append(term, b"x" * 100)
        store.flush()
        end = store.end_lsn
        removed = store.remove_segments_before(1000)
        assert removed >= 2
        first = store.first_lsn
        assert 0 < first <= 1000
        term_first = store.term_at(first)
        with pytest.raises(walstore.NotARecordBoundary):
            list(store.read(0))
    with WalStore.open(tmp_path, segment_size=400) as store:
        assert store.first_lsn == first and store.end_lsn == end
        assert store.term_at(first) == term_first
        assert store.term_at(end) == 3


def test_control_round_trip_atomic(tmp_path: Path) -> None:
    control = Control(
        term=7,
        vote="a2",
        commit_lsn=0,
        membership=Membership(generation=3, voters=frozenset({"a1", "a2", "a3"}),
                              learners=frozenset({"a4"})),
    )
    with WalStore.open(tmp_path) as store:
        store.save_control(control)
        assert not (tmp_path / "control.tmp").exists()
    with WalStore.open(tmp_path) as store:
        assert store.control.term == 7 and store.control.vote == "a2"
        assert store.control.membership == control.membership


async def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    with WalStore.open(tmp_path) as store:
        results: list[tuple[int, int]] = []

        async def writer(i: int) -> None:
            for j in range(20):
                end = store.append(1, f"{i}-{j}".encode() * 20)
                results.append((end, await store.sync()))

        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(writer, i)
        assert len(results) == 320
        assert all(flushed >= end for end, flushed in results)
        assert store.fsync_count < len(results) / 2
        assert store.flush_lsn == store.end_lsn
        count = sum(1 for _ in store.read(0))
    with WalStore.open(tmp_path) as store:
        assert sum(1 for _ in store.read(0)) == count == 320


async def test_reads_and_appends_during_sync(tmp_path: Path) -> None:
    with WalStore.open(tmp_path, segment_size=2000) as store:
        async with trio.open_nursery() as nursery:
            for i in range(50):
                store.append(1, bytes([i]) * 97)
                nursery.start_soon(store.sync)
                assert [r.payload[0] for r in store.read(0)] == list(range(i + 1))
        await store.wait_idle()
        assert store.flush_lsn == store.end_lsn
    with WalStore.open(tmp_path, segment_size=2000) as store:
        assert [r.payload[0] for r in store.read(0)] == list(range(50))


def test_disk_full_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    with WalStore.open(tmp_path) as store:
        store.append(1, b"a" * 100)
        store.flush()
        store.append(1, b"b" * 100)
        real_pwrite, real_pwritev = os.pwrite, os.pwritev

        def short(fd: int, parts: list[bytes], offset: int) -> int:
            data = b"".join(parts)
            return real_pwrite(fd, data[: len(data) // 2], offset)  # a partial write ...

        def full(fd: int, data: bytes, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")  # ... then ENOSPC

        monkeypatch.setattr(os, "pwritev", short)
        monkeypatch.setattr(os, "pwrite", full)
        with pytest.raises(walstore.DiskFullError, match="no space left"):
            store.flush()
        assert store.flush_lsn == 100 and store.end_lsn == 200
        monkeypatch.setattr(os, "pwrite", real_pwrite)
        assert store.flush() == 200  # the short write is finished piece by piece
        monkeypatch.setattr(os, "pwritev", real_pwritev)
        store.append(1, b"c" * 100)
        assert store.flush() == 300
    with WalStore.open(tmp_path) as store:
        assert store.repaired_tail is None
        assert [r.payload[:1] for r in store.read(0)] == [b"a", b"b", b"c"]


def test_last_binlog_meta_follows_appends_truncation_and_reopen(tmp_path: Path) -> None:
    with WalStore.open(tmp_path, segment_size=4096) as store:
        assert store.last_binlog_meta() is None
        store.append(1, b"fde", kind=RecordKind.BINLOG_META)
        store.append(1, b"t" * 10, gtid="0-1-1")
        second = store.append(1, b"gtid-list", kind=RecordKind.BINLOG_META)
        store.append(1, b"t" * 10, gtid="0-1-2")
        meta = store.last_binlog_meta()
        assert meta is not None and meta.payload == b"gtid-list" and meta.end_lsn == second
        store.flush()
    with WalStore.open(tmp_path, segment_size=4096) as store:
        meta = store.last_binlog_meta()
        assert meta is not None and meta.payload == b"gtid-list"
        store.truncate(second - len(b"gtid-list"))  # cuts the newer metadata record
        meta = store.last_binlog_meta()
        assert meta is not None and meta.payload == b"fde"


async def test_update_control_from_a_thread_keeps_newer_fields(tmp_path: Path) -> None:
    with WalStore.open(tmp_path) as store:
        store.append(1, b"x" * 100)
        store.flush()
        store.update_control(term=3, vote="a2", commit_lsn=100)
        # a commit-only update computed earlier, landing later from a worker thread
        control = await trio.to_thread.run_sync(lambda: store.update_control(commit_lsn=40))
        assert (control.term, control.vote, control.commit_lsn) == (3, "a2", 100)
    with WalStore.open(tmp_path) as store:
        assert (store.control.term, store.control.commit_lsn) == (3, 100)


def test_gtids_at_gives_the_position_at_an_lsn_per_domain(tmp_path: Path) -> None:
    with WalStore.open(tmp_path, segment_size=500) as store:
        ends = {}
        for gtid in ("1-1-1", "0-1-1", "0-1-2", "0-1-3", "2-1-7", "0-1-4", "2-1-8"):
            ends[gtid] = store.append(1, b"x" * 100, gtid=gtid)
        store.append(1, b"meta", kind=RecordKind.BINLOG_META)
        store.flush()
        assert store.gtids_at(ends["0-1-3"]) == {1: "1-1-1", 0: "0-1-3"}
        assert store.gtids_at(ends["0-1-3"] - 1) == {1: "1-1-1", 0: "0-1-2"}
        assert store.gtids_at(ends["2-1-8"]) == store.last_gtids() == {
            1: "1-1-1", 0: "0-1-4", 2: "2-1-8"}
        assert store.gtids_at(0) == {}
        # Domain 1's only GTID lives in a removed segment: still part of every position.
        store.update_control(commit_lsn=store.end_lsn)
        store.remove_segments_before(ends["0-1-3"])
        assert store.gtid_end_lsn("1-1-1") is None
        assert store.gtids_at(ends["0-1-4"]) == {1: "1-1-1", 0: "0-1-4", 2: "2-1-7"}


class _FailingSync(walstore.fs.OsFileSystem):
    """The real file system, but the next fdatasync fails with EIO."""

    fail_next = False

    def datasync(self, path: Path) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().datasync(path)


def test_a_failed_fsync_is_fatal_and_reports_nothing_durable(tmp_path: Path) -> None:
    """EIO from fdatasync: the kernel may have dropped the dirty pages, so the batch is
    never reported durable, its bytes are cut, and the caller is told to restart."""
    fs = _FailingSync()
    store = WalStore.open(tmp_path, fs=fs)
    first = store.append(1, b"a" * 100)
    store.flush()
    store.append(1, b"b" * 100)
    fs.fail_next = True
    with pytest.raises(walstore.FsyncFailed, match="restart"):
        store.flush()
    assert store.flush_lsn == first and store.durable().lsn == first
    store.close()
    with WalStore.open(tmp_path) as reopened:  # what a restart finds: the synced records
        assert reopened.end_lsn == first
        assert [r.payload for r in reopened.read(0)] == [b"a" * 100]


def test_empty_segment_files_left_by_a_failed_batch_are_dropped_at_open(
        tmp_path: Path) -> None:
    """A batch that created new segment files and failed (ENOSPC, EIO) is cut back to
    nothing; if the process dies before the retry, the empty files remain. Their names
    must not read as missing history at the next open (found by the simulator)."""
    with WalStore.open(tmp_path, segment_size=200) as store:
        for i in range(5):
            store.append(1, bytes([i]) * 100)
        end = store.flush()
    for first in (end, end + 150):  # what the failed batch had created
        (tmp_path / f"{first:016x}.seg").write_bytes(b"")
    with WalStore.open(tmp_path, segment_size=200) as store:
        assert store.end_lsn == end
        assert len(list(store.read(0))) == 5
    assert not (tmp_path / f"{end:016x}.seg").exists()
