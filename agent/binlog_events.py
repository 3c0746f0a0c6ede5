"""MariaDB binlog events as bytes: header fields, CRC32, GTIDs, transaction grouping.

Shared by the binlog-file reader (exports, benchmarks, byte-for-byte checks) and, later,
the replication-stream tailer: both see the same `v4` events.

Event header, 19 bytes little-endian: timestamp(4) type(1) server_id(4) event_length(4,
CRC included) next_pos(4) flags(2); with binlog_checksum=CRC32 the last 4 bytes are the
zlib CRC32 of everything before them.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

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
XA_PREPARE_LOG = 0xA6  # unused by us but named for dumps

GTID_FLAG_STANDALONE = 0x01
LOG_EVENT_BINLOG_IN_USE_F = 0x01
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
    return f"{domain_id}-{event.server_id}-{seq_no}", flags


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


@dataclass
class Transaction:
    gtid: str
    events: list[Event] = field(default_factory=list)

    @property
    def raw(self) -> bytes:
        return b"".join(e.raw for e in self.events)

    @property
    def end_pos(self) -> int:
        return self.events[-1].next_pos

    def pieces(self, size: int) -> list[bytes]:
        """The transaction's bytes cut into pieces of at most SIZE, without first joining
        it whole: a large transaction is copied once, a piece at a time."""
        pieces: list[bytes] = []
        parts: list[memoryview] = []
        room = size
        for event in self.events:
            view = memoryview(event.raw)
            while view:
                take = view[:room]
                parts.append(take)
                room -= len(take)
                view = view[len(take):]
                if room == 0:
                    pieces.append(b"".join(parts))
                    parts, room = [], size
        if parts:
            pieces.append(b"".join(parts))
        return pieces


class TransactionGrouper:
    """Feed events in binlog order; get whole transactions (GTID event .. XID/COMMIT, or a
    standalone GTID + QUERY for DDL). Events between transactions are reported as None."""

    def __init__(self, checksum: bool = True) -> None:
        self.checksum = checksum
        self._open: Transaction | None = None
        self._standalone = False

    @property
    def in_transaction(self) -> bool:
        return self._open is not None

    def feed(self, event: Event) -> Transaction | None:
        if event.type_code == GTID:
            if self._open is not None:
                raise BinlogEventError(f"GTID event inside transaction {self._open.gtid}")
            gtid, flags = gtid_of(event)
            self._open = Transaction(gtid, [event])
            self._standalone = bool(flags & GTID_FLAG_STANDALONE)
            return None
        if self._open is None:
            return None  # FDE, GTID_LIST, BINLOG_CHECKPOINT, ROTATE, STOP, heartbeats
        self._open.events.append(event)
        done = event.type_code == XID or (
            event.type_code in (QUERY, QUERY_COMPRESSED)
            and (self._standalone or _ends_transaction(event, self.checksum))
        )
        if not done:
            return None
        finished, self._open = self._open, None
        return finished


def _ends_transaction(event: Event, checksum: bool) -> bool:
    if event.type_code != QUERY:
        return False
    text = query_text(event, checksum).strip().upper()
    return text in (b"COMMIT", b"ROLLBACK") or text.startswith(b"XA COMMIT")
