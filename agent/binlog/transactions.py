"""Whole MariaDB transactions: grouped from binlog events, and joined from stored records.

From events (`TransactionGrouper`): GTID event .. XID/COMMIT, or a standalone GTID + DDL.

From records (`TransactionAssembler`): a transaction larger than a record is stored as
`continued` pieces followed by a last piece that carries its GTID. A change of leader can
cut such a sequence short: the new leader's log may end in the first pieces, which its
TERM_START record then commits, and its source stores the whole transaction again after
them. So pieces are joined only within a run that
no other record kind interrupts; an interrupted run is a stored fragment, never served.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import consensus
from agent.binlog.events import (
    GTID,
    GTID_FLAG_STANDALONE,
    QUERY,
    QUERY_COMPRESSED,
    XA_PREPARE_LOG,
    XID,
    BinlogEventError,
    Event,
    gtid_of,
    query_text,
)


class TransactionAssembler:
    """Feed records in log order; get each whole transaction once its last piece arrives.
    Keeps the unfinished pieces between calls, so records can be fed in batches."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def feed(self, record: consensus.Entry) -> tuple[str, bytes] | None:
        if record.kind is not consensus.RecordKind.DATA:
            self._parts = []  # a term or membership change cuts an unfinished transaction
            return None
        self._parts.append(record.payload)
        if record.continued:
            return None
        parts, self._parts = self._parts, []
        if record.gtid is None:
            return None
        return record.gtid, parts[0] if len(parts) == 1 else b"".join(parts)


def whole_transactions(
    records: Iterable[consensus.Entry], *, upto_lsn: int | None = None
) -> Iterator[tuple[str, bytes]]:
    """(GTID, transaction bytes) in log order, up to UPTO_LSN (e.g. the commit LSN)."""
    assembler = TransactionAssembler()
    for record in records:
        if upto_lsn is not None and record.end_lsn > upto_lsn:
            return
        transaction = assembler.feed(record)
        if transaction is not None:
            yield transaction


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
    """Feed events in binlog order; get whole transactions (GTID event .. XID/COMMIT, an XA
    transaction's GTID .. XA_PREPARE_LOG, XA COMMIT/ROLLBACK, or a standalone GTID + QUERY
    for DDL). Events between transactions are reported as None."""

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
        # XID ends a transaction, XA_PREPARE_LOG a prepared XA one (its XA COMMIT or XA
        # ROLLBACK comes later as a transaction of its own).
        done = event.type_code in (XID, XA_PREPARE_LOG) or (
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
    return text in (b"COMMIT", b"ROLLBACK") or text.startswith((b"XA COMMIT", b"XA ROLLBACK"))
