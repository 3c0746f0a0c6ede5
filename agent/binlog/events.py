"""MariaDB binlog events as bytes: header fields, CRC32, GTIDs, ROTATE targets; the one
place that parses an event header or stamps an event's CRC.

Shared by the tailer, the replication port, binlog files and restores: all see the same
`v4` events.

Event header, 19 bytes little-endian: timestamp(4) type(1) server_id(4) event_length(4,
CRC included) next_pos(4) flags(2); with binlog_checksum=CRC32 the last 4 bytes are the
zlib CRC32 of everything before them.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from walstore.gtid import Gtid

HEADER = struct.Struct("<IBIIIH")
HEADER_SIZE = HEADER.size  # 19

QUERY = 0x02
STOP = 0x03
ROTATE = 0x04
XID = 0x10
FORMAT_DESCRIPTION = 0x0F
HEARTBEAT = 0x1B
ANNOTATE_ROWS = 0xA0
BINLOG_CHECKPOINT = 0xA1
GTID = 0xA2
GTID_LIST = 0xA3
QUERY_COMPRESSED = 0xA5
XA_PREPARE_LOG = 0x26  # 38: ends a prepared XA transaction (XA PREPARE); seen on 10.11

GTID_FLAG_STANDALONE = 0x01
LOG_EVENT_BINLOG_IN_USE_F = 0x01  # header flag of an FDE whose file is still being written
LOG_EVENT_ARTIFICIAL_F = 0x20  # header flag of an event made up for a dump, not in a file
GTID_LIST_UNTIL_REACHED = 1 << 28  # flag in a GTID_LIST's count: the UNTIL position is reached
CHECKSUM_CRC32 = 1


class BinlogEventError(ValueError):
    """A malformed or corrupt event; the message says where."""


@dataclass(frozen=True, slots=True)
class Event:
    timestamp: int
    type_code: int
    server_id: int
    event_length: int
    next_pos: int
    flags: int
    raw: bytes  # the whole event, header and CRC included

    @classmethod
    def parse(cls, raw: bytes) -> Event:
        if len(raw) < HEADER_SIZE:
            raise BinlogEventError(f"event of {len(raw)} bytes is shorter than its header")
        timestamp, type_code, server_id, length, next_pos, flags = HEADER.unpack_from(raw)
        if length != len(raw):
            raise BinlogEventError(f"event length field {length} but {len(raw)} bytes")
        return cls(timestamp, type_code, server_id, length, next_pos, flags, raw)

    def crc_ok(self) -> bool:
        stored = struct.unpack_from("<I", self.raw, len(self.raw) - 4)[0]
        covered: bytes | memoryview = memoryview(self.raw)[:-4]  # no copy of a large event
        if self.type_code == FORMAT_DESCRIPTION and self.flags & LOG_EVENT_BINLOG_IN_USE_F:
            # The server sets "in use" in place after writing the FDE; its CRC excludes it.
            covered = (
                bytes(covered[:17])
                + struct.pack("<H", self.flags & ~LOG_EVENT_BINLOG_IN_USE_F)
                + covered[19:]
            )
        return bool(zlib.crc32(covered) == stored)

    @property
    def body(self) -> bytes:
        """The event body without header; includes the CRC when checksums are on."""
        return self.raw[HEADER_SIZE:]


def gtid_of(event: Event) -> tuple[str, int]:
    """(GTID 'domain-server-seq', flags) of a MariaDB GTID event."""
    body = event.body
    if len(body) < 13:
        raise BinlogEventError("GTID event too short")
    seq_no, domain_id, flags = struct.unpack_from("<QIB", body)
    return str(Gtid(domain_id, event.server_id, seq_no)), flags


def gtid_list_of(event: Event) -> list[Gtid]:
    """The GTIDs a GTID_LIST event names: at the start of a binlog file, the newest GTID of
    each (domain, server id) in the files before it."""
    body = event.body
    if len(body) < 4:
        raise BinlogEventError("GTID_LIST event too short")
    count = struct.unpack_from("<I", body)[0] & (GTID_LIST_UNTIL_REACHED - 1)  # flags above
    if len(body) < 4 + 16 * count:
        raise BinlogEventError(f"GTID_LIST event too short for {count} GTIDs")
    return [Gtid(domain, server_id, seq_no)
            for domain, server_id, seq_no in struct.iter_unpack("<IIQ", body[4:4 + 16 * count])]


def query_text(event: Event, checksum: bool = True) -> bytes:
    """The SQL text of a QUERY event."""
    body = event.body[:-4] if checksum else event.body
    if len(body) < 13:
        raise BinlogEventError("QUERY event too short")
    db_len = body[8]
    status_len = struct.unpack_from("<H", body, 11)[0]
    start = 13 + status_len + db_len + 1
    return body[start:]


def checksum_alg_of_fde(event: Event) -> int:
    """The checksum algorithm a FORMAT_DESCRIPTION event announces (1 = CRC32)."""
    # ... body ..., checksum alg (1 byte), CRC (4 bytes)
    return event.raw[-5]


def rotate_target(raw: bytes | memoryview) -> str:
    """The binlog file a ROTATE event names: body = position (8 bytes), name, CRC (4)."""
    return bytes(raw[HEADER_SIZE + 8 : -4]).decode()


def event_length_at(data: bytes | memoryview, offset: int) -> int:
    """The length field of the event header at OFFSET."""
    length: int = HEADER.unpack_from(data, offset)[3]
    return length


def next_pos_of(raw: bytes | memoryview) -> int:
    next_pos: int = HEADER.unpack_from(raw)[4]
    return next_pos


def make_event(type_code: int, server_id: int, body: bytes, *, log_pos: int = 0,
               flags: int = LOG_EVENT_ARTIFICIAL_F, timestamp: int = 0,
               checksum: bool = True) -> bytes:
    """An event as the server makes up for a dump, with a CRC32 unless CHECKSUM is off."""
    length = HEADER_SIZE + len(body) + (4 if checksum else 0)
    raw = HEADER.pack(timestamp, type_code, server_id, length, log_pos, flags) + body
    return raw + struct.pack("<I", zlib.crc32(raw)) if checksum else raw


def restamped(raw: bytes, *, next_pos: int | None = None, clear_flags: int = 0) -> bytes:
    """RAW (CRC32 at its end) with NEXT_POS set and CLEAR_FLAGS cleared in its header, and
    its CRC recomputed; RAW itself when nothing changes."""
    timestamp, type_code, server_id, length, old_pos, flags = HEADER.unpack_from(raw)
    new_pos = old_pos if next_pos is None else next_pos
    new_flags = flags & ~clear_flags
    if (new_pos, new_flags) == (old_pos, flags):
        return raw
    head = HEADER.pack(timestamp, type_code, server_id, length, new_pos, new_flags)
    body = raw[HEADER_SIZE:-4]
    return head + body + struct.pack("<I", zlib.crc32(head + body))


def without_in_use(raw: bytes) -> bytes:
    """A FORMAT_DESCRIPTION with "file in use" cleared, as the server sends it; its CRC never
    covers that flag, so the CRC stays."""
    if raw[4] != FORMAT_DESCRIPTION or not raw[17] & LOG_EVENT_BINLOG_IN_USE_F:
        return raw
    return raw[:17] + bytes([raw[17] & ~LOG_EVENT_BINLOG_IN_USE_F]) + raw[18:]


def split_events(data: bytes) -> list[memoryview]:
    """The events of a stored transaction, as views (no copies)."""
    view = memoryview(data)
    events = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER_SIZE:
            raise BinlogEventError(f"{len(data) - offset} bytes left, an event header needs "
                                   f"{HEADER_SIZE}")
        length = event_length_at(data, offset)
        if length < HEADER_SIZE or offset + length > len(data):
            raise BinlogEventError(f"bad event length {length} at offset {offset}")
        events.append(view[offset : offset + length])
        offset += length
    return events
