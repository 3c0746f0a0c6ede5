"""A full disk under the WAL store: ENOSPC from a write is recoverable (nothing lost, no
half record left, the same call succeeds once there is room); ENOSPC from an fsync is not
(walstore.FsyncFailed: the kernel may have dropped the pages)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import walstore
from tests.support.disks import fill, mount_tmpfs, unmount
from walstore import WalStore
from walstore.fs import OsFileSystem


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real file system that runs out of space."""
    mount = tmp_path / "disk"
    mount_tmpfs(mount, "1m")
    try:
        yield mount
    finally:
        unmount(mount)


class _WatchCuts(OsFileSystem):
    """The real file system, noting each cut: (size before, size after)."""

    def __init__(self) -> None:
        super().__init__()
        self.cuts: list[tuple[int, int]] = []

    def truncate(self, path: Path, size: int, *, writer_only: bool = False) -> None:
        self.cuts.append((path.stat().st_size, size))
        super().truncate(path, size, writer_only=writer_only)


def test_a_real_full_disk_loses_nothing_and_leaves_no_half_record(small_disk: Path) -> None:
    wal = small_disk / "wal"
    fs = _WatchCuts()
    with WalStore.open(wal, segment_size=64 << 10, fs=fs) as store:
        store.append(1, b"a" * 1000)
        first = store.flush()
        store.update_control(term=1, commit_lsn=first)
        ballast = fill(small_disk)
        with pytest.raises(walstore.DiskFullError, match="control"):
            store.update_control(term=2)
        assert store.control.term == 1  # unchanged, in memory and on disk
        assert not (wal / "control.tmp").exists()
        os.truncate(ballast, ballast.stat().st_size - 8192)  # room for part of a batch
        for i in range(20):  # more than fits: a short write, then ENOSPC
            store.append(1, bytes([i]) * 3000)
        with pytest.raises(walstore.DiskFullError, match="no space left"):
            store.flush()
        assert store.flush_lsn == first and store.durable().lsn == first
        [(before, after)] = fs.cuts
        assert before > after  # part of the batch reached the file, and was cut back
        report = walstore.verify(wal)
        assert report.sound and report.end_lsn == first  # the failed write was cut back
        ballast.unlink()
        end = store.flush()  # the same call, once there is room
        assert end == store.end_lsn == first + 20 * 3000
        store.update_control(term=2)
    report = walstore.verify(wal)
    assert report.sound and report.end_lsn == end
    with WalStore.open(wal, segment_size=64 << 10) as store:
        assert store.control.term == 2 and store.repaired_tail is None
        assert [r.payload[:1] for r in store.read(first)] == [bytes([i]) for i in range(20)]


class _SyncFull(OsFileSystem):
    """The real file system, but fsync reports ENOSPC (thin provisioning, NFS)."""

    def datasync(self, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device (injected)")


def test_enospc_from_fsync_is_fatal(tmp_path: Path) -> None:
    store = WalStore.open(tmp_path, fs=_SyncFull())
    store.append(1, b"a" * 100)
    with pytest.raises(walstore.FsyncFailed, match="restart"):
        store.flush()
    assert store.flush_lsn == 0
    store.close()


def test_enospc_from_the_control_files_fsync_is_fatal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with WalStore.open(tmp_path) as store:
        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(walstore.FsyncFailed, match="fsync failed"):
            store.update_control(term=5)
        monkeypatch.undo()
        assert store.control.term == 0
