"""Record framing on disk.

    offset size field
    0      4    frame length (all bytes of the frame, this field included)
    4      4    CRC32C of bytes [8, frame length)
    8      8    term
    16     8    LSN of the first payload byte
    24     1    kind (consensus.RecordKind)
    25     1    flags (bit 0: continued — more pieces of this transaction follow)
    26     2    GTID length (0 when none)
    28     g    GTID, ASCII "domain-server-seq"
    28+g   n    payload

All integers little-endian. The CRC covers every field after itself, so a flipped bit
anywhere in a record but the length is caught by the CRC, and a damaged length is caught by
the CRC of the (wrong) span it claims or by the bounds checks in `parse`.
"""

from __future__ import annotations

import struct

from crc32c import crc32c

from consensus.messages import Entry, RecordKind

HEADER = struct.Struct("<IIQQBBH")
HEADER_SIZE = HEADER.size  # 28
FLAG_CONTINUED = 0x01
KNOWN_FLAGS = FLAG_CONTINUED
_CRC_AND_REST = struct.Struct("<QQBBH")


def encode_parts(record: Entry) -> tuple[bytes, bytes]:
    """(frame header with GTID, payload): written together, never joined, so a large
    payload is not copied on its way to disk."""
    gtid = record.gtid.encode("ascii") if record.gtid else b""
    payload = record.payload
    rest = _CRC_AND_REST.pack(
        record.term, record.lsn, record.kind, FLAG_CONTINUED if record.continued else 0, len(gtid)
    )
    crc = crc32c(payload, crc32c(gtid, crc32c(rest)))
    head = struct.pack("<II", HEADER_SIZE + len(gtid) + len(payload), crc)
    return head + rest + gtid, payload


def encode(record: Entry) -> bytes:
    return b"".join(encode_parts(record))


class FrameError(Exception):
    """Why bytes at an offset are not a valid record (internal; callers wrap it)."""


def parse(buf: bytes | memoryview, offset: int, max_payload: int) -> tuple[Entry, int]:
    """Parse the record at OFFSET of BUF; returns it and the frame size, or raises FrameError."""
    if len(buf) - offset < HEADER_SIZE:
        raise FrameError(f"{len(buf) - offset} bytes left, a record header needs {HEADER_SIZE}")
    length, crc, term, lsn, kind, flags, gtid_len = HEADER.unpack_from(buf, offset)
    if length < HEADER_SIZE + gtid_len or length - HEADER_SIZE - gtid_len > max_payload:
        raise FrameError(f"implausible frame length {length}")
    if offset + length > len(buf):
        raise FrameError(f"frame of {length} bytes runs past the end of the file")
    if crc32c(buf[offset + 8 : offset + length]) != crc:
        raise FrameError("CRC32C mismatch")
    if kind not in _KINDS:
        raise FrameError(f"unknown record kind {kind}")
    if flags & ~KNOWN_FLAGS:
        raise FrameError(f"unknown flags {flags:#x}")
    start = offset + HEADER_SIZE
    try:
        gtid = bytes(buf[start : start + gtid_len]).decode("ascii") if gtid_len else None
    except UnicodeDecodeError as exc:
        raise FrameError("GTID is not ASCII") from exc
    payload = bytes(buf[start + gtid_len : offset + length])
    if not payload:
        raise FrameError("empty payload")
    return Entry(lsn, term, RecordKind(kind), payload, gtid, bool(flags & FLAG_CONTINUED)), length


_KINDS = frozenset(int(k) for k in RecordKind)
MAX_KIND = max(_KINDS)
