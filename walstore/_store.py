"""WalStore: one timeline's log on disk.

Appends go to memory and are written by `sync()`/`flush()` in one write per segment and one
fdatasync per batch (group commit). The writing runs in a worker thread under `sync()`, so
the trio loop keeps appending and reading meanwhile; everything else (the index, the GTID
map, the list of unwritten records) is touched only on the caller's thread.

Invariants:
  flush_lsn <= end_lsn; every record ending at or below flush_lsn is in its segment file
  and indexed; records above flush_lsn are also kept in `_mem` and served from there.
  commit LSN (control) <= any truncation point.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import trio

from consensus.messages import Entry, RecordKind
from walstore import _record
from walstore._control import CONTROL_NAME, Control, read_control, write_control
from walstore._segment import (
    ScanResult,
    Segment,
    parse_segment_name,
    scan_segment,
    segment_name,
)
from walstore.errors import (
    CorruptionError,
    DiskFullError,
    FsyncFailed,
    NotARecordBoundary,
    RecordTooLarge,
    SyncInProgress,
    TruncateBelowCommit,
    WalError,
)
from walstore.fs import FileSystem, OsFileSystem
from walstore.gtid import domain_of

log = logging.getLogger("binkeeper.walstore")

DEFAULT_SEGMENT_SIZE = 16 << 20
DEFAULT_MAX_RECORD_SIZE = 8 << 20


@dataclass(frozen=True)
class RepairedTail:
    path: Path
    offset: int
    dropped_bytes: int
    reason: str


# (segment, bytes of a frame): a small frame is one part; a large one is two (header and
# payload), so its payload is never copied on its way to disk
_Pending = tuple[Segment, bytes]
_JOIN_BELOW = 64 << 10


@dataclass
class _Write:
    segment: Segment
    offset: int  # file offset of the first byte
    parts: list[bytes]
    size: int


@dataclass
class _Batch:
    writes: list[_Write]  # in file order
    end_lsn: int


class Durable(NamedTuple):
    """A durability report that names what it covers: the log is on disk up to LSN, where
    the record ending at LSN has TERM, as of truncation EPOCH. Reports cross task and
    thread boundaries before anyone acts on them; one from an older epoch is about a log
    that has since been cut, and must be dropped (the stale-flush acknowledgement)."""

    lsn: int
    term: int
    epoch: int


class _SyncRound:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None


class WalStore:
    def __init__(self, path: Path, segment_size: int, max_record_size: int,
                 fs: FileSystem | None = None) -> None:
        self.path = path
        self.fs: FileSystem = fs if fs is not None else OsFileSystem()
        self.segment_size = segment_size
        self.max_record_size = max_record_size
        self.control = Control()
        self.repaired_tail: RepairedTail | None = None
        self.fsync_count = 0
        self.fsync_seconds = 0.0  # total time spent in fdatasync, for status and metrics
        self._segments: list[Segment] = []
        self._firsts: list[int] = []  # first LSN of each segment, for bisect
        self._term_changes: list[tuple[int, int]] = []  # (term, start LSN), ascending
        self._gtids: dict[str, int] = {}
        self._last_gtids: dict[int, str] = {}
        self._removed_gtids: dict[int, str] = {}  # newest GTID per domain in removed segments
        self._meta_lsns: list[int] = []  # LSNs of BINLOG_META records, ascending (few)
        self._group_lsns: list[int] = []  # LSNs of GROUP records, ascending (very few)
        self._end_lsn = 0
        self._flush_lsn = 0
        self.epoch = 0  # truncations since open: a durability report is valid in its epoch only
        self._last_term = 0
        self._pending: list[_Pending] = []  # appended, not yet handed to a writer
        self._mem: list[Entry] = []  # every record above flush_lsn, in order
        self._sync_round: _SyncRound | None = None
        self._writing: set[Path] = set()  # segments with a write handle open (writer side)
        self._control_lock = threading.Lock()  # the control file is written from threads too
        self._closed = False

    # ---- opening ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
        create: bool = True,
        fs: FileSystem | None = None,
    ) -> WalStore:
        """Open (or create) the WAL in PATH; FS is the file system (the real one unless a
        simulator passes its own)."""
        directory = Path(path)
        fs = fs if fs is not None else OsFileSystem()
        if not fs.is_dir(directory):
            if not create:
                raise WalError(f"{directory}: no such WAL directory")
            fs.make_dir(directory)
        store = cls(directory, segment_size, max_record_size, fs)
        store._load(repair=True)
        return store

    def _load(self, *, repair: bool) -> None:
        self.control = read_control(self.fs, self.path) or Control()
        names = sorted(
            n for n in self.fs.list_dir(self.path) if parse_segment_name(n) is not None
        )
        segments = [
            Segment(self.path / name, first)
            for name in names
            if (first := parse_segment_name(name)) is not None
        ]
        # Empty segment files at the end hold no records: a batch that created them failed
        # (full disk, EIO) and the process died before retrying. They are dropped, or the
        # next segment's name would look like missing history (found by the simulator).
        while len(segments) > 1 and not self.fs.read_file(segments[-1].path):
            empty = segments.pop()
            if repair:
                log.warning("%s: removing an empty segment file left by a failed write",
                            empty.path)
                self.fs.unlink(empty.path)
                self.fs.sync_dir(self.path)
        # The term history of records below the first segment (removed) comes from control.
        first_lsn = segments[0].first_lsn if segments else 0
        self._term_changes = [(t, s) for t, s in self.control.term_history if s < first_lsn]
        self._removed_gtids = {domain_of(g): g for g in self.control.removed_gtids}
        self._last_gtids = dict(self._removed_gtids)
        term = self._last_term = self._term_changes[-1][0] if self._term_changes else 0
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            if index > 0 and segment.first_lsn != segments[index - 1].end_lsn:
                raise CorruptionError(
                    segment.path,
                    0,
                    f"segment starts at LSN {segment.first_lsn} but the previous one ends at "
                    f"{segments[index - 1].end_lsn}: history is missing",
                )
            data = self.fs.read_file(segment.path)
            result = scan_segment(
                segment,
                data,
                prev_term=term,
                max_payload=self.max_record_size,
                on_record=self._index_record,
            )
            term = self._last_term
            if result.error_offset is None:
                continue
            if not last or result.valid_after_error is not None:
                detail = (
                    f"; a valid record follows at byte offset {result.valid_after_error}, "
                    "so this is damage inside the log, not a torn tail"
                    if last
                    else " (sealed segment)"
                )
                raise CorruptionError(
                    segment.path, result.error_offset, f"{result.error_reason}{detail}"
                )
            if repair:
                self._repair_tail(segment, len(data), result)
            else:
                self.repaired_tail = RepairedTail(
                    segment.path,
                    result.error_offset,
                    len(data) - result.good_size,
                    str(result.error_reason),
                )
        self._segments = segments
        self._firsts = [s.first_lsn for s in segments]
        if repair and segments:
            # After a process crash (kill -9, not a power loss) the files may hold bytes the
            # page cache has and the disk does not: written, never fsynced. They are
            # reported durable below, so make them so first (cheap for clean files).
            try:
                for segment in segments:
                    self.fs.datasync(segment.path)
                    if segment is not segments[-1]:
                        self.fs.release(segment.path, writer_only=True)
                self.fs.sync_dir(self.path)
            except OSError as exc:
                raise FsyncFailed(f"{self.path}: syncing the WAL at open failed: {exc}") from exc
        self._end_lsn = self._flush_lsn = segments[-1].end_lsn if segments else 0
        if self.control.commit_lsn > self._end_lsn:
            raise CorruptionError(
                self.path / "control",
                0,
                f"commit LSN {self.control.commit_lsn} is beyond the end of the log "
                f"({self._end_lsn}): committed records are missing",
            )

    def _index_record(self, record: Entry) -> None:
        if not self._term_changes or self._term_changes[-1][0] != record.term:
            self._term_changes.append((record.term, record.lsn))
        self._last_term = record.term
        if record.kind is RecordKind.BINLOG_META:
            self._meta_lsns.append(record.lsn)
        elif record.kind is RecordKind.GROUP:
            self._group_lsns.append(record.lsn)
        if record.gtid is not None and not record.continued:
            self._gtids[record.gtid] = record.end_lsn
            self._last_gtids[domain_of(record.gtid)] = record.gtid

    def _repair_tail(self, segment: Segment, size: int, result: ScanResult) -> None:
        assert result.error_offset is not None
        self.fs.truncate(segment.path, result.good_size)
        self.repaired_tail = RepairedTail(
            segment.path, result.error_offset, size - result.good_size, str(result.error_reason)
        )
        log.warning(
            "%s: cut a torn tail at byte offset %d (%d bytes dropped: %s)",
            segment.path,
            result.error_offset,
            size - result.good_size,
            result.error_reason,
        )

    # ---- state --------------------------------------------------------------------------

    @property
    def end_lsn(self) -> int:
        return self._end_lsn

    @property
    def flush_lsn(self) -> int:
        return self._flush_lsn

    def durable(self) -> Durable:
        """What is on disk now, as a report that stays checkable after the log changes."""
        return Durable(self._flush_lsn, self.term_at(self._flush_lsn) or 0, self.epoch)

    @property
    def unflushed_bytes(self) -> int:
        """Payload bytes appended but not yet on disk."""
        return self._end_lsn - self._flush_lsn

    @property
    def disk_bytes(self) -> int:
        """Bytes of records in the segment files (framing included), for disk-usage
        metrics: what is known written, not what is still pending."""
        return sum(segment.written for segment in self._segments)

    @property
    def syncing(self) -> bool:
        """Whether an async sync() is writing now (flush() must wait for it)."""
        return self._sync_round is not None

    @property
    def last_term(self) -> int:
        return self._last_term

    @property
    def first_lsn(self) -> int:
        return self._segments[0].first_lsn if self._segments else self._end_lsn

    @property
    def term_history(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._term_changes)

    # ---- appending ----------------------------------------------------------------------

    def append(
        self,
        term: int,
        payload: bytes,
        *,
        kind: RecordKind = RecordKind.DATA,
        gtid: str | None = None,
        continued: bool = False,
    ) -> int:
        """Buffer one record; returns its end LSN. Durable only after sync()/flush()."""
        self._check_open()
        if not payload:
            raise ValueError("a record payload must not be empty")
        if len(payload) > self.max_record_size:
            raise RecordTooLarge(
                f"payload of {len(payload)} bytes exceeds the {self.max_record_size}-byte "
                "maximum record size; split it into continued records"
            )
        if term < self._last_term:
            raise WalError(f"term {term} is below the log's last term {self._last_term}")
        lsn = self._end_lsn
        end = lsn + len(payload)
        if type(kind) is not RecordKind:
            kind = RecordKind(kind)
        if type(payload) is not bytes:
            payload = bytes(payload)
        record = Entry(lsn, term, kind, payload, gtid, continued)
        head, _ = _record.encode_parts(record)
        size = len(head) + len(payload)
        segment = self._segments[-1] if self._segments else None
        if segment is None or (segment.size and segment.size + size > self.segment_size):
            segment = Segment(self.path / segment_name(lsn), lsn)
            self._segments.append(segment)
            self._firsts.append(lsn)
        segment.offsets.append(segment.size)
        segment.ends.append(end)
        segment.size += size
        if len(payload) < _JOIN_BELOW:
            self._pending.append((segment, head + payload))
        else:
            self._pending += ((segment, head), (segment, payload))
        self._mem.append(record)
        # The index (inlined from _index_record: this is the per-record hot path).
        if term != self._last_term or not self._term_changes:
            self._term_changes.append((term, lsn))
            self._last_term = term
        if gtid is not None and not continued:
            self._gtids[gtid] = end
            self._last_gtids[domain_of(gtid)] = gtid
        elif kind is RecordKind.BINLOG_META:
            self._meta_lsns.append(lsn)
        elif kind is RecordKind.GROUP:
            self._group_lsns.append(lsn)
        self._end_lsn = end
        return end

    def _take_batch(self) -> _Batch:
        writes: list[_Write] = []
        pending, self._pending = self._pending, []
        index = 0
        while index < len(pending):
            segment = pending[index][0]
            start = index
            while index < len(pending) and pending[index][0] is segment:
                index += 1
            parts = [part for _seg, part in pending[start:index]]
            size = sum(map(len, parts))
            # Every pending frame of a segment is in this batch, so its bytes end at size.
            writes.append(_Write(segment, segment.size - size, parts, size))
        return _Batch(writes, self._end_lsn)

    def _write_batch(self, batch: _Batch) -> None:
        """Write and fdatasync a batch. Runs in a worker thread: touches only files.

        ENOSPC (or EDQUOT) from a write is recoverable (DiskFullError): the kernel refused
        the bytes, so nothing is in doubt; what this batch wrote is cut and the batch stays
        pending for a retry. Any failure of a sync — ENOSPC included — is FsyncFailed: the
        kernel may have dropped dirty pages, so retrying could acknowledge lost bytes."""
        fs = self.fs
        created = False
        touched: list[tuple[Segment, int]] = []  # (segment, size before)
        try:
            for write in batch.writes:
                segment = write.segment
                created |= write.offset == 0  # a new segment file: its name needs a dir fsync
                touched.append((segment, write.offset))
                fs.pwrite(segment.path, write.parts, write.offset)
        except OSError as exc:
            self._cut_back(touched)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"{touched[-1][0].path}: no space left on device writing the WAL "
                    f"({exc.strerror}); the records stay pending and are retried") from exc
            raise FsyncFailed(f"{self.path}: writing the WAL failed: {exc}; the agent must "
                              "restart to recover from what the disk holds") from exc
        try:
            for segment, _offset in touched:
                started = time.perf_counter()
                fs.datasync(segment.path)
                self.fsync_seconds += time.perf_counter() - started
                self.fsync_count += 1
            if created:
                fs.sync_dir(self.path)
        except OSError as exc:
            self._cut_back(touched)
            raise FsyncFailed(f"{self.path}: syncing the WAL failed: {exc}; the agent must "
                              "restart to recover from what the disk holds") from exc
        # Older segments are sealed once written: keep only the active segment's file open
        # for writing (a segment that filled up in an earlier batch is released now).
        active = batch.writes[-1].segment.path if batch.writes else None
        for path in (self._writing | {w.segment.path for w in batch.writes}) - {active}:
            fs.release(path, writer_only=True)
        self._writing = {active} if active is not None else set()

    def _cut_back(self, touched: list[tuple[Segment, int]]) -> None:
        """Cut what a failed batch wrote, so no half record is left that could look valid
        later (a retry writes the same bytes at the same offsets)."""
        for segment, offset in touched:
            try:  # (on this thread: the event loop's read handles stay open)
                self.fs.truncate(segment.path, offset, writer_only=True)
            except OSError:
                pass  # a torn tail past `written` is cut at the next open, or overwritten

    def _finish_batch(self, batch: _Batch) -> None:
        for write in batch.writes:
            write.segment.written = max(write.segment.written, write.offset + write.size)
        self._flush_lsn = max(self._flush_lsn, batch.end_lsn)
        keep = bisect.bisect_right([r.end_lsn for r in self._mem], self._flush_lsn)
        del self._mem[:keep]

    def _restore_batch(self, batch: _Batch, pending_before: list[_Pending]) -> None:
        self._pending = pending_before + self._pending

    def flush(self) -> int:
        """Blocking group commit: one write and fdatasync for everything appended so far."""
        self._check_open()
        if self._sync_round is not None:
            raise SyncInProgress("flush() called while an async sync() is running")
        if not self._pending:
            return self._flush_lsn
        pending = list(self._pending)
        batch = self._take_batch()
        try:
            self._write_batch(batch)
        except BaseException:
            self._restore_batch(batch, pending)
            raise
        self._finish_batch(batch)
        return self._flush_lsn

    async def sync(self) -> int:
        """Group commit off the event loop; concurrent callers share fsyncs.

        Returns the flush LSN, at least the end LSN at the time of the call.
        """
        self._check_open()
        target = self._end_lsn
        while self._flush_lsn < target:
            running = self._sync_round
            if running is not None:
                await running.done.wait()
                if running.error is not None:
                    raise running.error
                continue
            round_ = self._sync_round = _SyncRound()
            pending = list(self._pending)
            batch = self._take_batch()
            try:
                # Not cancellable: once the write is in the kernel we must learn its outcome.
                await trio.to_thread.run_sync(self._write_batch, batch)
            except BaseException as exc:
                self._restore_batch(batch, pending)
                round_.error = exc
                raise
            else:
                self._finish_batch(batch)
            finally:
                self._sync_round = None
                round_.done.set()
        return self._flush_lsn

    async def wait_idle(self) -> None:
        """Wait until no sync() is running (truncate and segment removal need that)."""
        while self._sync_round is not None:
            await self._sync_round.done.wait()

    # ---- reading ------------------------------------------------------------------------

    def _locate(self, lsn: int) -> tuple[int, int]:
        """(segment index, record index) of the record starting at LSN; raises if not a boundary."""
        if not self._segments or lsn < self._segments[0].first_lsn or lsn > self._end_lsn:
            raise NotARecordBoundary(
                f"LSN {lsn} is outside the log [{self.first_lsn}, {self._end_lsn}]"
            )
        seg_index = bisect.bisect_right(self._firsts, lsn) - 1
        segment = self._segments[seg_index]
        if lsn == segment.first_lsn:
            return seg_index, 0
        rec_index = bisect.bisect_left(segment.ends, lsn)
        if rec_index == len(segment.ends) or segment.ends[rec_index] != lsn:
            raise NotARecordBoundary(f"LSN {lsn} is not a record boundary")
        return seg_index, rec_index + 1

    def term_at(self, lsn: int) -> int | None:
        """Term of the record ending at LSN; 0 for LSN 0; None when LSN is not a boundary."""
        if lsn == 0:
            return 0
        if lsn == self.first_lsn and lsn > 0:
            return self._term_before(lsn)
        try:
            self._locate(lsn)
        except NotARecordBoundary:
            return None
        return self._term_before(lsn)

    def _term_before(self, lsn: int) -> int | None:
        index = bisect.bisect_left(self._term_changes, lsn, key=lambda pair: pair[1]) - 1
        return self._term_changes[index][0] if index >= 0 else None

    def read(self, from_lsn: int = 0, *, max_bytes: int | None = None,
             until_lsn: int | None = None) -> Iterator[Entry]:
        """Records from FROM_LSN (a boundary) on.

        MAX_BYTES bounds the payload total, but at least one record is yielded. UNTIL_LSN
        (a boundary at or below the flush LSN): no byte beyond it is read — what a reader in
        another thread passes, the commit LSN, so it never touches records a truncation may
        cut meanwhile.
        """
        self._check_open()
        if from_lsn == self._end_lsn or (until_lsn is not None and from_lsn >= until_lsn):
            return
        seg_index, rec_index = self._locate(from_lsn)
        budget = max_bytes if max_bytes is not None else -1
        lsn = from_lsn
        yielded = 0
        flush = self._flush_lsn if until_lsn is None else min(self._flush_lsn, until_lsn)
        while lsn < flush and seg_index < len(self._segments):
            segment = self._segments[seg_index]
            if rec_index >= len(segment.ends):
                seg_index, rec_index = seg_index + 1, 0
                continue
            # Read a span of whole records: those ending at or below flush, within budget.
            last = bisect.bisect_right(segment.ends, flush) - 1
            if budget >= 0:
                limit = lsn + max(budget, 1)
                last = min(last, max(rec_index, bisect.bisect_left(segment.ends, limit)))
            if last < rec_index:
                break
            start = segment.offsets[rec_index]
            stop = segment.offsets[last + 1] if last + 1 < len(segment.offsets) else segment.written
            data = self.fs.pread(segment.path, stop - start, start)
            view = memoryview(data)
            offset = 0
            for _ in range(rec_index, last + 1):
                try:
                    record, length = _record.parse(view, offset, self.max_record_size)
                except _record.FrameError as exc:
                    raise CorruptionError(segment.path, start + offset, str(exc)) from exc
                if record.lsn != lsn:
                    raise CorruptionError(
                        segment.path, start + offset, f"record LSN {record.lsn}, expected {lsn}"
                    )
                offset += length
                yield record
                yielded += len(record.payload)
                lsn = record.end_lsn
                if budget >= 0 and yielded >= budget:
                    return
            seg_index, rec_index = seg_index, last + 1
        for record in list(self._mem):  # a copy: a truncation replaces the list, never edits it
            if record.lsn < lsn:
                continue
            if record.lsn > lsn or (until_lsn is not None and record.end_lsn > until_lsn):
                break
            yield record
            yielded += len(record.payload)
            lsn = record.end_lsn
            if budget >= 0 and yielded >= budget:
                return

    def gtid_end_lsn(self, gtid: str) -> int | None:
        return self._gtids.get(gtid)

    def gtids_at(self, lsn: int) -> dict[int, str]:
        """The newest GTID per domain among records ending at or below LSN — with the commit
        LSN, the committed GTID position. Costs a walk of the log's tail beyond LSN only."""
        result: dict[int, str] = {}
        pending: set[int] = set()
        for domain, gtid in self._last_gtids.items():
            end = self._gtids.get(gtid)
            if end is None or end <= lsn:  # None: only in removed segments, below any LSN here
                result[domain] = gtid
            else:
                pending.add(domain)
        if pending:
            for gtid, end in reversed(self._gtids.items()):  # appended, so in LSN order
                domain = domain_of(gtid)
                if end <= lsn and domain in pending:
                    result[domain] = gtid
                    pending.discard(domain)
                    if not pending:
                        break
            for domain in pending & set(self._removed_gtids):
                result[domain] = self._removed_gtids[domain]
        return result

    def last_gtids(self) -> dict[int, str]:
        """The newest GTID of each replication domain in the log."""
        return dict(self._last_gtids)

    def binlog_meta_lsns(self) -> list[int]:
        """LSNs of the BINLOG_META records still in the log, ascending."""
        return list(self._meta_lsns)

    def last_binlog_meta(self) -> Entry | None:
        """The newest BINLOG_META record still in the log, if any."""
        if not self._meta_lsns:
            return None
        return next(self.read(self._meta_lsns[-1]), None)

    def group_records(self, lsn: int) -> list[Entry]:
        """Every GROUP record ending at or below LSN, oldest first."""
        out = []
        for start in self._group_lsns:
            record = next(self.read(start), None)
            if record is None or record.end_lsn > lsn:
                break
            out.append(record)
        return out

    def group_record_at_or_below(self, lsn: int) -> Entry | None:
        """The newest GROUP record ending at or below LSN (e.g. the commit LSN), if any."""
        index = bisect.bisect_left(self._group_lsns, lsn) - 1
        while index >= 0:
            record = next(self.read(self._group_lsns[index]), None)
            if record is not None and record.end_lsn <= lsn:
                return record
            index -= 1
        return None

    # ---- cutting ------------------------------------------------------------------------

    def truncate(self, lsn: int) -> None:
        """Remove every record at or after LSN (a boundary); durable on return."""
        self._check_open()
        if lsn == self._end_lsn:
            return
        if lsn < self.control.commit_lsn:
            raise TruncateBelowCommit(
                f"truncating to LSN {lsn} would remove committed history "
                f"(commit LSN {self.control.commit_lsn})"
            )
        if self._sync_round is not None:
            raise SyncInProgress("truncate() while a sync is running: await wait_idle() first")
        seg_index, rec_index = self._locate(lsn)
        for record in self.read(lsn):
            if record.gtid is not None and self._gtids.get(record.gtid) == record.end_lsn:
                del self._gtids[record.gtid]
        removed_files = False
        for segment in self._segments[seg_index + 1 :]:
            self.fs.unlink(segment.path)
            removed_files = True
        del self._segments[seg_index + 1 :]
        del self._firsts[seg_index + 1 :]
        segment = self._segments[seg_index]
        cut = segment.offsets[rec_index] if rec_index < len(segment.offsets) else segment.size
        del segment.offsets[rec_index:]
        del segment.ends[rec_index:]
        segment.size = cut
        if segment.written > cut:
            self.fs.truncate(segment.path, cut)
            segment.written = cut
        if removed_files:
            self.fs.sync_dir(self.path)
        self._mem = [r for r in self._mem if r.end_lsn <= lsn]
        self._pending = self._rebuild_pending(lsn)
        while self._term_changes and self._term_changes[-1][1] >= lsn:
            self._term_changes.pop()
        self._last_term = self._term_changes[-1][0] if self._term_changes else 0
        while self._meta_lsns and self._meta_lsns[-1] >= lsn:
            self._meta_lsns.pop()
        while self._group_lsns and self._group_lsns[-1] >= lsn:
            self._group_lsns.pop()
        self._end_lsn = lsn
        self._flush_lsn = min(self._flush_lsn, lsn)
        self.epoch += 1
        self._last_gtids = dict(self._removed_gtids)
        for gtid, _end in sorted(self._gtids.items(), key=lambda item: item[1]):
            self._last_gtids[domain_of(gtid)] = gtid

    def _rebuild_pending(self, lsn: int) -> list[_Pending]:
        """Frames for the unwritten records that survive a truncation to LSN."""
        pending: list[_Pending] = []
        for record in self._mem:
            if record.end_lsn <= self._flush_lsn or record.end_lsn > lsn:
                continue
            seg_index = bisect.bisect_right(self._firsts, record.lsn) - 1
            segment = self._segments[seg_index]
            pending += ((segment, part) for part in _record.encode_parts(record))
        return pending

    def remove_segments_before(self, lsn: int) -> int:
        """Delete whole sealed segments that lie entirely below LSN; returns how many."""
        self._check_open()
        if self._sync_round is not None:
            raise SyncInProgress("remove_segments_before() while a sync is running")
        limit = min(lsn, self._flush_lsn)
        count = 0
        # The segment that becomes the first must already be on disk, or nothing durable is left.
        while (
            count + 1 < len(self._segments)
            and self._segments[count + 1].first_lsn <= limit
            and self._segments[count + 1].written > 0
        ):
            count += 1
        if count:
            # The term history and newest GTIDs of the removed records must survive in the
            # control file, written before the segments go.
            for segment in self._segments[:count]:
                for record in self.read(segment.first_lsn):
                    if record.lsn >= segment.end_lsn:
                        break
                    if record.gtid is not None and not record.continued:
                        self._removed_gtids[domain_of(record.gtid)] = record.gtid
            self.save_control(self.control)
            for segment in self._segments[:count]:
                self.fs.unlink(segment.path)
            del self._segments[:count]
            del self._firsts[:count]
            self.fs.sync_dir(self.path)
            self._gtids = {g: end for g, end in self._gtids.items() if end > self.first_lsn}
            self._meta_lsns = [m for m in self._meta_lsns if m >= self.first_lsn]
            # (the newest GROUP record must outlive retention: kept in the control file
            # when segments are removed — with S3 offload, #17)
            self._group_lsns = [m for m in self._group_lsns if m >= self.first_lsn]
        return count

    # ---- control ------------------------------------------------------------------------

    def save_control(self, control: Control) -> None:
        """Atomically replace the control file; the store keeps the term history itself."""
        self._check_open()
        with self._control_lock:
            self._save_control(control)

    def update_control(self, **changes: Any) -> Control:
        """Change some fields of the control file; safe from a worker thread.

        The fields are applied to the control as it is when the write starts, so a writer
        in a thread never puts back an older term or vote the event loop saved meanwhile.
        A commit LSN never moves back. Raises DiskFullError with nothing changed.
        """
        self._check_open()
        with self._control_lock:
            if "commit_lsn" in changes:
                changes["commit_lsn"] = max(changes["commit_lsn"], self.control.commit_lsn)
            self._save_control(replace(self.control, **changes))
            return self.control

    def _save_control(self, control: Control) -> None:
        control = replace(
            control,
            term_history=tuple(self._term_changes),
            removed_gtids=tuple(sorted(self._removed_gtids.values())),
        )
        try:
            write_control(self.fs, self.path, control)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # The old file is intact (atomic replace): retrying later is safe.
                raise DiskFullError(
                    f"{self.path / CONTROL_NAME}: no space left on device writing the "
                    f"control file ({exc.strerror}); retried") from exc
            raise
        self.control = control

    # ---- closing ------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.fs.close()

    def _check_open(self) -> None:
        if self._closed:
            raise WalError(f"{self.path}: the store is closed")

    def __enter__(self) -> WalStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
