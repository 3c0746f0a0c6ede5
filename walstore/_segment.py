"""Segment files: naming, and scanning one file into its record index.

A segment is named after the LSN of its first record, in 16 hex digits, so a plain
directory listing shows the segments in log order. It holds whole records only.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from consensus.messages import Entry
from walstore import _record

SUFFIX = ".seg"
_NAME = re.compile(r"^([0-9a-f]{16})\.seg$")


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:016x}{SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1), 16) if match else None


@dataclass
class Segment:
    """One segment file and the index of the records in it."""

    path: Path
    first_lsn: int
    ends: array[int] = field(default_factory=lambda: array("Q"))  # end LSN of each record
    offsets: array[int] = field(default_factory=lambda: array("Q"))  # frame offset of each record
    size: int = 0  # bytes of whole records (planned: includes appends not yet written)
    written: int = 0  # bytes known to be in the file

    @property
    def end_lsn(self) -> int:
        return self.ends[-1] if self.ends else self.first_lsn


@dataclass
class ScanResult:
    good_size: int  # bytes of valid records from the start of the file
    error_offset: int | None = None
    error_reason: str | None = None
    valid_after_error: int | None = None  # offset of a valid record found past the damage


def scan_segment(
    segment: Segment,
    data: bytes,
    *,
    prev_term: int,
    max_payload: int,
    on_record: Callable[[Entry], None],
) -> ScanResult:
    """Index every record of DATA into SEGMENT until the end or the first bad record."""
    offset = 0
    expected_lsn = segment.first_lsn
    term = prev_term
    view = memoryview(data)
    while offset < len(data):
        segment.size = segment.written = offset
        try:
            record, length = _record.parse(view, offset, max_payload)
        except _record.FrameError as exc:
            return _damaged(view, offset, str(exc), expected_lsn, max_payload)
        if record.lsn != expected_lsn:
            return _damaged(
                view,
                offset,
                f"record LSN {record.lsn}, expected {expected_lsn}",
                expected_lsn,
                max_payload,
            )
        if record.term < term:
            return _damaged(
                view, offset, f"term {record.term} after term {term}", expected_lsn, max_payload
            )
        term = record.term
        segment.offsets.append(offset)
        segment.ends.append(record.end_lsn)
        on_record(record)
        offset += length
        expected_lsn = record.end_lsn
    segment.size = segment.written = offset
    return ScanResult(good_size=offset)


def _damaged(
    view: memoryview, offset: int, reason: str, expected_lsn: int, max_payload: int
) -> ScanResult:
    return ScanResult(
        good_size=offset,
        error_offset=offset,
        error_reason=reason,
        valid_after_error=find_valid_record(view, offset + 1, expected_lsn, max_payload),
    )


def find_valid_record(view: memoryview, start: int, min_lsn: int, max_payload: int) -> int | None:
    """Offset of the first whole, CRC-valid record at or after START, if any.

    Used to tell a torn tail (nothing valid follows) from damage in the middle of the log
    (valid records follow, so cutting there would drop durable history).
    """
    header = _record.HEADER
    limit = len(view) - _record.HEADER_SIZE
    for offset in range(start, limit + 1):
        length, _crc, _term, lsn, kind, flags, gtid_len = header.unpack_from(view, offset)
        # Cheap plausibility checks first; the CRC is only computed for likely frames.
        if (
            lsn < min_lsn
            or kind > _record.MAX_KIND
            or flags & ~_record.KNOWN_FLAGS
            or length <= _record.HEADER_SIZE + gtid_len
            or length - _record.HEADER_SIZE - gtid_len > max_payload
            or offset + length > len(view)
        ):
            continue
        try:
            _record.parse(view, offset, max_payload)
        except _record.FrameError:
            continue
        return offset
    return None
