"""Whole MariaDB transactions from a timeline's records.

A transaction larger than a record is stored as `continued` pieces followed by a last piece
that carries its GTID. A change of leader can cut such a sequence short: the new leader's
log may end in the first pieces, which its TERM_START record then commits, and its source
stores the whole transaction again after them. So pieces are joined only within a run that
no other record kind interrupts; an interrupted run is a stored fragment, never served.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import walstore


class TransactionAssembler:
    """Feed records in log order; get each whole transaction once its last piece arrives.
    Keeps the unfinished pieces between calls, so records can be fed in batches."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def feed(self, record: walstore.Record) -> tuple[str, bytes] | None:
        if record.kind is not walstore.RecordKind.DATA:
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
    records: Iterable[walstore.Record], *, upto_lsn: int | None = None
) -> Iterator[tuple[str, bytes]]:
    """(GTID, transaction bytes) in log order, up to UPTO_LSN (e.g. the commit LSN)."""
    assembler = TransactionAssembler()
    for record in records:
        if upto_lsn is not None and record.end_lsn > upto_lsn:
            return
        transaction = assembler.feed(record)
        if transaction is not None:
            yield transaction
