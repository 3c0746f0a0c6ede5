"""Errors raised by walstore. Every one is a WalError; corruption names the file and offset."""

from __future__ import annotations

from pathlib import Path


class WalError(Exception):
    """Base of every walstore error."""


class CorruptionError(WalError):
    """Damage the store refuses to repair: history would be lost."""

    def __init__(self, path: Path | str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt at byte offset {offset}: {reason}")
        self.path = Path(path)
        self.offset = offset
        self.reason = reason


class RecordTooLarge(WalError):
    """A payload above the configured maximum record size: the caller must split it."""


class NotARecordBoundary(WalError):
    """An LSN that does not fall between two records."""


class TruncateBelowCommit(WalError):
    """Truncation would remove committed history, which never changes."""


class DiskFullError(WalError):
    """ENOSPC or EDQUOT from a write (of segments or the control file): nothing was lost
    or changed — appends stay pending, the old control file stays — and the same call can
    be retried once there is room. ENOSPC from an fsync is FsyncFailed instead."""


class SyncInProgress(WalError):
    """An operation that needs the files at rest was called while a sync was running."""


class FsyncFailed(WalError):
    """Writing or syncing a batch failed (EIO and the like). What reached the disk is
    unknown — the kernel may have dropped the dirty pages — so nothing of the batch is
    reported durable, and the caller must restart and recover from what the disk holds
    (PostgreSQL's answer to fsyncgate), never retry on the same page cache."""
